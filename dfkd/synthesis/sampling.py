"""Small primitives shared by the diffusion DFKD methods (unit plans, teacher view, backend cache)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from dfkd.methods.base import SynthesisUnit, unit_seed
from dfkd.synthesis.losses import resize_for_teacher

_BACKENDS: dict[tuple, Any] = {}


def even_batches(total: int, batch_size: int) -> list[int]:
    """Split ``total`` into ceil(total / batch_size) near-equal batches (sizes differ by ≤ 1).

    ``even_batches(10, 4) == [4, 3, 3]`` rather than [4, 4, 2]: no batch of 1 appears while
    total ≥ 2, which Latent CutMix and the BN-statistics loss need.
    """
    if total <= 0:
        return []
    n = math.ceil(total / batch_size)
    base, extra = divmod(total, n)
    return [base + 1] * extra + [base] * (n - extra)


def trajectory_units(num_classes: int, per_class: int, batch_size: int, run_seed: int) -> list[SynthesisUnit]:
    """One unit per (class, batch of trajectories); ``info['first']`` numbers the batch's first trajectory."""
    units = []
    for c in range(num_classes):
        first = 0
        for b, size in enumerate(even_batches(per_class, batch_size)):
            uid = f"c{c:04d}-b{b:04d}"
            units.append(
                SynthesisUnit(uid, len(units), unit_seed(run_seed, uid), label=c, size=size, info={"first": first})
            )
            first += size
    return units


def teacher_view(images: Tensor, spec: Any) -> Tensor:
    """Decoded images in [0, 1] (B, 3, H, W) → the teacher's input: bicubic antialiased resize + normalise."""
    return spec.normalize(resize_for_teacher(images.float(), spec.input_size))  # (B, 3, S, S)


def get_backend(config: Any, device: torch.device) -> Any:
    """A :class:`DiffusionBackend` per (generator config, device), loaded once per process."""
    from dfkd.synthesis.diffusion import DiffusionBackend

    key = (config, str(device))
    if key not in _BACKENDS:
        _BACKENDS[key] = DiffusionBackend.from_config(config, device)
    return _BACKENDS[key]
