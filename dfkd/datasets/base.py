"""``DatasetSpec``: everything the suite needs to know about a data set, with or without its files.

A spec is a frozen dataclass instance (``dfkd.datasets.cifar:CIFAR10``) that knows its classes, input
size, normalisation and default teacher/student, builds its transforms, and loads its real splits.
Methods only ever see specs; the real data is loaded for teacher training and evaluation.

Transforms are ``torchvision.transforms.v2`` pipelines. Each accepts a PIL image or an image tensor
(uint8 (3, H, W), or float in [0, 1]; grayscale is made RGB) and returns a normalised float32
(3, S, S) plain tensor, S = ``input_size``. torchvision is imported only when a transform or a
split is built, so ``get_dataset(name)`` stays cheap.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dfkd.errors import UserError, did_you_mean
from dfkd.paths import data_dir

SPLITS = ("train", "test")
_SPLIT_ALIASES = {"val": "test"}  # ImageNet calls its test split "val"
_RAISE: Any = object()  # class_index without a default: unknown keys raise


@dataclass(frozen=True)
class DatasetSpec:
    """A data set's description; subclasses per family implement :meth:`_load` and the geometry."""

    name: str  # registry name, e.g. "cifar10"
    num_classes: int
    class_names: tuple[str, ...] = field(repr=False, compare=False)  # human-readable, index = label
    input_size: int  # side of the teacher/student input: 32 (cifar*, digits), 224 (imagenet)
    mean: tuple[float, float, float]  # per-channel normalisation of [0, 1] images
    std: tuple[float, float, float]
    default_teacher: str  # model registry name, e.g. "resnet34"
    default_student: str  # e.g. "resnet18"
    description: str = ""

    def __post_init__(self) -> None:
        self._check_stats()
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")

    def _check_stats(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"{self.name}: mean and std need 3 entries each, std > 0")

    # -- names ------------------------------------------------------------------------------------
    def class_glosses(self, detailed: bool = True) -> tuple[str, ...]:
        """Class names for prompts: ``class_names`` with ``_`` as spaces ("aquarium fish").

        Families with richer descriptions override this (ImageNet: WordNet lemmas and definitions).
        """
        return tuple(n.replace("_", " ") for n in self.class_names)

    def class_index(self, key: int | str, where: str = "", *, default: Any = _RAISE) -> int:
        """A class given as an index (``134``, ``"134"``), a name or, for families with WordNet ids (ImageNet), a wnid
        (``"n01440764"``) → its label. The one resolver of class keys: prompt files, ``--classes``, class folders.

        Names match exactly first, then ignoring case with ``_``, ``-`` and runs of spaces alike (``"maple tree"`` is
        ``maple_tree``). Raises ``UserError`` (prefixed by ``where``) for an index out of range, a name several
        classes share (ImageNet's "crane": use the index) and an unknown name (with the closest names); with
        ``default`` given, returns it instead (no suggestions computed: a folder of 1000 unknown names stays fast).
        """
        names = tuple(self.class_names)
        k = len(names)
        prefix = f"{where}: " if where else ""
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            if default is not _RAISE:
                return default
            raise UserError(f"{prefix}a class must be a name or an index, not {key!r}")
        text = str(key).strip()
        if isinstance(key, int) or text.isdigit():
            index = int(text)
            if 0 <= index < k:
                return index
            if default is not _RAISE:
                return default
            raise UserError(f"{prefix}class index {index} is out of range for {self.name} (0..{k - 1})")
        exact, normalised = _class_lookup(names)
        matches = exact.get(text) or normalised.get(_norm_class(text)) or ()
        wnids = getattr(self, "wnids", None)  # ImageNet's WordNet ids, index = label
        if not matches and wnids is not None and len(wnids) == k and re.fullmatch(r"n\d{8}", text):
            matches = [i for i, w in enumerate(wnids) if w == text]
        if len(matches) == 1:
            return matches[0]
        if default is not _RAISE:
            return default
        if matches:
            listed = " and ".join(str(i) for i in matches)
            raise UserError(
                f"{prefix}class name {text!r} is ambiguous in {self.name} (classes {listed}); use the index"
            )
        normed = {_norm_class(n): n for n in names}
        hint = did_you_mean(_norm_class(text), normed, n=3, show=normed.__getitem__)
        raise UserError(
            f"{prefix}unknown class {text!r} for {self.name}.{hint} Use a class name or an index 0..{k - 1} "
            f"(`bench prompts --dataset {self.name}` lists them)"
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary for ``bench ls datasets``."""
        names = self.class_names
        preview = ", ".join(names[:5]) + (f", … ({len(names)})" if len(names) > 5 else "")
        return {
            "name": self.name,
            "description": self.description,
            "num_classes": self.num_classes,
            "classes": preview,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "default_teacher": self.default_teacher,
            "default_student": self.default_student,
        }

    # -- normalisation ----------------------------------------------------------------------------
    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (3, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (3, 1, 1)
        return mean, std

    def normalize(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) or (3, H, W) float in [0, 1] → normalised; differentiable, follows x's device/dtype."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`normalize` (no clamping)."""
        mean, std = self._stats(x)
        return x * std + mean

    # -- transforms -------------------------------------------------------------------------------
    def _train_geometry(self) -> list[Callable]:
        """Augmentations on the uint8 image tensor, ending at (3, S, S)."""
        raise NotImplementedError

    def _test_geometry(self) -> list[Callable]:
        """Deterministic resizing/cropping on the uint8 image tensor, ending at (3, S, S)."""
        raise NotImplementedError

    def _pipeline(self, geometry: list[Callable]) -> Callable:
        from torchvision.transforms import v2

        return v2.Compose(
            [
                v2.ToImage(),  # PIL → uint8 (C, H, W) tv_tensors.Image; tensors are wrapped as they are
                v2.RGB(),  # grayscale → 3 channels
                *geometry,
                v2.ToDtype(torch.float32, scale=True),  # uint8 → [0, 1]; float input is kept
                v2.Normalize(list(self.mean), list(self.std)),
                v2.ToPureTensor(),  # plain Tensor, so default_collate gives plain batches
            ]
        )

    def train_transform(self) -> Callable:
        """Random augmentation + normalisation: PIL or image tensor → float32 (3, S, S)."""
        return self._pipeline(self._train_geometry())

    def test_transform(self) -> Callable:
        """Deterministic: PIL or image tensor → float32 (3, S, S)."""
        return self._pipeline(self._test_geometry())

    # -- loading ----------------------------------------------------------------------------------
    def load(
        self,
        split: str,
        root: str | Path | None = None,
        *,
        transform: Callable | str | None = "default",
        download: bool = True,
    ) -> torch.utils.data.Dataset:
        """The real ``split`` ("train" or "test"; "val" is an alias of "test") as a map-style dataset.

        Items are ``(x, y)`` with ``y`` an int. ``root`` defaults to ``dfkd.paths.data_dir()``
        (``--data-root`` / ``$DFKD_DATA``). ``transform="default"`` applies the split's transform,
        ``None`` gives the raw image (PIL or uint8 (3, S, S) tensor, as the data set stores it), and a
        callable is applied as is. A missing data set raises ``DatasetNotFoundError`` (one line).
        """
        split = _SPLIT_ALIASES.get(split, split)
        if split not in SPLITS:
            raise UserError(f"Unknown split {split!r} for {self.name}; use one of {', '.join(SPLITS)}")
        if isinstance(transform, str):
            if transform != "default":
                raise UserError(f"transform must be 'default', None or a callable, not {transform!r}")
            transform = self.train_transform() if split == "train" else self.test_transform()
        root = Path(root).expanduser() if root is not None else data_dir()
        return self._load(split, root, transform, download)

    def _load(self, split: str, root: Path, transform: Callable | None, download: bool) -> torch.utils.data.Dataset:
        raise NotImplementedError


def _norm_class(name: str) -> str:
    """A class name for matching: lower case, ``_``, ``-`` and whitespace runs as one space."""
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


@functools.lru_cache(maxsize=8)
def _class_lookup(names: tuple[str, ...]) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """({name: labels}, {normalised name: labels}) of a data set's class names, built once per name list (a folder
    of 1000 ImageNet class folders resolves each in O(1))."""
    exact: dict[str, tuple[int, ...]] = {}
    normalised: dict[str, tuple[int, ...]] = {}
    for i, n in enumerate(names):
        exact[n] = (*exact.get(n, ()), i)
        key = _norm_class(n)
        normalised[key] = (*normalised.get(key, ()), i)
    return exact, normalised


class ResizeIfNeeded:
    """Resize an image tensor to ``size`` × ``size`` unless it already is (bicubic, antialiased).

    For images stored at another size (a synthetic 512² image fed to a 32² teacher). Non-square
    images are resized on the shorter side and centre-cropped, so the aspect ratio is kept.
    Pickleable, so it works in DataLoader workers.
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Any) -> Any:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        if tuple(img.shape[-2:]) == (self.size, self.size):
            return img
        img = F.resize(img, [self.size], interpolation=InterpolationMode.BICUBIC, antialias=True)  # shorter side
        return F.center_crop(img, [self.size, self.size])  # (C, size, size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, interpolation=bicubic, antialias=True)"
