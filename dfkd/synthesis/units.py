"""Synthesis units: the independently generated pieces of a synthetic set, and their seeds.

A unit (e.g. one class × one trajectory batch) carries its own seed derived from (run seed, unit id), so the same
unit gives the same images whoever generates it, in whatever order, with however many processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SynthesisUnit:
    """One independently generated piece of the synthetic set."""

    id: str  # stable name, also the shard name: "c0003-b0007"
    index: int  # position in the plan (online methods: the epoch)
    seed: int  # derived from (run seed, id): same unit → same images, whoever generates it
    label: int | None = None  # the class, when the unit is single-class
    size: int = 0  # images to generate (before any filtering)
    info: dict[str, Any] = field(default_factory=dict)  # method-specific (e.g. trajectory numbers)


def unit_seed(run_seed: int, unit_id: str) -> int:
    """A 63-bit seed from (run seed, unit id), independent of generation order and process count."""
    digest = hashlib.sha256(f"{run_seed}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def balanced_units(num_classes: int, per_class: int, batch_size: int, run_seed: int) -> list[SynthesisUnit]:
    """Units of ≤ ``batch_size`` images of one class each, ``per_class`` images per class."""
    units = []
    for c in range(num_classes):
        for b, start in enumerate(range(0, per_class, batch_size)):
            uid = f"c{c:04d}-b{b:04d}"
            size = min(batch_size, per_class - start)
            units.append(SynthesisUnit(uid, len(units), unit_seed(run_seed, uid), label=c, size=size))
    return units
