"""The machinery the generator-in-the-loop methods share (shape ``in_loop``): DAFL, ZSKT, DFAD and DFQ differ
only in the generator's loss (and DFAD in the student's), each in its own file.

As in the community benchmark's ``GenerativeSynthesizer`` (CMI pack ``datafree/synthesis/generative.py:52-81``,
described in ``shared/spec/classic-baselines.md`` §1.3, §2.1): one persistent generator, never reset, with its own
Adam; before every ``kd_steps`` student steps, ``g_steps`` generator steps on fresh z with the student in eval mode;
each student step on a fresh batch from the generator in eval mode (its BN running statistics). The teacher is
frozen; its parameters receive no update and its BN buffers are untouched (eval mode).

Every latent is drawn from its own seed (run seed, step, what for), so a step's batch does not depend on how the
run got there, and the synthesizer's state (generator, optimiser, seconds) is checkpointed with the student:
a resumed run ends with the same student and generator as an uninterrupted one.

Several processes (``torchrun``): one generator, kept in sync by ``DistributedDataParallel``. Every rank starts
from the same weights (seeded by the run seed; DDP also broadcasts rank 0's), draws the *global* latent batch of a
step from its seed and takes its own slice (rank r: rows r·B/W … (r+1)·B/W), so the union of the ranks' batches is
the single-process batch; the generator's gradients are averaged over ranks, so every rank applies the same Adam
step. Rank-seeded generators were the alternative; they would train W different generators, a different method.
What stays per rank: batch-level terms (BatchNorm batch statistics in the generator, the teacher's BN-statistics
loss, DAFL's/DFQ's class balance) are computed on each rank's slice and then averaged, as the student's BN is
under DDP without ``sync_bn``; on CUDA the generator's BatchNorm is converted to ``SyncBatchNorm``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dfkd.config import DistillConfig, check_choices, check_positive_ints
from dfkd.errors import ConfigError
from dfkd.methods.base import (
    IN_LOOP,
    Budget,
    BuildContext,
    InLoopSynthesizer,
    Method,
    SynthesisOutput,
    SynthesisUnit,
    unit_seed,
)
from dfkd.synthesis.generators import GENERATORS, ConvGenerator, latent
from dfkd.synthesis.losses import BNStatistics, PenultimateFeatures


@dataclass(frozen=True)
class Scored:
    """What a generator loss may read about one generated batch."""

    images: Tensor  # (B, 3, S, S) normalised, with gradient to the generator
    teacher_logits: Tensor  # (B, K)
    student_logits: Tensor | None  # (B, K), student in eval mode; None unless the method asked for it
    bn: BNStatistics | None  # the teacher's BN-statistics loss of this forward, when asked for
    features: Tensor | None  # the teacher's pooled penultimate features (B, D), when asked for


LossFn = Callable[[Scored], tuple[Tensor, dict[str, float]]]


def check_in_loop_config(name: str, c: Any) -> None:
    """Range and choice checks shared by the in-loop methods' configs (one-line ConfigError naming the field)."""
    check_choices(c, f"{name}.", generator=GENERATORS)
    check_positive_ints(c, f"{name}.", "nz", "ngf", "g_steps", "kd_steps", "steps_per_epoch", "sample_images")
    if c.synthesis_batch_size is not None and c.synthesis_batch_size < 2:
        raise ConfigError(f"{name}.synthesis_batch_size must be ≥ 2 (BatchNorm needs a batch), or null")
    if not (math.isfinite(c.lr_g) and c.lr_g > 0):
        raise ConfigError(f"{name}.lr_g must be a finite number > 0, got {c.lr_g!r}")


class InLoopMethod(Method):
    """Base of DAFL, ZSKT, DFAD and DFQ: shape ``in_loop``, the shared config checks and budget shape. A subclass
    sets ``Config`` (with the fields ``check_in_loop_config`` reads), ``card``, ``smoke`` and builds its
    ``GenerativeSynthesizer`` with its generator loss."""

    shape = IN_LOOP
    smoke = ("generator=small", "steps_per_epoch=2", "kd_steps=1", "synthesis_batch_size=8", "sample_images=8")

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        check_in_loop_config(self.name or type(self).__name__.lower(), self.config)

    @classmethod
    def budget(cls, config: Any, num_classes: int, distill: DistillConfig) -> Budget:
        """No images are stored (every student step sees a fresh batch): the method spends student steps."""
        return Budget(images=None, kd_steps=config.steps_per_epoch * distill.epochs)

    @classmethod
    def budget_overrides(
        cls, config: Any, images_per_class: int, num_classes: int, distill: DistillConfig
    ) -> dict[str, Any]:
        """Matched protocol: per epoch as many student steps as one pass over the offline methods' images."""
        return {"steps_per_epoch": math.ceil(images_per_class * num_classes / distill.batch_size)}


