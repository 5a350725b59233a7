"""Several processes (torchrun, gloo on CPU) give the single-process result: store, DDP epoch, resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from dfkd.distill.trainer import GlobalBatchSampler, SeededAugmentation
from dfkd.distributed import SINGLE, DistContext, from_env
from dfkd.errors import UserError

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from dist_worker import NoisyImages, train_once  # noqa: E402

# a small DiffDFKD synthesis on the tiny generator: 10 classes × 2 trajectories in batches of 2 = 10 units
BENCH = [
    "run",
    "--quiet",
    "--method",
    "diffdfkd",
    "--dataset",
    "digits",
    "--set",
    "trajectories_per_class=2",
    "--set",
    "batch_size=2",
    "--set",
    "num_steps=5",
    "--set",
    "distill.epochs=1",
    "--set",
    "distill.batch_size=32",
]


# --------------------------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("num_samples", [None, 30])
def test_rank_slices_form_the_single_process_global_batches(world, num_samples):
    n, batch = 20, 4
    single = list(GlobalBatchSampler(n, seed=7, num_samples=num_samples))
    shards = [
        list(GlobalBatchSampler(n, seed=7, num_samples=num_samples, rank=r, world_size=world)) for r in range(world)
    ]
    assert len({len(s) for s in shards}) == 1  # every rank takes as many steps
    per_rank = batch // world
    steps = -(-len(shards[0]) // per_rank)
    for step in range(steps):
        got = sorted(i for s in shards for i in s[step * per_rank : (step + 1) * per_rank])
        want = sorted(single[step * batch : (step + 1) * batch])
        if len(want) == batch:  # the last, partial global batch is padded by wrap-around under several ranks
            assert got == want
    assert len(single) == (num_samples or n) and set(single) == set(range(n))  # whole permutations, then cut
    taken, drawn = Counter(i for s in shards for i in s), Counter(single)
    assert not drawn - taken and sum((taken - drawn).values()) < world  # all of it, plus < world padded indices


def test_an_images_augmentation_does_not_depend_on_who_loads_it_or_when():
    data = SeededAugmentation(NoisyImages(), seed=11)
    forward = [data[i][0] for i in range(len(data))]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    backward = [data[i][0] for i in reversed(range(len(data)))][::-1]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    assert all(torch.equal(a, b) for a, b in zip(forward, backward, strict=True))
    assert not torch.equal(SeededAugmentation(NoisyImages(), seed=12)[0][0], forward[0])  # another epoch differs


def test_launcher_environment_is_read_and_checked():
    assert from_env({}) == SINGLE and not SINGLE.enabled and SINGLE.is_main
    ctx = from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert ctx == DistContext(1, 2, 1) and ctx.enabled and not ctx.is_main
    assert ctx.shard(list(range(7))) == [1, 3, 5]
    with pytest.raises(UserError, match="torchrun"):
        from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_global_batch_must_divide_over_the_processes():
    from dfkd.config import ConfigError, DistillConfig
    from dfkd.distill.trainer import Trainer
    from dfkd.methods.base import KDDistiller

    cfg = DistillConfig(batch_size=9)
    with pytest.raises(ConfigError, match="multiple of 2"):
        Trainer(
            torch.nn.Linear(2, 2),
            KDDistiller(None, DistillConfig(kd_weight=0)),
            cfg,
            device=torch.device("cpu"),
            dist=DistContext(0, 2, 0),
        )


# --------------------------------------------------------------------------------------------- torchrun


def _torchrun(nproc: int, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def _env(cache: Path, teacher: Path) -> dict[str, str]:
    (cache / "teachers").mkdir(parents=True, exist_ok=True)
    shutil.copy(teacher, cache / "teachers" / teacher.name)
    # one thread per process everywhere: floating-point sums (and so uint8 roundings) then match bit for bit
    return {**os.environ, "DFKD_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def _store(cache: Path) -> Path:
    (root,) = (cache / "stores" / "digits" / "diffdfkd").iterdir()
    return root


def _shards(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((_store(cache) / "shards").glob("*.pt"))}


def test_ddp_epoch_matches_the_single_process_epoch(tmp_path):
    out = tmp_path / "ddp.pt"
    _torchrun(2, str(HERE / "dist_worker.py"), "trainer", str(out), env={**os.environ, "OMP_NUM_THREADS": "1"})
    ddp = torch.load(out, weights_only=True)
    single = train_once()
    for k, v in single["state"].items():
        torch.testing.assert_close(ddp["state"][k], v, rtol=1e-4, atol=1e-5)
    assert ddp["history"][0]["loss"] == pytest.approx(single["history"][0]["loss"], rel=1e-5)
    assert ddp["history"][0]["top1"] == pytest.approx(single["history"][0]["top1"])  # gathered evaluation
    assert torch.equal(ddp["pred"], single["pred"])  # predictions in data-set order


@pytest.fixture(scope="module")
def one_process_store(tmp_path_factory, digits_teacher_file):
    """The reference: the synthesis (and run) of ``BENCH`` in one plain process."""
    root = tmp_path_factory.mktemp("one")
    env = _env(root / "cache", digits_teacher_file)
    proc = subprocess.run(
        [sys.executable, "-m", "dfkd", *BENCH, "-o", str(root / "runs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "cache"


def test_two_processes_write_the_same_store_byte_for_byte(tmp_path, digits_teacher_file, one_process_store):
    env = _env(tmp_path / "cache", digits_teacher_file)
    _torchrun(2, "-m", "dfkd", *BENCH, "-o", str(tmp_path / "runs"), env=env)
    assert _shards(tmp_path / "cache") == _shards(one_process_store)
    info = [p.read_text() for p in (_store(tmp_path / "cache") / "info").glob("*.json")]
    assert any('"rank": 1' in t for t in info) and any('"rank": 0' in t for t in info)  # both ranks worked
    records = list((tmp_path / "runs").rglob("record.json"))
    assert len(records) == 1  # rank 0 alone writes
    (reference,) = (one_process_store.parent / "runs").rglob("record.json")
    record, reference = json.loads(records[0].read_text()), json.loads(reference.read_text())
    assert record["run_id"] == reference["run_id"]  # the process count is not part of the run's identity
    assert record["num_synthetic_images"] == reference["num_synthetic_images"] > 0 and record["epochs"] == 1


def test_killed_two_process_synthesis_resumes_with_one_process(tmp_path, digits_teacher_file, one_process_store):
    cache = tmp_path / "cache"
    env = _env(cache, digits_teacher_file)
    worker = [str(HERE / "dist_worker.py"), "crash", "2", "--", *BENCH, "-o", str(tmp_path / "runs")]
    proc = _torchrun(2, *worker, env=env, check=False)
    assert proc.returncode != 0
    before = {p.name: p.stat().st_mtime_ns for p in (_store(cache) / "shards").glob("*.pt")}
    assert 2 <= len(before) <= 4, before  # each rank wrote up to 2 units of 10, then died
    proc = subprocess.run(
        [sys.executable, "-m", "dfkd", *BENCH, "-o", str(tmp_path / "runs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = _shards(cache)
    assert after == _shards(one_process_store)  # nothing lost, nothing duplicated, same bytes
    assert {p.name: p.stat().st_mtime_ns for p in (_store(cache) / "shards").glob("*.pt") if p.name in before} == before
    assert not list((_store(cache) / "shards").glob(".*.tmp"))


# --------------------------------------------------------------------------------------------- in the loop


def test_an_in_loop_generator_stays_in_sync_over_two_processes_and_resumes_bit_for_bit(tmp_path):
    _torchrun(2, str(HERE / "dist_worker.py"), "in-loop", str(tmp_path), env={**os.environ, "OMP_NUM_THREADS": "1"})
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for rank in ranks:  # killed after epoch 1 and resumed = uninterrupted, on every rank
        for part in ("student", "generator"):
            a, b = rank["uninterrupted"][part], rank["resumed"][part]
            assert all(torch.equal(a[k], b[k]) for k in a), part
    for part in ("student", "generator"):  # one generator (and one student) over the ranks
        a, b = ranks[0]["resumed"][part], ranks[1]["resumed"][part]
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert (tmp_path / "b" / "last.pt").is_file()  # rank 0 wrote the checkpoint the resume read


def test_bench_runs_an_in_loop_method_under_torchrun(tmp_path, digits_teacher_file):
    from dfkd.methods import get_method_class

    env = _env(tmp_path / "cache", digits_teacher_file)
    smoke = [x for item in get_method_class("dfq").smoke_overrides() for x in ("--set", item)]
    args = ["run", "--quiet", "--method", "dfq", "--dataset", "digits", *smoke]
    args += ["--set", "distill.epochs=1", "--set", "distill.batch_size=16", "-o", str(tmp_path / "runs")]
    _torchrun(2, "-m", "dfkd", *args, env=env)
    (path,) = (tmp_path / "runs").rglob("record.json")
    record = json.loads(path.read_text())
    assert record["env"]["world_size"] == 2 and record["extra"]["in_loop/images_seen"] == 2 * 16
    assert len(list((path.parent / "generator-sample" / "shards").glob("*.pt"))) == 1  # the final generator's sample
