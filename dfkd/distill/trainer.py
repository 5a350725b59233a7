"""The one trainer every method distils with (and teachers train with, CE only).

* SGD or Adam, cosine / step / constant schedules with optional linear warm-up, stepped per epoch;
* mixed precision where the device has it (bf16 autocast on CUDA, fp16 with a GradScaler otherwise);
* the student and its input batches in ``torch.channels_last`` (NHWC) memory format by default: the same
  numbers up to float rounding, ~1.5× faster CNN training steps on CPU (oneDNN; benchmarks/kd_speed.py);
* a checkpoint after every epoch (``last.pt``: model, optimiser, scheduler, scaler, history) and
  ``best.pt`` beside it; ``fit`` resumes from ``last.pt`` and gives the same result as an
  uninterrupted run, because every epoch's randomness is seeded from (seed, epoch);
* top-1 / top-5 on the real test set each ``eval_every`` epochs; the headline is the **last** epoch,
  the best epoch is reported beside it, labelled as such;
* the same result on any number of processes (``torchrun``): ``cfg.batch_size`` is the *global* batch, the
  sampler gives rank r the r-th slice of every global batch, the student is wrapped in
  ``DistributedDataParallel`` (gradients averaged = the global batch mean) and each image's augmentation is
  seeded by (run seed, epoch, image index), not by which process or worker loads it. BatchNorm sees the
  per-rank slice unless ``cfg.sync_bn`` (``SyncBatchNorm``, CUDA only) — the one difference left.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from dfkd.config import DistillConfig, to_plain
from dfkd.distill.losses import Distiller
from dfkd.distributed import SINGLE, DistContext
from dfkd.errors import ConfigError, TrainingDivergedError
from dfkd.metrics.predict import predict
from dfkd.paths import atomic_writer


def _accumulate(sums: dict[str, Tensor | float], logs: dict[str, Tensor | float]) -> None:
    """Running sums of detached scalars (tensors stay on the device: one sync per epoch, not per step)."""
    for k, v in logs.items():
        sums[k] = sums.get(k, 0.0) + v


@dataclass
class TrainResult:
    top1: float  # last epoch, %
    top5: float  # last epoch, %
    best_top1: float  # best over evaluated epochs, %
    best_epoch: int
    agreement: float | None  # % of test images where student and teacher argmax agree (last epoch)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def lr_factor(cfg: DistillConfig, epoch: int) -> float:
    """Multiplier of cfg.lr during ``epoch`` (0-based)."""
    if epoch < cfg.warmup_epochs:
        return 0.1 + 0.9 * epoch / max(1, cfg.warmup_epochs)
    e, total = epoch - cfg.warmup_epochs, max(1, cfg.epochs - cfg.warmup_epochs)
    if cfg.schedule == "cosine":
        floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * e / total))
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {cfg.schedule!r}; use cosine, step or constant")


def make_optimizer(params, cfg: DistillConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use sgd or adam")


def amp_dtype(cfg: DistillConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the student's training: ``auto`` is bf16 (fp16 without bf16) on CUDA and off on CPU;
    ``bf16`` is honoured on CPU too (to measure what reduced precision changes); ``fp16`` needs CUDA."""
    if cfg.amp == "off":
        return None
    if device.type != "cuda":
        return torch.bfloat16 if cfg.amp == "bf16" else None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def _split_batch(batch) -> tuple[Tensor, Tensor]:
    # real data sets give (x, y); the synthetic store gives (x, y, index)
    return batch[0], batch[1]


class GlobalBatchSampler(Sampler[int]):
    """This rank's indices of one epoch: a seeded random order of ``num_samples`` indices (whole
    permutations of the data set, the last one cut), padded by wrap-around to a multiple of ``world_size``,
    then every ``world_size``-th index from ``rank``. Consecutive per-rank batches of ``B / world_size``
    therefore form, across ranks, exactly the global batches of ``B`` a single process draws (the
    interleaving of ``torch.utils.data.DistributedSampler``, which has no ``num_samples``)."""

    def __init__(self, n: int, *, seed: int, num_samples: int | None = None, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.num_samples = n if num_samples is None else num_samples
        self.total = math.ceil(self.num_samples / world_size) * world_size

    def global_order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed)
        order: list[int] = []
        while len(order) < self.num_samples:
            order += torch.randperm(self.n, generator=g).tolist()
        order = order[: self.num_samples]
        return order + order[: self.total - len(order)]  # pad (distributed only) so every rank has as many

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_order()[self.rank :: self.world_size])

    def __len__(self) -> int:
        return self.total // self.world_size


