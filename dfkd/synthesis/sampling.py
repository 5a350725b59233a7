"""Small primitives shared by the diffusion DFKD methods (unit plans, teacher view, backend cache)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from dfkd.synthesis.losses import resize_for_teacher
from dfkd.synthesis.units import SynthesisUnit, unit_seed

_BACKENDS: dict[tuple, Any] = {}


def even_batches(total: int, batch_size: int) -> list[int]:
    """Split ``total`` into near-equal batches (sizes differ by ≤ 1) of at most ``batch_size``, never of 1.

    ``even_batches(10, 4) == [4, 3, 3]`` rather than [4, 4, 2]. A batch of one latent would make Latent
    CutMix a no-op and the BN statistics degenerate, so while total ≥ 2 there are at most total // 2
    batches: ``even_batches(3, 2) == [3]`` (one over ``batch_size`` rather than a batch of 1).
    """
    if total <= 0:
        return []
    n = max(1, min(math.ceil(total / batch_size), total // 2))
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
