"""ImageNet-1k (ILSVRC2012) as WordNet-id folders.

Layout: ``root/imagenet/train/<wnid>/*.JPEG`` and ``root/imagenet/val/<wnid>/*.JPEG``; ``root`` may
also be the folder that holds ``train/`` and ``val/`` directly. The "test" split is ``val``.

Labels are the index of the folder's WordNet id among the 1000 sorted ImageNet-1k wnids (the order
every ImageNet classifier uses), not torchvision ``ImageFolder``'s index among the folders present:
a validation folder with only some classes is labelled correctly. Folders that are not ImageNet-1k
wnids are an error.

Class names, wnids and glosses come from timm's bundled WordNet data (``timm.data.ImageNetInfo``),
imported on first use and cached. ``class_names`` is each class's first lemma ("tench", "goldfish");
two pairs share one ("crane": bird 134 / machine 517; "maillot": 638 / 639), so prompts should use
:meth:`ImageNetSpec.class_glosses`, which adds the synonyms and the WordNet definition.

Transforms (torchvision's reference recipe): train RandomResizedCrop(224) → flip; test Resize(256)
→ CenterCrop(224); both antialiased bilinear, then [0, 1] → Normalize.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfkd.datasets.base import DatasetSpec
from dfkd.errors import DatasetNotFoundError, UserError, one_line

_SPLIT_DIRS = {"train": "train", "test": "val"}


@dataclass(frozen=True)
class _ImageNetInfo:
    wnids: tuple[str, ...]  # sorted WordNet ids; index = label
    names: tuple[str, ...]  # first lemma: "tench"
    lemmas: tuple[str, ...]  # all lemmas: "tench, Tinca tinca"
    glosses: tuple[str, ...]  # lemmas and definition: "tench, Tinca tinca: freshwater dace-like game fish ..."


@functools.cache
def imagenet_info() -> _ImageNetInfo:
    """ImageNet-1k wnids, names and glosses from timm (imports timm; cached)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    wnids = tuple(info.label_names())
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError("timm's ImageNet-1k synset list is not the 1000 sorted wnids")
    lemmas = tuple(info.label_descriptions(detailed=False))
    return _ImageNetInfo(
        wnids=wnids,
        names=tuple(lemma.split(",")[0].strip() for lemma in lemmas),
        lemmas=lemmas,
        glosses=tuple(info.label_descriptions(detailed=True)),
    )


@dataclass(frozen=True)
class ImageNetSpec(DatasetSpec):
    """ImageNet-1k. Pass ``class_names=()`` to take the names from timm on first access."""

    folder: str = "imagenet"  # sub-folder of root holding train/ and val/

    def __post_init__(self) -> None:
        self._check_stats()  # class names are checked when first computed, not here (no timm at import)

    # ``class_names`` stays a dataclass field; this property stores what the constructor is given and,
    # when that is empty, answers with timm's names, so building the spec does not import timm.
    @property  # type: ignore[override]
    def class_names(self) -> tuple[str, ...]:
        given = self.__dict__.get("_class_names", ())
        return given or imagenet_info().names

    @class_names.setter
    def class_names(self, value: tuple[str, ...]) -> None:
        object.__setattr__(self, "_class_names", tuple(value))

    @property
    def wnids(self) -> tuple[str, ...]:
        """The 1000 WordNet ids in label order ("n01440764" is label 0)."""
        return imagenet_info().wnids

    def class_glosses(self, detailed: bool = True) -> tuple[str, ...]:
        """Per label: "tench, Tinca tinca: freshwater dace-like game fish ..." (``detailed=False``: lemmas only)."""
        info = imagenet_info()
        return info.glosses if detailed else info.lemmas

    def _train_geometry(self) -> list[Callable]:
        from torchvision.transforms import v2

        return [v2.RandomResizedCrop(self.input_size, antialias=True), v2.RandomHorizontalFlip(0.5)]

    def _test_geometry(self) -> list[Callable]:
        from torchvision.transforms import v2

        resize = round(self.input_size * 256 / 224)  # 256 for 224
        return [v2.Resize(resize, antialias=True), v2.CenterCrop(self.input_size)]

    def split_folder(self, split: str, root: Path) -> Path | None:
        """The existing folder of ``split`` under ``root/imagenet`` or ``root``, else None."""
        name = _SPLIT_DIRS[split]
        for base in (root / self.folder, root):
            if (base / name).is_dir():
                return base / name
        return None

    def _missing_message(self, split: str, root: Path, why: str = "") -> str:
        name = _SPLIT_DIRS[split]
        what = "validation set (50,000 images)" if split == "test" else "training set"
        return (
            f"ImageNet {what} not found{why}: put it at {root / self.folder / name}/<wnid>/*.JPEG, one folder per "
            f"WordNet id (n01440764/, n01443537/, ...; sort the flat ILSVRC2012 {name} images into them, e.g. with "
            f"the usual valprep.sh), or point --data-root DIR / $DFKD_DATA at the folder that holds imagenet/"
        )

    def _load(self, split: str, root: Path, transform: Callable | None, download: bool) -> Any:
        # ``download`` is ignored: ImageNet cannot be downloaded without an account.
        folder = self.split_folder(split, root)
        if folder is None:
            raise DatasetNotFoundError(self._missing_message(split, root))
        index = {w: i for i, w in enumerate(self.wnids)}
        subdirs = sorted(e.name for e in os.scandir(folder) if e.is_dir())
        if not subdirs:
            raise DatasetNotFoundError(self._missing_message(split, root, f" ({folder} has no class folders)"))
        bad = [d for d in subdirs if d not in index]
        if bad:
            shown = ", ".join(repr(d) for d in bad[:3]) + (", ..." if len(bad) > 3 else "")
            raise UserError(
                f"{folder} has {len(bad)} folder(s) that are not ImageNet-1k WordNet ids ({shown}); "
                f"expected one folder per wnid such as n01440764/"
            )
        from torchvision.datasets import ImageFolder

        try:
            ds = ImageFolder(str(folder), transform=transform, allow_empty=True)
        except (FileNotFoundError, OSError) as e:
            raise UserError(f"Cannot read ImageNet images in {folder}: {one_line(e)}") from e
        if not ds.samples:
            raise DatasetNotFoundError(self._missing_message(split, root, f" ({folder} has no images)"))
        # Relabel from ImageFolder's index among the folders present to the global ImageNet-1k index;
        # afterwards ds.classes[y] is the wnid of label y for every y.
        ds.samples = [(path, index[ds.classes[local]]) for path, local in ds.samples]
        ds.imgs = ds.samples
        ds.targets = [y for _, y in ds.samples]
        ds.classes = list(self.wnids)
        ds.class_to_idx = index
        return ds


IMAGENET = ImageNetSpec(
    name="imagenet",
    num_classes=1000,
    class_names=(),  # from timm on first access
    input_size=224,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    default_teacher="torchvision/resnet50",
    default_student="torchvision/resnet18",
    description="ImageNet-1k (ILSVRC2012): wnid folders under <data-root>/imagenet/{train,val}; not downloadable",
)
