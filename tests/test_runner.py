"""End to end on digits: records, leaderboard, resume after a crash, cache hits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dfkd.benchmark.assembly import resolve_run_config
from dfkd.benchmark.progress import Reporter
from dfkd.benchmark.runner import run
from dfkd.synthesis.store import SyntheticStore

REQUIRED = (
    "schema_version",
    "method",
    "dataset",
    "teacher",
    "student",
    "seed",
    "student_top1",
    "student_top1_best",
    "student_top5",
    "teacher_top1",
    "num_synthetic_images",
    "synthesis_seconds",
    "distill_seconds",
    "config",
    "env",
)


def _cfg(tmp_path, method, *sets):
    return resolve_run_config(
        method=method, dataset="digits", sets=["distill.epochs=2", *sets], flags={"output_dir": str(tmp_path / "runs")}
    )


def test_noise_kd_end_to_end_writes_record_and_leaderboard(tmp_path, digits_teacher):
    cfg = _cfg(tmp_path, "noise_kd", "images_per_class=6", "batch_size=4")
    record = run(cfg, reporter=Reporter(quiet=True))
    path = next((tmp_path / "runs").rglob("record.json"))
    data = json.loads(path.read_text())
    for key in REQUIRED:
        assert key in data, key
    assert data["num_synthetic_images"] == 60
    assert data["teacher"] == "resnet20" and data["student"] == "resnet8"
    # the record states the teacher file's digest and the recipe that made it (the fixture's 2 epochs, not the
    # preset's 8: the cached file is used as it is, and said so)
    assert len(data["teacher_file"]["digest"]) == 64 and data["teacher_file"]["recipe"]["epochs"] == 2
    assert 0 <= record.student_top1 <= 100 and record.student_top1_best >= record.student_top1
    assert data["env"]["packages"]["torch"]
    assert data["method_card"]["title"] and data["method_card"]["paper_only"] is False  # provenance in the record
    assert path.parent.parts[-4:-1] == ("digits", "resnet20-resnet8", "noise_kd")
    assert (path.parent / "config.yaml").is_file()
    board = (tmp_path / "runs" / "leaderboard-digits.csv").read_text()
    assert "noise_kd" in board and "measured" in board


def test_rerun_reports_existing_record_without_training(tmp_path, digits_teacher, monkeypatch):
    cfg = _cfg(tmp_path, "noise_kd", "images_per_class=4", "batch_size=4")
    first = run(cfg, reporter=Reporter(quiet=True))

    def boom(*a, **k):
        raise AssertionError("should not train again")

    monkeypatch.setattr("dfkd.distill.trainer.Trainer.fit", boom)
    again = run(cfg, reporter=Reporter(quiet=True))
    assert again.student_top1 == first.student_top1 and again.run_id == first.run_id


def test_crash_mid_synthesis_resumes_without_loss_or_duplicates(tmp_path, digits_teacher, monkeypatch):
    from dfkd.methods import baselines

    cfg = _cfg(tmp_path, "noise_kd", "images_per_class=8", "batch_size=4")
    original = baselines._NoiseSynthesizer.generate
    calls = {"n": 0}

    def flaky(self, unit, student=None):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt  # killed mid-way
        return original(self, unit, student)

    monkeypatch.setattr(baselines._NoiseSynthesizer, "generate", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, reporter=Reporter(quiet=True))
    monkeypatch.setattr(baselines._NoiseSynthesizer, "generate", original)
    record = run(cfg, reporter=Reporter(quiet=True))
    store = SyntheticStore.open_existing(record.store)
    assert len(store.units()) == 20 and record.num_synthetic_images == 80
    assert record.distill_precision == "float32"  # CPU: no autocast; the record says which precision trained
    seeds = store.read_table()["seed"]
    assert len(set(zip(store.read_table()["label"].tolist(), seeds.tolist()))) == 20  # one seed per unit
    # same images as a synthesis that never crashed
    from dfkd.datasets import get_dataset
    from dfkd.methods import create_method
    from dfkd.methods.base import BuildContext

    synth = create_method("noise_kd", cfg.method_config).build_synthesizer(
        BuildContext(None, None, get_dataset("digits"), torch.device("cpu"), 0, cfg.distill)
    )
    from dfkd.synthesis.store import to_uint8

    clean = torch.cat([to_uint8(synth.generate(u).images) for u in sorted(synth.plan(), key=lambda u: u.id)])
    assert torch.equal(store.images(), clean)


def test_store_cache_hit_is_reused_by_another_student(tmp_path, digits_teacher, monkeypatch):
    cfg = _cfg(tmp_path, "noise_kd", "images_per_class=4", "batch_size=4")
    first = run(cfg, reporter=Reporter(quiet=True))
    from dfkd.methods import baselines

    def boom(*a, **k):
        raise AssertionError("the finished store must be reused")

    monkeypatch.setattr(baselines._NoiseSynthesizer, "generate", boom)
    other = resolve_run_config(
        method="noise_kd",
        dataset="digits",
        sets=["distill.epochs=1", "images_per_class=4", "batch_size=4"],
        flags={"output_dir": str(tmp_path / "runs"), "student": "resnet20"},
    )
    second = run(other, reporter=Reporter(quiet=True))
    assert second.store == first.store and second.student == "resnet20"


def test_online_deepinversion_and_real_kd(tmp_path, digits_teacher):
    di = run(
        _cfg(tmp_path, "deepinversion", "iterations=3", "batch_size=10", "kd_steps=2"), reporter=Reporter(quiet=True)
    )
    assert di.num_synthetic_images == 20 and len(di.history) == 2
    real = run(_cfg(tmp_path, "real_kd", "distill.epochs=1"), reporter=Reporter(quiet=True))
    assert real.num_synthetic_images == 0 and real.student_top1 > 0


def test_dg_sets_become_record_fields_and_leaderboard_columns(tmp_path, digits_teacher):
    from PIL import Image

    from dfkd.datasets import get_dataset

    test = get_dataset("digits").load("test", transform=None)
    folder = tmp_path / "shifted"
    for i in range(20):
        x, y = test[i]
        (folder / str(y)).mkdir(parents=True, exist_ok=True)
        inverted = 255 - x  # a shifted domain: white background
        Image.fromarray(inverted.permute(1, 2, 0).numpy()).save(folder / str(y) / f"{i}.png")
    cfg = _cfg(tmp_path, "noise_kd", "images_per_class=3", "batch_size=3", f"dg={{folder:inverted: {folder}}}")
    record = run(cfg, reporter=Reporter(quiet=True))
    assert 0.0 <= record.extra["dg/inverted/top1"] <= 100.0
    board = (tmp_path / "runs" / "leaderboard-digits.csv").read_text().splitlines()[0]
    assert "dg/inverted/top1" in board.split(",")


def test_missing_dg_folder_fails_before_training(tmp_path, digits_teacher, monkeypatch):
    from dfkd.errors import UserError

    def boom(*a, **k):
        raise AssertionError("must fail before training")

    monkeypatch.setattr("dfkd.distill.trainer.Trainer.fit", boom)
    cfg = _cfg(tmp_path, "noise_kd", "images_per_class=3", "batch_size=3", f"dg={{cifar10-c: {tmp_path / 'nope'}}}")
    with pytest.raises(UserError):
        run(cfg, reporter=Reporter(quiet=True))


def test_prism_filter_stats_reach_the_record_and_survive_a_cache_hit(tmp_path, digits_teacher):
    sets = [
        "generator={path: tiny, dtype: float32, scheduler: ddim}",
        "num_steps=2",
        "images_per_class=2",
        "keep_quantile=0.5",
        "batch_size=2",
        "require_target_argmax=true",
        "prompts={prompts_per_class: 2, candidates_per_class: 4}",
    ]
    first = run(_cfg(tmp_path, "prism", *sets, "distill.epochs=1"), reporter=Reporter(quiet=True))
    assert first.extra["synthetic/generated"] == 40  # ceil(2 / 0.5) = 4 per class
    assert first.extra["prism/kept"] == first.num_synthetic_images == first.extra["synthetic/kept"]
    assert first.extra["prism/shortfall"] == 20 - first.extra["prism/kept"]
    again = run(_cfg(tmp_path, "prism", *sets, "distill.epochs=2"), reporter=Reporter(quiet=True))  # same store
    assert again.store == first.store and again.extra["prism/shortfall"] == first.extra["prism/shortfall"]
    # every file in the store's folder is one the store wrote and documents (store.py: layout, ARTIFACTS)
    from dfkd.synthesis.store import ARTIFACTS, INFO_DIR, LOCK_NAME, MANIFEST_NAME, SHARDS_DIR, STATES_DIR

    found = {p.name for p in Path(first.store).iterdir()}
    assert found <= {MANIFEST_NAME, SHARDS_DIR, INFO_DIR, STATES_DIR, LOCK_NAME, *ARTIFACTS}
    assert "finalize.json" in found
    if first.extra["prism/shortfall"]:
        assert SyntheticStore.open_existing(first.store).read_artifact("shortfall.json")["classes"]


def test_a_run_resumed_with_other_speed_switches_is_the_same_run_and_store(tmp_path, digits_teacher, monkeypatch):
    """Speed switches are not part of the run id or the store name: a synthesis killed under the defaults resumes
    under the naive switches into the same run folder and store, without losing or repeating a unit."""
    from dfkd.methods import diffdfkd

    small = ["trajectories_per_class=2", "batch_size=2", "num_steps=2", "keep_intermediate=false"]
    cfg = _cfg(tmp_path, "diffdfkd", *small)
    original = diffdfkd.DiffDFKDSynthesizer.generate
    made: list[str] = []

    def killed_at_the_fourth(self, unit, student=None):
        if len(made) == 3:
            raise KeyboardInterrupt
        made.append(unit.id)
        return original(self, unit, student)

    monkeypatch.setattr(diffdfkd.DiffDFKDSynthesizer, "generate", killed_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, reporter=Reporter(quiet=True))
    resumed: list[str] = []

    def counted(self, unit, student=None):
        resumed.append(unit.id)
        return original(self, unit, student)

    monkeypatch.setattr(diffdfkd.DiffDFKDSynthesizer, "generate", counted)
    switched = [
        "generator.max_batch=1",
        "generator.cfg_batch=false",
        "generator.prompt_cache=false",
        "generator.attention=eager",
        "distill.channels_last=false",
    ]
    resumed_cfg = _cfg(tmp_path, "diffdfkd", *small, *switched)
    assert resumed_cfg.method_config.generator.max_batch == 1 and not resumed_cfg.distill.channels_last
    record = run(resumed_cfg, reporter=Reporter(quiet=True))
    assert len(list((tmp_path / "runs").rglob("config.yaml"))) == 1  # one run folder, not two
    assert sorted(resumed) == sorted(set(resumed)) and not set(resumed) & set(made)  # only the missing units
    assert len(made) + len(resumed) == 10
    store = SyntheticStore.open_existing(record.store)
    assert sorted(store.units()) == sorted(made + resumed) and record.num_synthetic_images == 20


class _Notes(Reporter):
    def __init__(self):
        super().__init__(quiet=True)
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def test_rerunning_a_finished_run_repairs_what_a_late_kill_lost(tmp_path, digits_teacher):
    """Killed after record.json was written: the rerun prints the table, restores the leaderboard and the report."""
    cfg = _cfg(tmp_path, "noise_kd", "images_per_class=3", "batch_size=3", "distill.epochs=1")
    record = run(cfg, reporter=Reporter(quiet=True))
    out = next((tmp_path / "runs").rglob("record.json")).parent
    board = tmp_path / "runs" / "leaderboard-digits.csv"
    assert board.is_file() and (out / "report.html").is_file()
    board.unlink()
    (out / "report.html").unlink()
    for png in out.glob("*.png"):
        png.unlink()
    notes = _Notes()
    again = run(cfg, reporter=notes)
    assert again.run_id == record.run_id and again.student_top1 == record.student_top1
    assert board.is_file() and "noise_kd" in board.read_text()
    assert (out / "report.html").is_file() and any(out.glob("*.png"))
    repaired = [n for n in notes.notes if n.startswith("repaired:")]
    assert len(repaired) == 1 and "leaderboard" in repaired[0] and "report" in repaired[0]
    notes = _Notes()
    run(cfg, reporter=notes)  # nothing missing: nothing to repair
    assert not [n for n in notes.notes if n.startswith("repaired:")]


def test_a_diverging_run_stops_with_one_line_and_writes_no_record(tmp_path, digits_teacher, monkeypatch):
    from dfkd.errors import ConfigError, TrainingDivergedError
    from dfkd.methods.base import KDDistiller

    with pytest.raises(ConfigError, match=r"distill\.lr must be a finite number"):
        _cfg(tmp_path, "noise_kd", "distill.lr=.inf")
    original = KDDistiller.loss

    def nan_loss(self, model, x, y):  # what a diverged student gives
        loss, logs = original(self, model, x, y)
        return loss * float("nan"), logs

    monkeypatch.setattr(KDDistiller, "loss", nan_loss)
    cfg = _cfg(tmp_path, "noise_kd", "images_per_class=3", "batch_size=3", "distill.epochs=1")
    with pytest.raises(TrainingDivergedError, match="diverged in epoch 1: loss is nan") as info:
        run(cfg, reporter=Reporter(quiet=True))
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "runs").rglob("record.json"))
    assert not list((tmp_path / "runs").rglob("last.pt")), "no checkpoint of diverged weights"


def test_a_damaged_store_is_regenerated_not_trusted(tmp_path, digits_teacher):
    """A complete store with a deleted shard (the advice of the corrupt-shard error) is reopened and resumed:
    the next run regenerates exactly that unit and trains on every image."""
    cfg = _cfg(tmp_path, "noise_kd", "images_per_class=3", "batch_size=3", "distill.epochs=1")
    first = run(cfg, reporter=Reporter(quiet=True))
    store = SyntheticStore.open_existing(first.store)
    assert store.verify() == [] and store.verify(digests=True) == []
    victim = store.units()[4]
    shard = store.shards_dir / f"{victim}.pt"
    original = shard.read_bytes()
    shard.unlink()
    assert SyntheticStore.open_existing(first.store).verify() == [f"{victim}: shard missing"]
    notes = _Notes()
    second = run(
        _cfg(tmp_path, "noise_kd", "images_per_class=3", "batch_size=3", "distill.epochs=1", "distill.lr=0.04"),
        reporter=notes,
    )
    assert second.store == first.store and second.num_synthetic_images == first.num_synthetic_images == 30
    assert shard.read_bytes() == original  # the same unit, regenerated from its seed
    assert any("is damaged" in n and victim in n for n in notes.notes)
    assert SyntheticStore.open_existing(first.store).is_complete


def test_two_identical_runs_at_once_share_the_work_without_a_traceback(tmp_path, digits_teacher):
    """Two `bench run` processes on one config: one runs, the other waits on the lock, then reports its record."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DFKD_CACHE": str(digits_teacher.parents[1])}
    cmd = [sys.executable, "-m", "dfkd", "run", "--method", "noise_kd", "-o", str(tmp_path / "runs"),
           "--set", "images_per_class=3", "--set", "batch_size=3", "--set", "distill.epochs=1",
           "--set", "diagnose.enabled=false"]  # fmt: skip
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert not any("Traceback" in err for _, err in outs)
    # usually the second waits on the lock; if it came late, it finds the record: never a second synthesis
    assert any("waiting for it to finish" in err or "exists: reporting it" in err for _, err in outs)
    assert len(list((tmp_path / "runs").rglob("record.json"))) == 1