class GenerativeSynthesizer(InLoopSynthesizer):
    """A generator trained with ``loss_fn`` alongside the student; see the module docstring."""

    def __init__(
        self,
        cfg: Any,
        ctx: BuildContext,
        loss_fn: LossFn,
        *,
        needs_student: bool = False,
        needs_bn: bool = False,
        needs_features: bool = False,
    ):
        self.cfg, self.ctx, self.loss_fn = cfg, ctx, loss_fn
        self.teacher, self.spec, self.device = ctx.teacher, ctx.spec, ctx.device
        self.needs_student, self.needs_bn, self.needs_features = needs_student, needs_bn, needs_features
        self.kd_steps = cfg.kd_steps
        self.seconds = 0.0
        self.generator_steps = 0  # optimiser steps of the generator so far (the record's synthesis cost)
        self.dist = ctx.dist
        with torch.random.fork_rng(devices=[]):  # the generator's initial weights from the run seed alone
            torch.manual_seed(unit_seed(ctx.seed, "generator-init"))
            self.generator = ConvGenerator(cfg.generator, cfg.nz, ctx.spec.input_size, cfg.ngf).to(ctx.device)
        self.train_model: nn.Module = self.generator  # what the generator step calls: the generator or its DDP wrapper
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            batch = cfg.synthesis_batch_size or ctx.distill.batch_size
            if batch % self.dist.world_size:
                raise ConfigError(
                    f"synthesis_batch_size {batch} is the global generator batch and must divide over "
                    f"{self.dist.world_size} processes: pick a multiple of {self.dist.world_size}"
                )
            if ctx.device.type == "cuda":
                self.generator = nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
            self.train_model = DistributedDataParallel(
                self.generator, device_ids=[ctx.device] if ctx.device.type == "cuda" else None
            )
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas_g))

    # -- images ---------------------------------------------------------------------------------
    def _generate(self, batch: int, seed: int, model: nn.Module | None = None, *, shard: bool = False) -> Tensor:
        """Normalised images (B, 3, S, S) of the generator in its current mode, from the latent of ``seed``; with
        ``shard`` this rank's slice (B/W, 3, S, S) of the global batch ``batch``."""
        z = latent(batch, self.cfg.nz, seed, self.device)  # (B, nz): the same global batch on every rank
        if shard and self.dist.enabled:
            per_rank = batch // self.dist.world_size
            z = z[self.dist.rank * per_rank : (self.dist.rank + 1) * per_rank]  # (B/W, nz)
        x = (model or self.generator)(z)
        return x if self.generator.normalised else self.spec.normalize(x)

    def sample(self, batch_size: int, step: int) -> tuple[Tensor, Tensor]:
        t0 = time.perf_counter()
        self.generator.eval()  # CMI pack: samples from the generator's BN running statistics
        with torch.no_grad():
            x = self._generate(batch_size, unit_seed(self.ctx.seed, f"sample-{step}"), shard=True)  # (B/W, 3, S, S)
            if self.ctx.distill.ce_weight > 0:  # a CE term needs targets: the teacher's classes
                labels = self.teacher(x).argmax(1)  # (B,)
            else:  # the KD loss reads the teacher's logits only: no target class, and no second teacher pass
                labels = torch.full((len(x),), -1, dtype=torch.long, device=x.device)  # (B/W,)
        self.seconds += time.perf_counter() - t0
        return x.detach(), labels

    def update(self, student: nn.Module, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        was_training = student.training
        self.dist.broadcast_buffers(student)  # under torchrun every rank's step sees the same student (rank 0's)
        student.eval()  # CMI pack: the adversarial term sees the student's running statistics
        self.generator.train()
        batch = self.cfg.synthesis_batch_size or self.ctx.distill.batch_size
        logs: dict[str, float] = {}
        for g in range(self.cfg.g_steps):
            seed = unit_seed(self.ctx.seed, f"update-{step}-{g}")
            x = self._generate(batch, seed, self.train_model, shard=True)  # (B/W, 3, S, S), rank's slice
            with (
                BNStatistics(self.teacher) if self.needs_bn else contextlib.nullcontext() as bn,
                PenultimateFeatures(self.teacher) if self.needs_features else contextlib.nullcontext() as feats,
            ):
                t = self.teacher(x)  # (B, K), gradient flows to x through the frozen teacher
                scored = Scored(
                    images=x,
                    teacher_logits=t,
                    student_logits=student(x) if self.needs_student else None,
                    bn=bn,
                    features=feats.features if feats is not None else None,
                )
                loss, logs = self.loss_fn(scored)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.generator_steps += 1
            student.zero_grad(set_to_none=True)  # the student's grads from L_adv are not the student's to use
        self._average_buffers()
        student.train(was_training)
        self.seconds += time.perf_counter() - t0
        return {**logs, "loss": float(loss.detach())}

    def _average_buffers(self) -> None:
        """Under torchrun: the generator's BN running statistics, which each rank updated on its own slice, averaged
        over the ranks (the running means become exactly those of the global batch), so every rank samples from the
        same generator and the checkpoint (rank 0's) is every rank's state: a resume is exact on every rank."""
        if not self.dist.enabled:
            return
        for buf in self.generator.buffers():
            if buf.is_floating_point():
                torch.distributed.all_reduce(buf)
                buf.div_(self.dist.world_size)

    # -- a seeded sample of the final generator, stored for the diagnose stage and the report --------------
    def plan(self) -> list[SynthesisUnit]:
        units, chunk = [], 100
        for i, start in enumerate(range(0, self.cfg.sample_images, chunk)):
            uid = f"g{i:04d}"
            size = min(chunk, self.cfg.sample_images - start)
            units.append(SynthesisUnit(uid, i, unit_seed(self.ctx.seed, uid), size=size))
        return units

    def generate(self, unit: SynthesisUnit, student: nn.Module | None = None) -> SynthesisOutput:
        self.generator.eval()
        with torch.no_grad():
            x = self._generate(unit.size, unit.seed)  # (N, 3, S, S) normalised
            labels = self.teacher(x).argmax(1).cpu()  # (N,)
        images = self.spec.denormalize(x).clamp(0, 1).cpu()  # (N, 3, S, S) in [0, 1]
        return SynthesisOutput(images=images, labels=labels)

    def identity(self) -> dict[str, Any]:
        return {"input_size": self.spec.input_size}

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "seconds": self.seconds,
            "generator_steps": self.generator_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.seconds = float(state.get("seconds", 0.0))
        self.generator_steps = int(state.get("generator_steps", 0))