class SeededAugmentation(Dataset):
    """``dataset[i]`` with torch's default generator seeded by (``seed``, i) while it is loaded, so an image's
    random augmentation does not depend on the process, worker or order that loads it (state restored)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        gen = torch.default_generator
        state = gen.get_state()
        gen.manual_seed((self.seed * 1_000_003 + index) % 2**63)
        try:
            return self.dataset[index]
        finally:
            gen.set_state(state)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    reference: Tensor | None = None,
    dist: DistContext = SINGLE,
) -> dict[str, Any]:
    """Top-1 / top-5 (%) of ``model``; with ``reference`` predictions also the agreement (%).

    Under ``dist`` each rank evaluates every ``world_size``-th test image and the predictions are gathered
    in data-set order, so every rank returns the single-process result.
    """
    if dist.enabled:
        shard = Subset(loader.dataset, dist.shard(list(range(len(loader.dataset)))))  # type: ignore[arg-type]
        loader = DataLoader(shard, batch_size=loader.batch_size, num_workers=loader.num_workers)
    found = predict(model, loader, device, topk=5)
    pred, correct1, correct5 = found.pred, found.correct(1), found.correct(5)
    if dist.enabled:  # rank r holds images r, r + W, …: interleave the shards back into data-set order
        parts = dist.gather((pred, correct1, correct5))
        correct1, correct5 = sum(p[1] for p in parts), sum(p[2] for p in parts)
        pred = torch.empty(sum(len(p[0]) for p in parts), dtype=torch.long)
        for r, part in enumerate(parts):
            pred[r :: dist.world_size] = part[0]
    total = len(pred)
    out = {"top1": 100.0 * correct1 / max(1, total), "top5": 100.0 * correct5 / max(1, total), "pred": pred}
    if reference is not None and total:
        out["agreement"] = 100.0 * (pred == reference.cpu()).sum().item() / total
    return out


class BatchSource(Protocol):
    """What the trainer needs of an in-loop synthesizer (``dfkd.methods.base.InLoopSynthesizer``): fresh batches,
    a generator update every ``kd_steps`` student steps, and its state for the checkpoint."""

    kd_steps: int

    def sample(self, batch_size: int, step: int) -> tuple[Tensor, Tensor]: ...

    def update(self, student: nn.Module, step: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Trainer:
    """Distil (or train) ``student`` with a :class:`Distiller` on a data set; resumable."""

    def __init__(
        self,
        student: nn.Module,
        distiller: Distiller,
        cfg: DistillConfig,
        *,
        device: torch.device,
        seed: int = 0,
        test_loader: DataLoader | None = None,
        reference_pred: Tensor | None = None,
        checkpoint_dir: str | Path | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
        dist: DistContext = SINGLE,
    ):
        if cfg.batch_size % dist.world_size:
            raise ConfigError(
                f"distill.batch_size={cfg.batch_size} is the global batch and must divide evenly over "
                f"{dist.world_size} processes: pick a multiple of {dist.world_size}"
            )
        self.dist = dist
        self.channels_last = cfg.channels_last
        self.student = student.to(device)
        if self.channels_last:  # before DDP wraps it; 4-D weights only, the others are unchanged
            self.student.to(memory_format=torch.channels_last)
        self.model: nn.Module = self.student  # what the loss calls: the student, or its DDP wrapper
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            if cfg.sync_bn and device.type == "cuda":
                self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
            self.model = DistributedDataParallel(self.student, device_ids=[device] if device.type == "cuda" else None)
        self.distiller = distiller
        self.cfg = cfg
        self.device = device
        self.seed = seed
        self.test_loader = test_loader
        self.reference_pred = reference_pred
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.progress = progress
        self.optimizer = make_optimizer(self.student.parameters(), cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: lr_factor(cfg, e))
        self.autocast = amp_dtype(cfg, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast == torch.float16)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.seconds = 0.0
        self.source: BatchSource | None = None  # in-loop methods: its state is checkpointed with the student

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.start_epoch,
            "history": self.history,
            "seconds": self.seconds,
            "config": to_plain(self.cfg),
            "synthesizer": self.source.state_dict() if self.source is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.seconds = float(state.get("seconds", 0.0))
        if self.source is not None and state.get("synthesizer") is not None:
            self.source.load_state_dict(state["synthesizer"])

    def _save(self, name: str) -> None:
        if self.checkpoint_dir is None or not self.dist.is_main:
            return
        with atomic_writer(self.checkpoint_dir / name, durable=True) as f:
            torch.save(self.state_dict(), f)

    def try_resume(self) -> bool:
        """Load ``last.pt`` if a previous run of this trainer left one."""
        path = self.checkpoint_dir / "last.pt" if self.checkpoint_dir else None
        if path is None or not path.is_file():
            return False
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
        return True

    # -- training ---------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, epoch: int, steps: int | None) -> DataLoader:
        epoch_seed = self.seed * 100_003 + epoch
        sampler = GlobalBatchSampler(
            len(dataset),  # type: ignore[arg-type]
            seed=epoch_seed,
            num_samples=steps * self.cfg.batch_size if steps else None,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        return DataLoader(
            SeededAugmentation(dataset, epoch_seed),
            batch_size=self.cfg.batch_size // self.dist.world_size,  # this rank's slice of the global batch
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def train_epoch(self, dataset: Dataset, epoch: int, steps: int | None = None) -> dict[str, float]:
        seed_everything(self.seed * 100_003 + epoch)  # any randomness of the loss itself
        self.model.train()
        sums: dict[str, Tensor | float] = {}  # detached tensors: no device sync inside the loop
        n = 0
        for batch in self._loader(dataset, epoch, steps):
            x, y = _split_batch(batch)
            loss, logs = self._step(x, y)
            n += 1
            _accumulate(sums, {"loss": loss, **logs})
        return self.dist.mean({k: float(v) / max(1, n) for k, v in sums.items()})

    def _step(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor | float]]:
        """One optimiser step of the student on a batch; returns the detached loss and the distiller's logs."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)  # (B, C, H, W), NHWC strides
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            loss, logs = self.distiller.loss(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logs

    def train_epoch_in_loop(self, source: BatchSource, epoch: int, steps: int) -> dict[str, float]:
        """``steps`` student steps on fresh batches of ``source``, which updates its generator first and then every
        ``source.kd_steps`` steps (the CMI pack's order: one generator step, then ``kd_steps`` student steps)."""
        seed_everything(self.seed * 100_003 + epoch)
        sums: dict[str, Tensor | float] = {}
        n_gen = 0
        for step in range(steps):
            global_step = epoch * steps + step
            if step % source.kd_steps == 0:
                with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                    # the student itself, not its DDP wrapper: the generator step must not all-reduce the student's
                    # gradients (they are discarded); the source sets the student's mode itself
                    glogs = source.update(self.student, global_step)
                n_gen += 1
                _accumulate(sums, {f"gen/{k}": v for k, v in glogs.items()})
            self.model.train()
            with torch.no_grad():
                # the global batch's images for this rank: (B/W, C, H, W) normalised, (B/W,)
                x, y = source.sample(self.cfg.batch_size, global_step)
            loss, logs = self._step(x, y)
            _accumulate(sums, {"loss": loss, **logs})
        means = {k: float(v) / max(1, n_gen if k.startswith("gen/") else steps) for k, v in sums.items()}
        return self.dist.mean(means)

    def fit_in_loop(self, source: BatchSource, *, steps_per_epoch: int, resume: bool = True) -> TrainResult:
        """Train for ``cfg.epochs`` with an in-loop ``source``; its state is in every checkpoint, so a resumed run
        ends with the same student and generator as an uninterrupted one."""
        self.source = source
        return self.fit(lambda epoch: source, steps_per_epoch=steps_per_epoch, resume=resume)

    def fit(
        self,
        data: Dataset | Callable[[int], Dataset],
        *,
        steps_per_epoch: int | None = None,
        resume: bool = True,
    ) -> TrainResult:
        """Train for ``cfg.epochs``. ``data`` may be a callable ``epoch → Dataset`` (online methods)."""
        if resume:
            self.try_resume()
        for epoch in range(self.start_epoch, self.cfg.epochs):
            t0 = time.perf_counter()
            dataset = data(epoch) if callable(data) and not isinstance(data, Dataset) else data
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            if self.source is not None:
                row.update(self.train_epoch_in_loop(self.source, epoch, steps_per_epoch or 1))
            else:
                row.update(self.train_epoch(dataset, epoch, steps_per_epoch))
            bad = {k: v for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)}
            if bad:  # stop before the checkpoint: a resume must not start from diverged weights
                key, value = next(iter(bad.items()))
                raise TrainingDivergedError(
                    f"training diverged in epoch {epoch + 1}: {key} is {value} (lr {row['lr']:g}, batch "
                    f"{self.cfg.batch_size}). Likely cause: a learning rate too high or not finite, or non-finite "
                    "inputs; no record was written. Fix: lower distill.lr (or teacher_train.lr) and run again"
                )
            self.scheduler.step()
            # the BN running statistics each rank updated on its slice → rank 0's, so every rank evaluates, and a
            # resume restarts from, the student the checkpoint holds
            self.dist.broadcast_buffers(self.student)
            last = epoch == self.cfg.epochs - 1
            if self.test_loader is not None and ((epoch + 1) % self.cfg.eval_every == 0 or last):
                ev = evaluate(self.student, self.test_loader, self.device, self.reference_pred, self.dist)
                row.update({k: v for k, v in ev.items() if k != "pred"})
            row["seconds"] = time.perf_counter() - t0
            self.seconds += row["seconds"]
            best_before = max((h.get("top1", -1.0) for h in self.history), default=-1.0)
            self.history.append(row)
            self.start_epoch = epoch + 1
            self._save("last.pt")
            if row.get("top1", -1.0) > best_before:
                self._save("best.pt")
            if self.progress:
                self.progress(row)
        return self.result()

    def result(self) -> TrainResult:
        evaluated = [h for h in self.history if "top1" in h]
        if not evaluated:
            return TrainResult(float("nan"), float("nan"), float("nan"), 0, None, self.history, self.seconds)
        last = evaluated[-1]
        best = max(evaluated, key=lambda h: h["top1"])
        return TrainResult(
            top1=last["top1"],
            top5=last["top5"],
            best_top1=best["top1"],
            best_epoch=best["epoch"],
            agreement=last.get("agreement"),
            history=self.history,
            seconds=self.seconds,
        )
