"""The interfaces every DFKD method implements.

A method is a class with a frozen ``Config`` dataclass (the single source of its defaults), a
``card`` (paper, arXiv id, what was reconstructed) and two builders::

    synthesizer = method.build_synthesizer(ctx)   # plan() of units, generate(unit) → SynthesisOutput
    distiller   = method.build_distiller(ctx)     # loss(student, images, labels) → (loss, logs)

Synthesis is cut into **units** (e.g. one class × one trajectory batch), each with its own seed
derived from (run seed, unit id). The runner stores every unit as one shard of the synthetic store,
skips units already stored (resume), and could hand units to different processes: the store is the
same whatever the order or the number of workers.

A method names its **shape** (``Method.shape``), and the runner has one path per shape:

* ``offline`` (DiffDFKD, PRISM, diffusion KD, noise KD): every unit is generated first; then the student is
  distilled on the finished store, which is cached and reused by every student;
* ``pool`` (DeepInversion; CMI / Fast / NAYER): unit ``e`` is generated at the start of epoch ``e``, with the
  current student at hand, and the epoch trains ``kd_steps`` steps on the pool so far;
* ``in_loop`` (DAFL, ZSKT, DFAD, DFQ): a generator is trained alongside the student; every student step draws a
  fresh batch from it (:class:`InLoopSynthesizer`: ``sample`` / ``update``), nothing is stored but a small sample
  of the final generator for diagnostics;
* ``real_data`` (real KD only): trains on the real training split. No other shape may read it.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dfkd.config import DistillConfig, from_dict
from dfkd.datasets.base import DatasetSpec
from dfkd.distill.losses import Distiller, KDDistiller, kd_kl
from dfkd.distributed import SINGLE, DistContext
from dfkd.synthesis.store import SyntheticStore
from dfkd.synthesis.units import SynthesisUnit, balanced_units, unit_seed

# the interfaces a method implements, in one place (units and KD losses live in the layers below and are re-exported)
__all__ = [
    "IN_LOOP",
    "OFFLINE",
    "POOL",
    "REAL_DATA",
    "SHAPES",
    "Budget",
    "BuildContext",
    "Distiller",
    "InLoopSynthesizer",
    "KDDistiller",
    "Method",
    "MethodCard",
    "SynthesisOutput",
    "SynthesisUnit",
    "Synthesizer",
    "balanced_units",
    "kd_kl",
    "offline_kd_steps",
    "unit_seed",
]


@dataclass(frozen=True)
class MethodCard:
    """Provenance of a method, shown by ``bench ls methods`` and written into records."""

    title: str
    authors: str
    year: int
    arxiv: str | None = None  # arXiv id, e.g. "2504.00870"
    venue: str | None = None
    summary: str = ""  # one sentence
    reconstructed: str = ""  # what is a reconstruction rather than the authors' published procedure
    paper_only: bool = False  # no released code: written from the paper alone (the leaderboard's "reconstructed")
    version: str = "1"  # bump when the implementation changes results


@dataclass
class SynthesisOutput:
    images: Tensor  # (N, C, H, W) float in [0, 1], NOT normalised, at the data set's input size
    labels: Tensor  # (N,) int64 target classes
    extras: dict[str, Tensor | list] = field(default_factory=dict)  # per-image columns for the store's table
    logs: dict[str, float] = field(default_factory=dict)  # scalars for the progress line
    # optimiser steps this unit took (a generator's or the images' own), the cost the record sums beside seconds;
    # None where the method has no such steps (a diffusion sampler's denoising steps are not counted here)
    generator_steps: int | None = None


@dataclass
class BuildContext:
    """What a method may use to build its synthesizer and distiller."""

    teacher: nn.Module  # frozen, eval mode, on device
    student: nn.Module  # the model being distilled (online methods may query it)
    spec: DatasetSpec
    device: torch.device
    seed: int
    distill: DistillConfig
    data_root: str | None = None
    dist: DistContext = SINGLE  # this process's place in a torchrun job (in-loop generators keep in sync over it)


@dataclass(frozen=True)
class Budget:
    """What a run spends on the student, the quantities the ``matched`` protocol holds equal across methods.

    ``images``: synthetic images the store will hold (after any filter), None for methods on real data;
    ``kd_steps``: optimiser steps of the student over the whole run, None when they depend on a real split."""

    images: int | None
    kd_steps: int | None


def offline_kd_steps(images: int, distill: DistillConfig) -> int:
    """Student steps of ``distill.epochs`` passes over ``images`` at ``distill.batch_size`` (last batch kept)."""
    return distill.epochs * math.ceil(images / distill.batch_size)


class Synthesizer(ABC):
    """Turns units into images. Units are independent unless ``units_independent`` says otherwise; whatever a
    synthesizer learns across units or steps is its ``state_dict`` (checkpointed by the runner, see there)."""

    @abstractmethod
    def plan(self) -> list[SynthesisUnit]:
        """All units of the synthesis, in order."""

    @abstractmethod
    def generate(self, unit: SynthesisUnit, student: nn.Module | None = None) -> SynthesisOutput:
        """Generate one unit. Must depend only on the unit (and, for online methods, the student)."""

    def identity(self) -> dict[str, Any]:
        """What beyond the method config determines the images (e.g. the generator's weights)."""
        return {}

    def finalize(self, store: SyntheticStore) -> dict[str, float]:
        """Called once every unit is stored, before the store is marked complete (e.g. class-level filters).

        Must be idempotent: a run interrupted here calls it again on resume. Returns scalars for the record; a
        ``"<method>/shortfall"`` above 0 (images short of the budget) is reported to the user as a warning.
        """
        return {}

    def attach_store(self, store: SyntheticStore) -> None:
        """Called by the runner before synthesis; methods that read earlier units (online adversaries) keep it."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What the synthesizer learns during a run (generator weights, its optimiser, memory, an online adversary).
        In-loop synthesizers: saved in the student's checkpoint every epoch. Synthesizers whose units depend on
        earlier units (``units_independent`` False): saved in the store before each unit's shard. Stateless
        synthesizers return {}."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` on resume."""
        return None

    @property
    def units_independent(self) -> bool:
        """True when a unit's images depend on its seed alone, so units may be generated in any order and by
        any number of processes. False when a unit reads earlier units (e.g. an online adversary)."""
        return True


class InLoopSynthesizer(Synthesizer):
    """Shape ``in_loop``: a generator trained alongside the student (DAFL, ZSKT, DFAD, DFQ).

    The trainer calls ``update(student, step)`` before student step 0 and then every ``kd_steps`` student steps,
    and ``sample(batch, step)`` for every student step; the images are never stored. ``plan``/``generate`` give
    a small seeded sample of the *current* generator, which the runner stores after training for the diagnose
    stage and the report. ``state_dict`` must hold everything the generator learnt (weights, optimiser, schedule,
    seconds) so a resumed run ends where an uninterrupted one does.
    """

    kd_steps: int = 1  # student steps per generator update
    seconds: float = 0.0  # time spent in sample() and update() (the record's synthesis seconds)

    @abstractmethod
    def sample(self, batch_size: int, step: int) -> tuple[Tensor, Tensor]:
        """A fresh batch for student step ``step``: normalised images (B, C, S, S) on the device and labels (B,),
        −1 where the method has no target class for an image (allowed only when ``distill.ce_weight`` is 0).
        ``batch_size`` is the global batch: under ``torchrun`` (``BuildContext.dist``) return this rank's slice of
        it, (B/W, C, S, S), so the ranks' slices together are the single-process batch."""

    @abstractmethod
    def update(self, student: nn.Module, step: int) -> dict[str, float]:
        """Train the generator (its own optimiser) before student step ``step``; returns scalars for the log."""


OFFLINE, POOL, IN_LOOP, REAL_DATA = "offline", "pool", "in_loop", "real_data"
SHAPES: tuple[str, ...] = (OFFLINE, POOL, IN_LOOP, REAL_DATA)  # see the module docstring


class Method:
    """Base class of every DFKD method. Subclasses set ``Config``, ``card``, ``shape`` and implement the builders."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    card: ClassVar[MethodCard]
    shape: ClassVar[str] = OFFLINE  # one of SHAPES: how synthesis and distillation interleave

    # --set overrides that make the method take seconds on digits with tiny models: the contract tests
    # (tests/test_method_contract.py) run every registered method, plug-ins included, with these
    smoke: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def smoke_overrides(cls) -> tuple[str, ...]:
        """``--set`` items for the contract tests' seconds-long runs (``smoke``)."""
        return cls.smoke

    @classmethod
    def stores_images(cls) -> bool:
        """Offline and pool methods keep their synthetic set in a store; in-loop and real-data ones do not."""
        return cls.shape in (OFFLINE, POOL)

    def __init__(self, config: Any = None, **overrides: Any):
        if config is None:
            config = from_dict(self.Config, overrides, prefix=f"{self.name}.")
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer | None:
        raise NotImplementedError(f"{type(self).__name__} must implement build_synthesizer")

    def build_distiller(self, ctx: BuildContext) -> Distiller:
        return KDDistiller(ctx.teacher, ctx.distill)

    def kd_steps_per_epoch(self) -> int | None:
        """Online methods: optimiser steps per epoch on the pool; None = one pass over the data."""
        return None

    # -- budget shape: how the method's config spends images and student steps ---------------------
    @classmethod
    def budget(cls, config: Any, num_classes: int, distill: DistillConfig) -> Budget:
        """The images and student steps ``config`` spends. Default: an offline store of ``images_per_class``."""
        if cls.shape == REAL_DATA:
            return Budget(images=None, kd_steps=None)
        per_class = getattr(config, "images_per_class", None)
        if per_class is None:
            raise NotImplementedError(
                f"{cls.name} does not say how it spends a budget: implement {cls.__name__}.budget and "
                "budget_overrides, or run it with --protocol custom"
            )
        images = per_class * num_classes
        return Budget(images=images, kd_steps=offline_kd_steps(images, distill))

    @classmethod
    def budget_overrides(
        cls, config: Any, images_per_class: int, num_classes: int, distill: DistillConfig
    ) -> dict[str, Any]:
        """Config fields that make the method spend ``images_per_class`` images per class, at the student
        steps of ``distill`` (the ``matched`` protocol). Default: set ``images_per_class``."""
        if cls.shape == REAL_DATA:
            return {}
        if not hasattr(config, "images_per_class"):
            cls.budget(config, num_classes, distill)  # raises the NotImplementedError that says what to do
        return {"images_per_class": images_per_class}

    def store_depends_on_student(self) -> bool:
        """Pool stores depend on the student and are not shared between students."""
        return self.shape == POOL

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
