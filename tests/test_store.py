"""SyntheticStore: round trip, crash safety, resume, schema checks, export; and dfkd.hashing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfkd.errors import UserError
from dfkd.hashing import file_digest, stable_hash
from dfkd.synthesis import store as store_mod
from dfkd.synthesis.store import IncompleteStoreError, SyntheticStore, to_uint8

UNITS = ["c0000-b0000", "c0001-b0000", "c0002-b0000"]


def make_unit(k: int, n: int = 4, shape=(3, 8, 8)) -> tuple[torch.Tensor, dict]:
    """Deterministic unit k: images, labels = k, seeds, logits, prompts, every other image dropped for k = 1."""
    g = torch.Generator().manual_seed(k)
    images = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)  # (N, C, H, W)
    table = {
        "label": torch.full((n,), k, dtype=torch.int64),
        "seed": torch.arange(n) + 100 * k,
        "teacher_logits": torch.randn(n, 5, generator=g),
        "prompt": [f"a photo of class {k} #{i}" for i in range(n)],
    }
    if k == 1:
        table["kept"] = torch.tensor([i % 2 == 0 for i in range(n)])
    return images, table


def write_all(store: SyntheticStore, units=UNITS) -> None:
    for unit in units:
        store.write_unit(unit, *make_unit(UNITS.index(unit)))


@pytest.fixture
def store(tmp_path: Path) -> SyntheticStore:
    return SyntheticStore.open(tmp_path / "store", config_hash="abc123", meta={"method": "test"})


def test_round_trip_sorted_order_and_kept_filter(store: SyntheticStore) -> None:
    for unit in reversed(UNITS):  # write order must not matter: reads are in sorted unit order
        store.write_unit(unit, *make_unit(UNITS.index(unit)))
    assert store.units() == UNITS and store.completed_units() == set(UNITS)
    assert store.has_unit(UNITS[0]) and not store.has_unit("c0009-b0000")

    parts = [make_unit(k) for k in range(3)]
    assert torch.equal(store.images(kept_only=False), torch.cat([im for im, _ in parts]))
    table = store.read_table()
    assert torch.equal(table["label"], torch.tensor([0] * 4 + [1] * 4 + [2] * 4))
    assert torch.equal(table["seed"], torch.cat([t["seed"] for _, t in parts]))
    assert torch.equal(table["teacher_logits"], torch.cat([t["teacher_logits"] for _, t in parts]))
    assert table["teacher_logits"].dtype == torch.float32
    assert table["prompt"] == [p for _, t in parts for p in t["prompt"]]
    assert table["kept"].tolist() == [True] * 4 + [True, False, True, False] + [True] * 4

    assert store.num_images(kept_only=False) == 12 and store.num_images() == 10
    kept = store.read_table(kept_only=True)
    assert kept["label"].tolist() == [0] * 4 + [1] * 2 + [2] * 4
    assert kept["prompt"][4:6] == ["a photo of class 1 #0", "a photo of class 1 #2"]
    kept_images = store.images()
    assert kept_images.shape == (10, 3, 8, 8) and kept_images.dtype == torch.uint8
    assert torch.equal(kept_images[4:6], parts[1][0][[0, 2]])
    assert len(store.dataset()) == 10 and len(store.dataset(kept_only=False)) == 12

    summary = store.summary()
    assert summary["images"] == {"kept": 10, "total": 12} and summary["units"] == 3
    assert summary["per_class_kept"] == {0: 4, 1: 2, 2: 4} and summary["per_class_total"] == {0: 4, 1: 4, 2: 4}
    assert summary["image_shape"] == [3, 8, 8] and summary["bytes_on_disk"] > 12 * 3 * 8 * 8
    manifest = json.loads((store.root / "manifest.json").read_text())
    assert manifest["schema_version"] == store_mod.SCHEMA_VERSION and manifest["config_hash"] == "abc123"
    assert manifest["meta"] == {"method": "test"} and not manifest["complete"]


def test_float_images_convert_like_to_uint8(store: SyntheticStore) -> None:
    x = torch.tensor([0.0, 0.5, 1.0, -0.1, 1.2, 0.25, 1 / 255, 0.998]).view(1, 1, 2, 4)
    expected = [0, 128, 255, 0, 255, 64, 1, 254]  # 127.5 -> 128, 63.75 -> 64 (round half to even)
    assert to_uint8(x).flatten().tolist() == expected
    assert to_uint8(x.half()).flatten().tolist()[:6] == expected[:6]  # the rest are not exact in fp16
    u8 = torch.tensor([[[[7]]]], dtype=torch.uint8)
    assert to_uint8(u8) is u8
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.tensor([float("nan")]))
    with pytest.raises(TypeError):
        to_uint8(torch.tensor([1, 2]))

    store.write_unit("u0", x, {"label": [3]})
    assert store.images().flatten().tolist() == expected
    assert store.read_table()["label"].dtype == torch.int64


def _flaky_replace(fail_name: str):
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == fail_name:
            raise OSError("simulated crash during rename")
        return real(src, dst)

    return replace


def test_crash_during_write_then_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = SyntheticStore.open(tmp_path / "ref", config_hash="h")
    write_all(reference)

    root = tmp_path / "crashy"
    store = SyntheticStore.open(root, config_hash="h")
    store.write_unit(UNITS[0], *make_unit(0))
    monkeypatch.setattr(store_mod.os, "replace", _flaky_replace(f"{UNITS[1]}.pt"))
    with pytest.raises(OSError, match="simulated crash"):
        store.write_unit(UNITS[1], *make_unit(1))
    monkeypatch.undo()
    assert store.units() == [UNITS[0]] and store.num_images(kept_only=False) == 4
    assert sorted(p.name for p in store.shards_dir.iterdir()) == [f"{UNITS[0]}.pt"]  # own temp file removed

    resumed = SyntheticStore.open(root, config_hash="h")
    todo = [u for u in UNITS if not resumed.has_unit(u)]
    assert todo == UNITS[1:]
    write_all(resumed, todo)
    assert resumed.units() == UNITS
    assert sorted(p.name for p in resumed.shards_dir.iterdir()) == [f"{u}.pt" for u in UNITS]
    assert torch.equal(resumed.images(kept_only=False), reference.images(kept_only=False))
    assert resumed.read_table()["prompt"] == reference.read_table()["prompt"]


def test_hard_kill_leaves_only_an_ignored_temp_file(tmp_path: Path) -> None:
    """A process killed between fsync and rename (os._exit) leaves a temp file that is never counted."""
    root = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, torch
        from dfkd.synthesis.store import SyntheticStore
        s = SyntheticStore.open({str(root)!r}, config_hash="h")
        s.write_unit("u0", torch.zeros(2, 1, 4, 4, dtype=torch.uint8), {{"label": [0, 0]}})
        os.replace = lambda src, dst: os._exit(3)
        s.write_unit("u1", torch.ones(2, 1, 4, 4, dtype=torch.uint8), {{"label": [1, 1]}})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    leftovers = [p.name for p in (root / "shards").iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".u1.")
    store = SyntheticStore.open(root, config_hash="h")
    assert store.units() == ["u0"] and store.num_images() == 2

    stale = store.shards_dir / ".zz.123-dead.tmp"  # someone else's leftover, long dead
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * store_mod.STALE_TMP_SECONDS,) * 2)
    store.write_unit("u1", torch.ones(2, 1, 4, 4, dtype=torch.uint8), {"label": [1, 1]})
    assert sorted(p.name for p in store.shards_dir.iterdir()) == ["u0.pt", "u1.pt"]
    assert store.read_table()["label"].tolist() == [0, 0, 1, 1]


def test_rejects_duplicates_shapes_columns_and_foreign_folders(store: SyntheticStore, tmp_path: Path) -> None:
    store.write_unit(UNITS[0], *make_unit(0))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        store.write_unit(UNITS[0], *make_unit(0))
    images, table = make_unit(0)
    store.write_unit(UNITS[0], images.flip(0), table, overwrite=True)
    assert torch.equal(store.images(), images.flip(0)) and store.units() == [UNITS[0]]

    with pytest.raises(ValueError, match="image shape"):
        store.write_unit(UNITS[1], *make_unit(1, shape=(3, 16, 16)))
    _, table = make_unit(1)
    with pytest.raises(ValueError, match="missing 'prompt'"):
        store.write_unit(UNITS[1], images, {k: v for k, v in table.items() if k != "prompt"})
    with pytest.raises(ValueError, match="first dim"):
        store.write_unit(UNITS[1], images, {**table, "seed": torch.arange(3)})
    with pytest.raises(ValueError, match="'label'"):
        store.write_unit(UNITS[1], images, {"seed": torch.arange(4)})
    with pytest.raises(TypeError, match="integer"):
        store.write_unit(UNITS[1], images, {**table, "label": torch.zeros(4)})
    with pytest.raises(TypeError, match="list entries"):
        store.write_unit(UNITS[1], images, {**table, "prompt": [object()] * 4})
    with pytest.raises(ValueError, match="unit id"):
        store.write_unit("../escape", images, table)
    assert store.units() == [UNITS[0]]

    with pytest.raises(UserError, match="another synthesis") as err:
        SyntheticStore.open(store.root, config_hash="other")
    assert "\n" not in str(err.value)
    (tmp_path / "not_a_store").mkdir()
    (tmp_path / "not_a_store" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a synthetic store"):
        SyntheticStore.open(tmp_path / "not_a_store", config_hash="abc123")
    with pytest.raises(UserError, match=r"no manifest\.json"):
        SyntheticStore.open_existing(tmp_path / "nowhere")


def test_mark_complete(store: SyntheticStore) -> None:
    write_all(store, UNITS[:2])
    with pytest.raises(IncompleteStoreError, match=UNITS[2]):
        store.mark_complete(UNITS)
    assert not store.is_complete
    with pytest.raises(UserError, match="not expected"):
        store.mark_complete(UNITS[:1])
    write_all(store, UNITS[2:])
    store.mark_complete(UNITS)
    assert store.is_complete and store.num_images() == 10
    reopened = SyntheticStore.open(store.root, config_hash="abc123")
    assert reopened.is_complete and reopened.manifest["counts"] == {"units": 3, "images": 12, "kept": 10}
    assert reopened.num_images(kept_only=False) == 12
    assert SyntheticStore.open_existing(store.root).is_complete
    with pytest.raises(UserError, match="complete"):
        reopened.write_unit("c0003-b0000", *make_unit(3))


def test_dataset_transform_dataloader_and_mmap(store: SyntheticStore, monkeypatch: pytest.MonkeyPatch) -> None:
    write_all(store)
    calls = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(store_mod.torch, "load", spy_load)
    ds = store.dataset(transform=lambda x: x.float() / 255)
    x, label, index = ds[5]
    assert calls and all(c.get("mmap") and c.get("weights_only") for c in calls)
    kept_images, kept_table = store.images(), store.read_table(kept_only=True)
    assert torch.allclose(x, kept_images[5].float() / 255) and label == 1 and index == 5
    assert ds[-1][2] == len(ds) - 1
    with pytest.raises(IndexError):
        ds[len(ds)]

    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False, num_workers=0)
    xs, labels, indices = map(torch.cat, zip(*loader))
    assert xs.shape == (10, 3, 8, 8) and xs.dtype == torch.float32
    assert torch.equal(labels, kept_table["label"]) and torch.equal(indices, torch.arange(10))
    raw = store.dataset(kept_only=False)
    assert raw[6][0].dtype == torch.uint8 and torch.equal(raw[6][0], make_unit(1)[0][2])
    assert torch.equal(raw.targets, store.read_table()["label"])


def test_export_imagefolder(tmp_path: Path) -> None:
    store = SyntheticStore.open(tmp_path / "s", config_hash="h")
    g = torch.Generator().manual_seed(0)
    for k in range(12):
        images = torch.randint(0, 256, (2, 3, 5, 6), generator=g, dtype=torch.uint8)
        store.write_unit(f"c{k:04d}", images, {"label": [k, k], "kept": [True, k != 3]})
    names = [f"class/{k} name" for k in range(12)]
    out = tmp_path / "export"
    assert store.export_imagefolder(out, class_names=names) == 23
    folders = sorted(p.name for p in out.iterdir())
    assert folders[:2] == ["000_class_0_name", "001_class_1_name"] and len(folders) == 12
    assert [int(f.split("_")[0]) for f in folders] == list(range(12))
    assert sum(len(list(p.glob("*.png"))) for p in out.iterdir()) == 23
    png = out / "011_class_11_name" / "c0011_1.png"
    back = torch.from_numpy(np.array(Image.open(png).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(back, store.images(kept_only=False)[23])

    from torchvision.datasets import ImageFolder

    assert ImageFolder(str(out)).class_to_idx == {f: int(f[:3]) for f in folders}
    assert store.export_imagefolder(tmp_path / "all", kept_only=False) == 24
    assert sorted(p.name for p in (tmp_path / "all").iterdir())[10] == "010"


@dataclasses.dataclass(frozen=True)
class _Cfg:
    lr: float = 0.1
    path: Path = Path("/data")
    sizes: tuple[int, ...] = (32, 32)


def test_stable_hash(tmp_path: Path) -> None:
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1, "b": (1, 2)}) == stable_hash({"a": 1, "b": [1, 2]})
    assert len({stable_hash({"a": 1}), stable_hash({"a": 2}), stable_hash({"a": 1.0}), stable_hash({"a": "1"})}) == 4
    assert stable_hash(_Cfg()) == stable_hash({"lr": 0.1, "path": "/data", "sizes": [32, 32]})
    assert stable_hash(_Cfg()) != stable_hash(_Cfg(lr=0.2))
    assert len(stable_hash("x", n=8)) == 8
    golden = "1b1a1f89421780a4"  # pinned: content-addressed store names depend on it
    assert stable_hash({"method": "prism", "ipc": 50, "guidance": 7.5}) == golden
    with pytest.raises(TypeError, match="Tensor"):
        stable_hash({"w": torch.zeros(2)})
    f = tmp_path / "blob.bin"
    f.write_bytes(b"dfkd" * 1000)
    assert file_digest(f, n=64) == hashlib.sha256(b"dfkd" * 1000).hexdigest()
    assert file_digest(f) == file_digest(f, n=64)[:16]


def test_verify_finds_missing_truncated_and_altered_shards(tmp_path):
    store = SyntheticStore.open(tmp_path / "s", config_hash="h")
    for i in range(3):
        store.write_unit(f"u{i}", torch.full((2, 3, 4, 4), i, dtype=torch.uint8), {"label": [i, i]})
    store.mark_complete(["u0", "u1", "u2"])
    assert store.manifest["index"]["u1"]["images"] == 2 and len(store.manifest["index"]["u1"]["sha256"]) == 64
    assert store.verify(digests=True) == []
    shard = store.shards_dir / "u1.pt"
    data = bytearray(shard.read_bytes())
    data[-40] ^= 0xFF  # same size, other content: only the digest sees it
    shard.write_bytes(bytes(data))
    assert store.verify() == []
    assert store.verify(digests=True) == ["u1: shard content differs from what was written (sha256)"]
    (store.shards_dir / "u2.pt").write_bytes(b"short")
    (store.shards_dir / "u0.pt").unlink()
    problems = store.verify()
    assert problems[0] == "u0: shard missing" and problems[1].startswith("u2: shard is 5 bytes")
    store.reopen([*problems, "u1: altered"])
    reopened = SyntheticStore.open_existing(tmp_path / "s")
    assert not reopened.is_complete and reopened.units() == []
    assert (store.shards_dir / "u1.pt.damaged").is_file() and (store.shards_dir / "u2.pt.damaged").is_file()
    for i in range(3):  # a resumed synthesis writes them again and completes
        reopened.write_unit(f"u{i}", torch.full((2, 3, 4, 4), i, dtype=torch.uint8), {"label": [i, i]})
    reopened.mark_complete(["u0", "u1", "u2"])
    assert reopened.verify(digests=True) == [] and reopened.num_images() == 6


def test_artifacts_are_the_stores_own_files(tmp_path):
    store = SyntheticStore.open(tmp_path / "s", config_hash="x")
    assert store.read_artifact("shortfall.json") is None
    store.write_artifact("shortfall.json", {"classes": {"3": {"short": 2}}})
    assert store.read_artifact("shortfall.json") == {"classes": {"3": {"short": 2}}}
    store.write_artifact("shortfall.json", None)  # nothing short any more: the file goes
    assert not store.artifact_path("shortfall.json").exists()
    with pytest.raises(ValueError, match="ARTIFACTS"):
        store.write_artifact("notes.txt", "x")


def test_score_columns_of_logits():
    from dfkd.metrics.energy import free_energy
    from dfkd.synthesis.store import SCORE_COLUMNS, teacher_scores

    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    scores = teacher_scores(logits)
    assert tuple(scores) == SCORE_COLUMNS
    assert scores["teacher_pred"].tolist() == [0, 1]
    assert torch.allclose(scores["teacher_confidence"], logits.softmax(1).max(1).values)
    assert torch.allclose(scores["teacher_energy"], free_energy(logits))