@pytest.mark.parametrize("kill_in", ["distil", "synthesis"])
def test_a_killed_pool_run_resumes_to_the_uninterrupted_students_weights(
    tmp_path, digits_teacher, monkeypatch, kill_in
):
    """DeepInversion (shape ``pool``) killed in epoch 2, during the student's steps or while its unit is generated,
    and run again: the same final student, bit for bit, as a run never interrupted (its own store, from scratch)."""
    import shutil

    from dfkd.distill.trainer import Trainer
    from dfkd.methods import deepinversion
    from dfkd.paths import stores_dir

    sets = ["iterations=2", "batch_size=8", "kd_steps=2", "distill.epochs=3", "diagnose.enabled=false"]

    def final_student(folder: str) -> dict:
        cfg = resolve_run_config(method="deepinversion", dataset="digits", sets=sets, flags={"output_dir": folder})
        record = run(cfg, reporter=Reporter(quiet=True))
        (last,) = (tmp_path / folder).rglob("last.pt")
        return {"record": record, "student": torch.load(last, weights_only=True)["student"]}

    monkeypatch.chdir(tmp_path)
    uninterrupted = final_student("a")
    if kill_in == "distil":  # a rerun that finds the whole pool stored trains epoch e on units 0..e, not on all
        reused = final_student("c")["student"]
        assert all(torch.equal(reused[k], v) for k, v in uninterrupted["student"].items())
    shutil.rmtree(stores_dir())  # the second run generates its own pool

    target = (Trainer, "train_epoch") if kill_in == "distil" else (deepinversion._DeepInversionSynthesizer, "generate")
    original = getattr(*target)
    calls = {"n": 0}

    def killed_in_epoch_2(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(*target, killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        final_student("b")
    monkeypatch.setattr(*target, original)
    resumed = final_student("b")
    a, b = uninterrupted["student"], resumed["student"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["record"].student_top1 == uninterrupted["record"].student_top1
