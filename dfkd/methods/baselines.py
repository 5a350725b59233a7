"""The two bounds every DFKD table needs: KD on real data (upper) and on Gaussian noise (lower).

Both distil with plain KD (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network",
arXiv 1503.02531): L = KL(softmax(t/T) ‖ softmax(s/T))·T².
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dfkd.methods.base import (
    REAL_DATA,
    BuildContext,
    Method,
    MethodCard,
    SynthesisOutput,
    SynthesisUnit,
    Synthesizer,
    balanced_units,
)


class RealKD(Method):
    """KD on the real training split: the upper-bound row (the one method that reads training data)."""

    @dataclass(frozen=True)
    class Config:
        pass

    card = MethodCard(
        title="Distilling the Knowledge in a Neural Network",
        authors="Hinton, Vinyals, Dean",
        year=2015,
        arxiv="1503.02531",
        summary="Plain KD on the real training images: what a data-free method tries to approach.",
    )
    shape = REAL_DATA

    def build_synthesizer(self, ctx: BuildContext) -> None:
        return None


class NoiseKD(Method):
    """KD on i.i.d. Gaussian-noise images: the lower-bound row (no inversion, no generator)."""

    @dataclass(frozen=True)
    class Config:
        images_per_class: int = 500  # noise images labelled with each class (labels only balance the store)
        batch_size: int = 256  # images per synthesis unit
        mean: float = 0.5  # pixel mean in [0, 1] space
        std: float = 0.25  # pixel std; values are clipped to [0, 1]

    card = MethodCard(
        title="Gaussian-noise KD (lower bound)",
        authors="dfkd-bench",
        year=2026,
        summary="Distil on N(mean, std²) pixel noise clipped to [0, 1]: the floor any DFKD method must beat.",
    )

    smoke = ("images_per_class=4", "batch_size=4")

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        return _NoiseSynthesizer(self.config, ctx)


class _NoiseSynthesizer(Synthesizer):
    def __init__(self, cfg: NoiseKD.Config, ctx: BuildContext):
        self.cfg, self.spec, self.seed = cfg, ctx.spec, ctx.seed

    def plan(self) -> list[SynthesisUnit]:
        return balanced_units(self.spec.num_classes, self.cfg.images_per_class, self.cfg.batch_size, self.seed)

    def generate(self, unit: SynthesisUnit, student: nn.Module | None = None) -> SynthesisOutput:
        g = torch.Generator().manual_seed(unit.seed)
        s = self.spec.input_size
        x = torch.randn(unit.size, 3, s, s, generator=g) * self.cfg.std + self.cfg.mean  # (N, 3, S, S)
        labels = torch.full((unit.size,), unit.label, dtype=torch.long)
        return SynthesisOutput(images=x.clamp(0, 1), labels=labels)

    def identity(self) -> dict:
        return {"input_size": self.spec.input_size}
