"""``digits``: the embedded default data set, scikit-learn's bundled handwritten digits as 32×32 RGB.

``sklearn.datasets.load_digits`` ships with scikit-learn (no download): 1797 8×8 images with
values 0..16, 10 classes. Made teacher-ready once per process (cached):

1. scaled to 0..255 (× 255/16), as float;
2. upsampled 8 → 32 with bilinear interpolation (``align_corners=False``). Bilinear because nearest
   gives 4×4 blocks and bicubic overshoots (ringing around strokes); upsampling needs no
   antialiasing;
3. rounded to uint8 and replicated to 3 channels: (1797, 3, 32, 32).

Split: ``train_test_split(test_size=0.25, random_state=0, stratify=labels)`` → 1347 train / 450
test images (per class 131..137 train, 43..46 test); each split keeps the original image order.
``root`` and ``download`` are ignored.

Normalisation: the train split's per-channel mean/std of [0, 1] pixels (``_channel_stats()``;
a test checks the constants). Transforms: train RandomCrop(32, padding=2) → [0, 1] → Normalize
(no flip: digits are not mirror-symmetric); test [0, 1] → Normalize. Images of another size are
first resized to 32 (``ResizeIfNeeded``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from dfkd.datasets.base import DatasetSpec, ResizeIfNeeded

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZE = 32


@functools.cache
def _digits_splits() -> dict[str, tuple[Tensor, Tensor]]:
    """{"train": (images, labels), "test": ...}: uint8 (N, 3, 32, 32) and int64 (N,). Imports sklearn; cached."""
    import numpy as np
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images).float()[:, None] * (255.0 / 16.0)  # (1797, 1, 8, 8) in [0, 255]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)  # (1797, 1, 32, 32)
    x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()  # (1797, 3, 32, 32)
    y = torch.from_numpy(digits.target).long()  # (1797,)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=0.25, random_state=0, stratify=digits.target)
    out = {}
    for split, idx in (("train", train_idx), ("test", test_idx)):
        idx = torch.from_numpy(np.sort(idx))
        out[split] = (x[idx], y[idx])
    return out


def _channel_stats() -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and (population) std of the train split's [0, 1] pixels."""
    x = _digits_splits()["train"][0].double() / 255  # (1347, 3, 32, 32)
    mean = x.mean(dim=(0, 2, 3))  # (3,)
    std = x.std(dim=(0, 2, 3), unbiased=False)  # (3,)
    return tuple(mean.tolist()), tuple(std.tolist())  # type: ignore[return-value]


class DigitsDataset(Dataset):
    """Map-style dataset of ``(transform(image), label)``; image: uint8 (3, 32, 32) tensor.

    ``data`` (N, 3, 32, 32) uint8 and ``targets`` (list of int) are shared with other loads: read-only.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable | None = None):
        self.data = images  # (N, 3, 32, 32) uint8
        self.targets = labels.tolist()
        self.classes = list(DIGIT_NAMES)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        x = self.data[i]  # (3, 32, 32) uint8
        return (self.transform(x) if self.transform is not None else x), self.targets[i]


@dataclass(frozen=True)
class DigitsSpec(DatasetSpec):
    """scikit-learn's 8×8 digits as 32×32 RGB (see the module docstring)."""

    def _train_geometry(self) -> list[Callable]:
        from torchvision.transforms import v2

        return [ResizeIfNeeded(self.input_size), v2.RandomCrop(self.input_size, padding=2)]

    def _test_geometry(self) -> list[Callable]:
        return [ResizeIfNeeded(self.input_size)]

    def _load(self, split: str, root: Path, transform: Callable | None, download: bool) -> DigitsDataset:
        images, labels = _digits_splits()[split]
        return DigitsDataset(images, labels, transform)


DIGITS = DigitsSpec(
    name="digits",
    num_classes=10,
    class_names=DIGIT_NAMES,
    input_size=SIZE,
    mean=(0.3052, 0.3052, 0.3052),  # _channel_stats() of the train split
    std=(0.3236, 0.3236, 0.3236),
    default_teacher="resnet20",
    default_student="resnet8",
    description="scikit-learn's bundled 8x8 handwritten digits as 32x32 RGB: 1347 train / 450 test, no download",
)
