"""``bench run``: config → teacher → synthesize → distil → evaluate → record → leaderboard.

The runner is the only place that knows the order of the stages; each is a function with typed inputs and
outputs, and ``_run_locked`` is their sequence::

    prepare(cfg)                       → Prepared      (method, teacher provisioned, fresh student, BuildContext)
    begin(cfg, p, out)                 → protocol       (run folder, config.yaml, the protocol the record states)
    open_tracking(cfg, out, …)         → Tracking       (--report-to: TensorBoard, W&B; none without it)
    check_teacher(cfg, p)              → TeacherCheck   (teacher top-1 and predictions on the real test set)
    build_trainer(p, out, teacher, …)  → Trainer
    DISTIL[method.shape](synth, ...)   → Distilled      (one function per shape: distil_offline, distil_pool,
                                                         distil_in_loop, distil_real_data)
    evaluate(cfg, p, teacher, dist.)   → extra, diagnostics (shifted test sets, synthetic-set diagnosis)
    make_record(...)                   → RunRecord      → record.json, leaderboard, report

A run is identified by (config, seed): running the same command again resumes an interrupted run (the synthetic
store skips finished units, the trainer restarts from its last epoch checkpoint, synthesizer state included) or,
when the record exists, reports it without redoing anything.

The same function runs on every process of a ``torchrun`` / ``accelerate launch`` job (see
``dfkd/distributed.py``): ranks share the synthesis units and the global batches, rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from dfkd.benchmark.assembly import protocol_deviations
from dfkd.benchmark.progress import Reporter
from dfkd.benchmark.records import RunRecord, environment, run_dir
from dfkd.benchmark.teachers import (
    TeacherRef,
    build_teacher,
    resolve_teacher,
    teacher_accuracy,
    teacher_provenance,
    test_loader,
)
from dfkd.benchmark.tracking import Tracking, check_installed
from dfkd.config import RunConfig, semantic
from dfkd.datasets.base import DatasetSpec
from dfkd.distill.trainer import Trainer, TrainResult
from dfkd.distributed import SINGLE, DistContext, resolve_device
from dfkd.errors import TrainingDivergedError, UserError
from dfkd.hashing import stable_hash
from dfkd.methods import create_method
from dfkd.methods.base import (
    IN_LOOP,
    OFFLINE,
    POOL,
    REAL_DATA,
    BuildContext,
    InLoopSynthesizer,
    Method,
    SynthesisOutput,
    SynthesisUnit,
    Synthesizer,
)
from dfkd.paths import existing_ancestor, file_lock, safe_name, stores_dir
from dfkd.synthesis.store import (
    TEACHER_CONFIDENCE,
    TEACHER_ENERGY,
    TEACHER_PRED,
    SyntheticStore,
    teacher_scores,
    to_uint8,
)

NON_SEMANTIC = ("output_dir", "device", "data_root", "diagnose", "report_to")  # not results → not in the run id


def config_id_for(cfg: RunConfig, *, with_seed: bool = False) -> str:
    """Hash of everything that changes results: not the output folder, device, data root, diagnostics or any
    speed switch (``dfkd.config.SPEED``: workers, channels_last, the generator's batching and attention, ...)."""
    data = cfg.to_dict(speed_switches=False)
    data = {k: v for k, v in data.items() if k not in NON_SEMANTIC and (with_seed or k != "seed")}
    return stable_hash(data, n=8)


def run_id_for(cfg: RunConfig) -> str:
    return f"seed{cfg.seed}-{config_id_for(cfg, with_seed=True)}"


# ---------------------------------------------------------------------------------------------
# synthesis stage
# ---------------------------------------------------------------------------------------------
def store_key(cfg: RunConfig, method: Method, synth: Synthesizer, teacher: TeacherRef, student: str) -> dict:
    """Everything that determines the synthetic set; its hash names the store folder."""
    from dfkd.hashing import file_digest

    key = {
        "method": cfg.method,
        "method_version": method.card.version,
        "config": semantic(method.config),  # speed switches left out: they do not change the images
        "dataset": cfg.dataset,
        "teacher": teacher.name,
        "teacher_weights": file_digest(teacher.path) if teacher.path else teacher.name,
        "seed": cfg.seed,
        "generator": synth.identity(),
    }
    if method.store_depends_on_student():
        key["student"] = student
        key["distill"] = semantic(cfg.distill)
    return key


@torch.no_grad()
def teacher_logits(teacher: nn.Module, images_uint8: Tensor, spec: DatasetSpec, device: torch.device) -> Tensor:
    """Teacher logits on the images exactly as stored (uint8-quantised), float32 (N, K)."""
    out = []
    for chunk in images_uint8.split(256):
        x = spec.normalize(chunk.to(device).float() / 255.0)  # (b, C, S, S)
        out.append(teacher(x).float().cpu())
    return torch.cat(out)


def generate_unit(
    synth: Synthesizer,
    unit: SynthesisUnit,
    store: SyntheticStore,
    teacher: nn.Module,
    spec: DatasetSpec,
    device: torch.device,
    student: nn.Module | None = None,
    rank: int = 0,
) -> dict[str, float]:
    """Generate one unit and write it as one shard with the teacher's scores (its cost goes to ``info/``).

    A synthesizer whose units depend on earlier ones (``units_independent`` False: an online adversary, a memory
    bank) has its state after this unit saved in the store *before* the shard (``SyntheticStore.save_state``); a
    resumed synthesis restores the state of the last stored unit (:func:`restore_state`).
    """
    t0 = time.perf_counter()
    out: SynthesisOutput = synth.generate(unit, student)
    seconds = time.perf_counter() - t0
    n = out.images.shape[0]
    if out.images.shape[-2:] != (spec.input_size, spec.input_size):
        raise RuntimeError(
            f"{type(synth).__name__} returned {tuple(out.images.shape[-2:])} images; the store holds the data set's "
            f"input size {spec.input_size} (resize before returning)"
        )
    images = to_uint8(out.images.detach().cpu())  # (N, C, S, S) uint8
    logits = teacher_logits(teacher, images, spec, device)  # (N, K) on the images as stored
    table: dict[str, Any] = {"label": out.labels.detach().cpu().long(), **teacher_scores(logits)}
    if "seed" not in out.extras:
        table["seed"] = torch.full((n,), unit.seed, dtype=torch.int64)
    for k, v in out.extras.items():
        table[k] = v.detach().cpu() if isinstance(v, torch.Tensor) else v
    stateful = not synth.units_independent
    if stateful:
        store.save_state(unit.id, synth.state_dict())
    info = {"seconds": seconds, "images": n, "rank": rank, "host": platform.node()}
    if out.generator_steps is not None:
        info["generator_steps"] = int(out.generator_steps)
    store.write_unit(unit.id, images, table, info=info)
    if stateful:
        store.prune_states(keep=unit.id)
    return {"images": n, "seconds": seconds, **out.logs}


def restore_state(synth: Synthesizer, units: list[SynthesisUnit], store: SyntheticStore) -> None:
    """A stateful synthesizer (``units_independent`` False) resuming in ``store``: load the state saved with the last
    unit of ``units`` (plan order) whose shard exists. Nothing stored yet: the synthesizer keeps its initial state."""
    if synth.units_independent:
        return
    done = store.completed_units()
    stored = [u.id for u in units if u.id in done]
    if not stored:
        return
    state = store.load_state(stored[-1])
    if state is None:
        raise UserError(
            f"{store.root} holds unit {stored[-1]} but not the synthesizer state saved with it (states/), so the next "
            "units cannot continue where it stopped. Fix: delete that store folder and run again"
        )
    synth.load_state_dict(state)


def synthesize_all(
    synth: Synthesizer,
    units: list[SynthesisUnit],
    store: SyntheticStore,
    teacher: nn.Module,
    spec: DatasetSpec,
    device: torch.device,
    reporter: Reporter,
    dist: DistContext = SINGLE,
) -> dict[str, float]:
    """Offline synthesis: every unit not yet in the store, the method's finalize (filters), then mark complete.

    Under ``dist`` the missing units (as rank 0 sees them) are dealt round-robin to the ranks; each writes
    its own shards, and rank 0 runs ``finalize`` and marks the store complete once all are done. Units
    are independent (seeded by unit id), so the store does not depend on the number of processes, and a
    restart with any number of processes generates exactly the missing units.
    """
    done = store.completed_units()
    todo_ids = dist.broadcast([u.id for u in units if u.id not in done])
    if dist.enabled and todo_ids and not synth.units_independent:
        raise UserError(
            f"{type(synth).__name__}'s units depend on earlier units (its state carries over: an online adversary, a "
            "memory bank, a persistent generator), so they cannot be split across processes: run this method with "
            "one process (DiffDFKD: or set adv_weight=0, which makes its units independent)"
        )
    restore_state(synth, units, store)
    by_id = {u.id: u for u in units}
    mine = [by_id[i] for i in dist.shard(todo_ids)]
    name = f"synthesize (rank 0 of {dist.world_size})" if dist.enabled else "synthesize"
    total = len(dist.shard([u.id for u in units]))
    with reporter.task(name, total=total, completed=total - len(mine), unit="unit") as tick:
        for unit in mine:
            logs = generate_unit(synth, unit, store, teacher, spec, device, rank=dist.rank)
            tick(logs)
    dist.barrier()  # every unit is on disk
    stats: dict[str, float] = {}
    if dist.is_main:
        stats = synth.finalize(store)
        store.mark_complete([u.id for u in units])
    return dist.broadcast(stats)


# ---------------------------------------------------------------------------------------------
# the run: typed stages
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Prepared:
    """A run's components, built but not yet run (shared by ``run`` and ``validate``)."""

    cfg: RunConfig
    spec: DatasetSpec
    device: torch.device
    method: Method
    teacher_ref: TeacherRef
    teacher: nn.Module
    student_name: str
    student: nn.Module
    ctx: BuildContext


@dataclasses.dataclass(frozen=True)
class TeacherCheck:
    """The teacher measured on the real test set (stage ``check_teacher``)."""

    loader: DataLoader  # the real test set, reused by evaluation and diagnosis
    accuracy: dict[str, Any]  # top1, top5 (%)
    predictions: Tensor  # (N,) the teacher's argmax per test image, in data-set order
    file: dict[str, Any]  # what the record states about the teacher's file (digest, recipe)


@dataclasses.dataclass(frozen=True)
class Distilled:
    """What the synthesize-and-distil stage of every shape returns."""

    result: TrainResult
    store: SyntheticStore | None  # the synthetic set (in_loop: the final generator's sample; real_data: None)
    synthesis_seconds: float
    images: int  # images kept in the store (offline, pool), seen by the student (in_loop), 0 (real_data)
    extra: dict[str, float]  # record columns about the synthetic set


def prepare(
    cfg: RunConfig,
    reporter: Reporter,
    teacher: nn.Module | None = None,
    *,
    device: torch.device | None = None,
    dist: DistContext = SINGLE,
) -> Prepared:
    """Stage 1, provision: the method, the teacher (fetched, or trained where allowed) and a fresh student."""
    from dfkd.datasets import get_dataset
    from dfkd.distill.trainer import seed_everything
    from dfkd.models import check_model_name, create_model

    spec = get_dataset(cfg.dataset)
    device = device or resolve_device(cfg.device)
    method = create_method(cfg.method, cfg.method_config)
    ref = resolve_teacher(cfg.teacher, cfg.teacher_arch, spec)
    student_name = cfg.student or spec.default_student
    check_model_name(student_name)  # a mistyped student fails now, not after the teacher has trained
    check_model_name(ref.arch)
    check_budget_fits(cfg, spec, stores_dir(), free=False)  # a budget no disk could hold fails before any work
    if teacher is None:
        with reporter.stage("teacher", ref.name), dist.main_first():  # rank 0 trains or fetches it
            teacher = build_teacher(
                ref,
                spec,
                device,
                train_if_missing=cfg.train_teacher,
                recipe=cfg.teacher_train,
                data_root=cfg.data_root,
                seed=cfg.seed,
                progress=reporter.epoch_line("teacher"),
            )
    seed_everything(cfg.seed)
    student = create_model(student_name, spec.num_classes).to(device)
    ctx = BuildContext(teacher, student, spec, device, cfg.seed, cfg.distill, cfg.data_root, dist)
    return Prepared(cfg, spec, device, method, ref, teacher, student_name, student, ctx)


def run(
    cfg: RunConfig,
    *,
    reporter: Reporter | None = None,
    force: bool = False,
    dist: DistContext | None = None,
    device: torch.device | None = None,
) -> RunRecord:
    """Run one benchmark cell end to end and write its record (see the module docstring).

    ``dist``/``device``: this process's place in a multi-process job; by default read from the launcher's
    environment (``torchrun``), which for a plain ``bench run`` is the single process on ``cfg.device``.
    """

    if dist is None:
        from dfkd.distributed import setup

        dist, device = setup(cfg.device)
    reporter = reporter if reporter is not None and dist.is_main else Reporter(quiet=not dist.is_main)
    if dist.is_main:
        check_writable(cfg.output_dir, "--output-dir")  # before the teacher trains, not after
        check_installed(cfg.report_to)
    p = prepare(cfg, reporter, device=device, dist=dist)
    out = run_dir(cfg.output_dir, cfg.dataset, p.teacher_ref.name, p.student_name, cfg.method, run_id_for(cfg))
    with contextlib.ExitStack() as held:
        if dist.is_main:  # two identical runs: the second waits, then reports the first one's record
            held.enter_context(file_lock(out.with_name(f".{out.name}.lock"), f"running {out.name}", reporter.note))
        dist.barrier()
        return _run_locked(cfg, p, out, reporter, force, dist)


def _run_locked(
    cfg: RunConfig, p: Prepared, out: Path, reporter: Reporter, force: bool, dist: DistContext
) -> RunRecord:
    """``run`` once this job holds the run folder's lock (rank 0): the stages, in order."""
    record_path = out / "record.json"
    if dist.broadcast(record_path.is_file()) and not force:
        return _report_existing(record_path, cfg, reporter, dist)
    protocol, deviations = begin(cfg, p, out, reporter, dist)
    tracking = open_tracking(cfg, out, protocol, dist)
    try:
        teacher = check_teacher(cfg, p, reporter, dist)
        trainer = build_trainer(p, out, teacher, reporter, dist, tracking)
        distilled = DISTIL[p.method.shape](p.method.build_synthesizer(p.ctx), trainer, p, out, reporter, dist)
        if not dist.is_main:  # rank 0 evaluates the shifted sets and writes; the others wait for it to finish
            dist.barrier()
            return RunRecord.read(record_path)
        extra, diagnostics = evaluate(cfg, p, teacher, distilled, reporter)
        record = make_record(cfg, p, out, teacher, trainer, distilled, extra, diagnostics, protocol, deviations, dist)
        record.write(record_path)
    except BaseException:
        tracking.abort()
        raise
    tracking.finish(record, reporter.stages)
    _finish(record, record_path, cfg, reporter)
    dist.barrier()
    return record


def _report_existing(record_path: Path, cfg: RunConfig, reporter: Reporter, dist: DistContext) -> RunRecord:
    """A finished run asked again: report its record (and repair what follows it) instead of running it."""
    record = RunRecord.read(record_path)
    if dist.is_main:
        reporter.note(f"{record_path} exists: reporting it (use --force to run again)")
        _finish(record, record_path, cfg, reporter, repair=True)
    dist.barrier()
    return record


def begin(cfg: RunConfig, p: Prepared, out: Path, reporter: Reporter, dist: DistContext) -> tuple[str, list[str]]:
    """The run folder with its ``config.yaml``; notes on the recipe; the protocol the record will state."""
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
    for note in cfg.distill.unusual():
        reporter.note(f"note: {note}")
    protocol, deviations = recorded_protocol(cfg)
    if deviations:
        reporter.note(
            f"protocol: {cfg.protocol} asked, recorded as custom ({'; '.join(deviations[:4])}"
            f"{'; …' if len(deviations) > 4 else ''})"
        )
    else:
        reporter.note(f"protocol: {protocol}")
    if cfg.dg:  # a bad key or missing folder must fail now, not after hours of training
        from dfkd.benchmark.dg import load_dg_sets

        load_dg_sets(p.spec, cfg.dg)
    return protocol, deviations


def check_teacher(cfg: RunConfig, p: Prepared, reporter: Reporter, dist: DistContext) -> TeacherCheck:
    """Stage 2: the teacher's accuracy and predictions on the real test set (cached per weights digest)."""
    with dist.main_first():  # rank 0 downloads the test set and caches the teacher's accuracy
        loader = test_loader(p.spec, cfg.data_root, num_workers=cfg.distill.num_workers)
        with reporter.stage("teacher accuracy", p.teacher_ref.name):
            accuracy, predictions = teacher_accuracy(p.teacher, p.teacher_ref, p.spec, loader, p.device)
    reporter.note(f"teacher {p.teacher_ref.name}: top-1 {accuracy['top1']:.2f}% on {len(loader.dataset)} test images")
    file, warning = teacher_provenance(p.teacher_ref, cfg.teacher_train)
    if warning:
        reporter.note(f"warning: {warning}")
    return TeacherCheck(loader, accuracy, predictions, file)


def open_tracking(cfg: RunConfig, out: Path, protocol: str, dist: DistContext) -> Tracking:
    """The experiment trackers of ``--report-to`` (rank 0; none elsewhere), started with the resolved config."""
    if not dist.is_main or not cfg.report_to:
        return Tracking([])
    run_id, config_id = run_id_for(cfg), config_id_for(cfg)
    tags = [cfg.dataset, cfg.method, protocol]
    tracking = Tracking.open(cfg.report_to, out, run_id=run_id, config_id=config_id, cfg_tags=tags)
    tracking.start({**cfg.to_dict(), "run_id": run_id, "config_id": config_id, "recorded_protocol": protocol})
    return tracking


def build_trainer(
    p: Prepared, out: Path, teacher: TeacherCheck, reporter: Reporter, dist: DistContext, tracking: Tracking
) -> Trainer:
    """The student's trainer with the method's distiller, checkpointing into the run folder."""
    return Trainer(
        p.student,
        p.method.build_distiller(p.ctx),
        p.cfg.distill,
        device=p.device,
        seed=p.cfg.seed,
        test_loader=teacher.loader,
        reference_pred=teacher.predictions.to(p.device),
        checkpoint_dir=out / "checkpoints",
        progress=tracking.epochs("distill", reporter.epoch_line("distill")),
        dist=dist,
    )


# -- stage 3, synthesize and distil: one function per shape (methods/base.py) -----------------------------------
def distil_offline(
    synth: Synthesizer | None, trainer: Trainer, p: Prepared, out: Path, reporter: Reporter, dist: DistContext
) -> Distilled:
    """Shape ``offline``: every unit into the store (shared by the runs that need the same set), then distil on it."""
    store = open_store(synth, p, reporter, dist)
    with _store_lock(store, dist, reporter):  # one writer per store; a run sharing it waits, then reuses it
        store = SyntheticStore.open_existing(store.root)  # the process we waited for may have completed it
        synth.attach_store(store)
        if store.is_complete:
            reporter.note(f"synthetic store cache hit: {store.root} ({store.num_images()} images)")
        else:
            stats = synthesize_all(synth, synth.plan(), store, p.teacher, p.spec, p.device, reporter, dist)
            if dist.is_main:
                store.write_artifact("finalize.json", stats)
            store = SyntheticStore.open_existing(store.root)  # rank 0 marked it complete
    dist.barrier()
    finalize_stats = store.read_artifact("finalize.json") or {}
    if finalize_stats.get(f"{p.cfg.method}/shortfall"):
        reporter.note(
            f"warning: {p.cfg.method} kept {finalize_stats[f'{p.cfg.method}/shortfall']:.0f} images fewer than its "
            f"budget; per class, with the styles it dropped: {store.artifact_path('shortfall.json')}"
        )
    with reporter.stage("distill", f"{p.cfg.distill.epochs} epochs on {store.num_images()} stored images"):
        result = trainer.fit(store.dataset(p.spec.train_transform()))
    return _from_store(result, store, finalize_stats)


def distil_pool(
    synth: Synthesizer | None, trainer: Trainer, p: Prepared, out: Path, reporter: Reporter, dist: DistContext
) -> Distilled:
    """Shape ``pool``: unit ``e`` generated at the start of epoch ``e`` with the current student, then the epoch's
    ``kd_steps`` student steps on the pool so far (the store is this student's own; a resumed run reuses its units)."""
    store = open_store(synth, p, reporter, dist)
    units = synth.plan()
    restore_state(synth, units, store)  # a resumed run: the state after the last unit generated (memory, generator)
    if len(units) != p.cfg.distill.epochs:
        raise UserError(
            f"{p.cfg.method} is a pool method: one synthesis unit per epoch, but its plan has {len(units)} "
            f"units and distill.epochs={p.cfg.distill.epochs}"
        )
    transform = p.spec.train_transform()

    def pool_for_epoch(epoch: int) -> Dataset:
        unit = units[epoch]
        with dist.main_first():  # rank 0 generates it (every rank holds the same student), all read it
            if dist.is_main and not store.has_unit(unit.id):
                generate_unit(synth, unit, store, p.teacher, p.spec, p.device, student=p.student)
        return store.dataset(transform, units={u.id for u in units[: epoch + 1]})  # the pool so far, not the store

    detail = (
        f"{p.cfg.distill.epochs} epochs, each one synthesis unit then {p.method.kd_steps_per_epoch()} student steps"
    )
    with reporter.stage("distill", detail):  # synthesis interleaved: its seconds are in the record's synthesis time
        result = trainer.fit(pool_for_epoch, steps_per_epoch=p.method.kd_steps_per_epoch())
    if dist.is_main:
        store.mark_complete([u.id for u in units])
    return _from_store(result, store, {})


def distil_in_loop(
    synth: Synthesizer | None, trainer: Trainer, p: Prepared, out: Path, reporter: Reporter, dist: DistContext
) -> Distilled:
    """Shape ``in_loop``: distil with the generator in the loop (its state checkpointed with the student), then
    store a seeded sample of the final generator in the run folder for the diagnose stage and the report."""
    if not isinstance(synth, InLoopSynthesizer):
        raise RuntimeError(f"{p.cfg.method} has shape in_loop but its synthesizer is not an InLoopSynthesizer")
    steps = p.method.config.steps_per_epoch
    with reporter.stage("distill", f"{p.cfg.distill.epochs} epochs × {steps} steps, the generator in the loop"):
        result = trainer.fit_in_loop(synth, steps_per_epoch=steps)
    with dist.main_first():  # rank 0 creates the manifest
        sample = SyntheticStore.open(out / "generator-sample", config_hash=out.name, meta={"what": "final generator"})
    if not sample.is_complete:
        synthesize_all(synth, synth.plan(), sample, p.teacher, p.spec, p.device, reporter, dist)
    sample = SyntheticStore.open_existing(sample.root)
    seen = steps * p.cfg.distill.epochs * p.cfg.distill.batch_size
    extra = {
        **synthetic_set_stats(sample.read_table(kept_only=False)),
        "in_loop/images_seen": float(seen),
        "in_loop/generator_seconds": synth.seconds,
        "synthesis/generator_steps": float(getattr(synth, "generator_steps", 0)),
    }
    return Distilled(result, sample, synth.seconds, seen, extra)


def distil_real_data(
    synth: Synthesizer | None, trainer: Trainer, p: Prepared, out: Path, reporter: Reporter, dist: DistContext
) -> Distilled:
    """Shape ``real_data`` (real KD, the upper bound): the real training split. No other shape reads it."""
    with reporter.stage("distill", f"{p.cfg.distill.epochs} epochs on the real training split"):
        result = trainer.fit(p.spec.load("train", p.cfg.data_root))
    return Distilled(result, None, 0.0, 0, {})


DISTIL: dict[str, Callable[..., Distilled]] = {
    OFFLINE: distil_offline,
    POOL: distil_pool,
    IN_LOOP: distil_in_loop,
    REAL_DATA: distil_real_data,
}


def open_store(synth: Synthesizer | None, p: Prepared, reporter: Reporter, dist: DistContext) -> SyntheticStore:
    """The method's synthetic store (named by ``store_key``), checked, with the synthesizer attached. A damaged
    complete store is reopened for regeneration; an incomplete one must fit the free disk space."""
    cfg = p.cfg
    if synth is None:
        raise RuntimeError(f"{cfg.method} stores images but built no synthesizer")
    key = store_key(cfg, p.method, synth, p.teacher_ref, p.student_name)
    digest = stable_hash(key)
    with dist.main_first():  # rank 0 creates the manifest
        store = SyntheticStore.open(
            stores_dir() / safe_name(cfg.dataset) / cfg.method / digest, config_hash=digest, meta={"key": key}
        )
    damaged = store.verify() if store.is_complete and dist.is_main else []  # sizes: one stat per shard
    if damaged:
        more = "; …" if len(damaged) > 3 else ""
        reporter.note(f"synthetic store {store.root} is damaged ({'; '.join(damaged[:3])}{more}): regenerating")
        store.reopen(damaged)
    if dist.broadcast(bool(damaged)):
        store = SyntheticStore.open_existing(store.root)  # every rank sees it incomplete now
    if not store.is_complete and dist.is_main:
        check_budget_fits(cfg, p.spec, store.root, free=True, done=store.num_images())
    synth.attach_store(store)
    return store


def _from_store(result: TrainResult, store: SyntheticStore, finalize_stats: dict[str, float]) -> Distilled:
    info = store.unit_info().values()
    seconds = sum(float(i.get("seconds", 0.0)) for i in info)
    extra = {**synthetic_set_stats(store.read_table(kept_only=False)), **finalize_stats}
    if any("generator_steps" in i for i in info):  # the cost beside seconds: optimiser steps of the synthesis
        extra["synthesis/generator_steps"] = float(sum(int(i.get("generator_steps", 0)) for i in info))
    return Distilled(result, store, seconds, store.num_images(kept_only=True), extra)


# -- stages 4 and 5: evaluate (shifted test sets) and diagnose; then the record --------------------------------------
def evaluate(
    cfg: RunConfig, p: Prepared, teacher: TeacherCheck, distilled: Distilled, reporter: Reporter
) -> tuple[dict[str, float], dict[str, Any]]:
    """The record's ``extra`` columns (synthetic set, shifted test sets, diagnostics) and its ``diagnostics``."""
    extra = dict(distilled.extra)
    if cfg.dg:
        from dfkd.benchmark.dg import evaluate_shifted

        with reporter.stage("domain generalisation", ", ".join(cfg.dg)):
            extra.update(evaluate_shifted(p.student, p.spec, cfg.dg, p.device, num_workers=cfg.distill.num_workers))
    diagnostics: dict[str, Any] = {}
    if cfg.diagnose.enabled:
        from dfkd.benchmark.diagnose import diagnose

        with reporter.stage("diagnose", "precision/recall/density/coverage, histograms, per-class top-1"):
            found = diagnose(
                cfg.diagnose,
                spec=p.spec,
                teacher=p.teacher,
                student=p.student,
                device=p.device,
                test_set=teacher.loader.dataset,
                teacher_pred=teacher.predictions,
                store=distilled.store,
                seed=cfg.seed,
            )
        extra.update(found.scalars)
        diagnostics = found.details
    return extra, diagnostics


def make_record(
    cfg: RunConfig,
    p: Prepared,
    out: Path,
    teacher: TeacherCheck,
    trainer: Trainer,
    distilled: Distilled,
    extra: dict[str, float],
    diagnostics: dict[str, Any],
    protocol: str,
    deviations: list[str],
    dist: DistContext,
) -> RunRecord:
    """The run's record; a run whose test accuracy is not finite gets none."""
    result = distilled.result
    if not all(math.isfinite(v) for v in (result.top1, result.best_top1, result.top5)):
        raise TrainingDivergedError(
            f"distillation of {cfg.method} ended without a finite test accuracy (top-1 {result.top1}); "
            "no record was written. Fix: check distill.epochs and distill.eval_every, then run again"
        )
    return RunRecord(
        run_id=out.name,
        method=cfg.method,
        dataset=cfg.dataset,
        teacher=p.teacher_ref.name,
        student=p.student_name,
        seed=cfg.seed,
        student_top1=result.top1,
        student_top1_best=result.best_top1,
        student_top1_best_epoch=result.best_epoch,
        student_top5=result.top5,
        teacher_top1=teacher.accuracy["top1"],
        teacher_student_agreement=result.agreement,
        num_synthetic_images=distilled.images,
        synthesis_seconds=distilled.synthesis_seconds,
        distill_seconds=result.seconds,
        epochs=cfg.distill.epochs,
        config_id=config_id_for(cfg),
        protocol=protocol,
        protocol_deviations=deviations,
        distill_precision=str(trainer.autocast or torch.float32).removeprefix("torch."),
        teacher_file=teacher.file,
        method_card=dataclasses.asdict(p.method.card),
        extra=extra,
        history=result.history,
        diagnostics=diagnostics,
        store=str(distilled.store.root) if distilled.store else None,
        config=cfg.to_dict(),
        env={**environment(p.device), "world_size": dist.world_size},
    )


def check_budget_fits(cfg: RunConfig, spec: DatasetSpec, folder: Path, *, free: bool, done: int = 0) -> None:
    """Refuse, with the estimate, a synthetic set larger than the disk holding ``folder`` (its total size, or with
    ``free`` its free space, less the ``done`` images already stored). Estimate: the method's declared budget
    (``Method.budget``) as uint8 images of the data set's size; methods that filter over-generate a little more."""
    import shutil

    from dfkd.methods import get_method_class

    method_cls = get_method_class(cfg.method)
    if not method_cls.stores_images():
        return
    try:
        images = method_cls.budget(cfg.method_config, spec.num_classes, cfg.distill).images
    except NotImplementedError:
        return  # a plug-in that does not declare its budget: nothing to estimate
    if not images:
        return
    per_image = 3 * spec.input_size**2
    need = max(0, images - done) * per_image
    probe = existing_ancestor(folder)
    usage = shutil.disk_usage(probe)
    room = usage.free if free else usage.total
    if need > room:
        gib = 1024**3
        raise UserError(
            f"the synthetic set of {cfg.method} needs about {need / gib:,.1f} GiB ({max(0, images - done):,} images of "
            f"3×{spec.input_size}×{spec.input_size} uint8) but {probe} has {room / gib:,.1f} GiB "
            f"{'free' if free else 'in all'}. Fix: lower the budget (images_per_class / trajectories_per_class), "
            "or point $DFKD_CACHE at a larger disk"
        )


def recorded_protocol(cfg: RunConfig) -> tuple[str, list[str]]:
    """The protocol a run's record states, and how it departs from the one it asked for: a run that changes
    its protocol's KD recipe or budget (``dfkd.benchmark.assembly.protocol_deviations``) is recorded as ``custom``."""
    deviations = protocol_deviations(cfg)
    return ("custom" if deviations else cfg.protocol), deviations


def check_writable(folder: str | Path, option: str) -> None:
    """One-line ``UserError`` unless ``folder`` is (or can be created as) a folder this process can write."""
    import os

    probe = existing_ancestor(folder)  # the nearest existing ancestor decides
    if not probe.is_dir():
        raise UserError(f"{option} {str(folder)!r}: {probe} is a file, not a folder. Fix: choose another {option}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{option} {str(folder)!r}: {probe} is not writable. Fix: choose a folder you can write")


@contextlib.contextmanager
def _store_lock(store: SyntheticStore, dist: DistContext, reporter: Reporter) -> Iterator[None]:
    """Rank 0 holds the store's file lock (the other ranks follow it through the barrier)."""
    with contextlib.ExitStack() as held:
        if dist.is_main:
            held.enter_context(store.writer_lock(reporter.note))
        dist.barrier()
        yield


def _finish(record: RunRecord, record_path: Path, cfg: RunConfig, reporter: Reporter, repair: bool = False) -> None:
    """What follows the record: the result table, the leaderboard, the report. Idempotent: a rerun of a finished
    run (``repair``) prints the table again, rewrites the leaderboard (so a row lost to a late kill comes back) and
    rewrites the report only if its page or figures are missing, saying what it repaired."""
    out = record_path.parent
    reporter.summary(record, record_path, reported_again=repair)
    board = Path(cfg.output_dir) / f"leaderboard-{safe_name(cfg.dataset)}.csv"
    before = board.read_bytes() if board.is_file() else None
    update_leaderboard(cfg.output_dir, cfg.dataset, reporter)
    repaired = [f"leaderboard ({board})"] if repair and board.read_bytes() != before else []
    if cfg.diagnose.report:
        from dfkd.benchmark.report import write_report

        page = out / "report.html"
        if not repair or not page.is_file() or not any(out.glob("*.png")):
            with reporter.stage("report", str(page)):
                write_report([out], page)
            if repair:
                repaired.append(f"report ({page})")
    if repaired:
        reporter.note("repaired: " + "; ".join(repaired))


def synthetic_set_stats(table: dict[str, Any]) -> dict[str, float]:
    """What the teacher thinks of the kept synthetic images (scores stored per image by ``generate_unit``):
    agreement with the target class, free energy −logsumexp f(x) (lower = more in-distribution), confidence."""
    kept = table["kept"]
    stats = {"synthetic/generated": float(len(kept)), "synthetic/kept": float(kept.sum())}
    if kept.any():
        agree = table[TEACHER_PRED][kept] == table["label"][kept]
        stats["synthetic/teacher_target_top1"] = 100.0 * agree.float().mean().item()
        stats["synthetic/teacher_energy_mean"] = table[TEACHER_ENERGY][kept].mean().item()
        stats["synthetic/teacher_confidence_mean"] = table[TEACHER_CONFIDENCE][kept].mean().item()
    return stats


def update_leaderboard(output_dir: str | Path, dataset: str, reporter: Reporter | None = None) -> list[Path]:
    from dfkd.benchmark.leaderboard import (
        build_leaderboard,
        load_records,
        load_reference,
        write_leaderboard,
        write_paper_view,
    )

    records = [r for r in load_records(output_dir) if r.get("dataset") == dataset]
    df = build_leaderboard(records, dataset=dataset, reference=load_reference())
    paths = write_leaderboard(df, Path(output_dir) / f"leaderboard-{safe_name(dataset)}.csv")
    paths += write_paper_view(df, output_dir)
    if reporter:
        reporter.note(f"leaderboard: {paths[0]}")
    return paths


def validate(cfg: RunConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Build ``cfg`` with the teacher and student architectures it names, at random weights, generate ONE synthesis
    unit and take ONE distillation step; nothing is written. Catches config and wiring errors in seconds.

    The teacher is checked as ``bench run`` would find it: a checkpoint that is missing (and that ``bench run`` would
    not train) is refused with the same one-line error; its weights are not loaded (random weights suffice to test
    the wiring, and keep the check fast), which the report says."""
    from dfkd.benchmark.teachers import BUNDLE_HELP, CHEAP_TO_TRAIN
    from dfkd.datasets import get_dataset
    from dfkd.distill.trainer import make_optimizer
    from dfkd.models import check_model_name, create_model

    reporter = reporter or Reporter()
    spec = get_dataset(cfg.dataset)
    device = resolve_device(cfg.device)
    ref = resolve_teacher(cfg.teacher, cfg.teacher_arch, spec)
    check_model_name(ref.arch)
    if ref.path is not None and not ref.path.is_file():
        trainable = spec.name in CHEAP_TO_TRAIN if cfg.train_teacher is None else cfg.train_teacher
        if not trainable:
            help_ = BUNDLE_HELP.format(dir=ref.path.parent, dataset=spec.name, arch=ref.arch)
            raise UserError(f"No teacher checkpoint at {ref.path}: {help_}")
    torch.manual_seed(cfg.seed)
    teacher = create_model(ref.arch, spec.num_classes).to(device).eval().requires_grad_(False)
    p = prepare(cfg, reporter, teacher=teacher)
    synth = p.method.build_synthesizer(p.ctx)
    distiller = p.method.build_distiller(p.ctx)
    found = "zoo weights" if ref.zoo else ("file found" if ref.path and ref.path.is_file() else "trained by bench run")
    report: dict[str, Any] = {
        "method": cfg.method,
        "dataset": cfg.dataset,
        "teacher": f"{ref.arch} (random weights; {found})",
        "student": f"{p.student_name} (random weights)",
    }
    if synth is not None:
        units = synth.plan()
        t0 = time.perf_counter()
        out = synth.generate(units[0], p.student)
        report.update(units=len(units), unit_images=int(out.images.shape[0]), unit_seconds=time.perf_counter() - t0)
        images = spec.normalize(out.images.to(device).float())
        labels = out.labels.to(device)
    else:
        x, y = spec.load("train", cfg.data_root)[0]
        images, labels = x[None].to(device), torch.tensor([y], device=device)
    optimizer = make_optimizer(p.student.parameters(), cfg.distill)
    p.student.train()
    loss, logs = distiller.loss(p.student, images, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    report.update(loss=float(loss.item()), **{f"loss/{k}": float(v) for k, v in logs.items()})
    return report
