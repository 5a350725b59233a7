"""Data sets from where researchers keep them, named by a prefix instead of being registered:

``imagefolder:PATH``
    ``PATH/train/<class>/<image>`` and ``PATH/test/<class>/<image>`` (``val/`` is accepted for ``test/``). Classes
    are the sorted folder names of ``train/``, or the lines of ``PATH/classes.txt`` when it exists (folders then
    name a class by its name or index). ``bench synth export``'s layout (``<index>_<name>/``) is read as the index.
``torchvision:NAME``
    a torchvision data set class by name (``torchvision:SVHN``, ``torchvision:FashionMNIST``, ``torchvision:STL10``),
    under ``--data-root``, downloaded by torchvision when online; its ``train=`` or ``split=`` argument is found
    from the class's signature, its classes from the class's ``classes`` attribute.
``hf:NAME``
    a Hugging Face ``datasets`` data set: a Hub id (``hf:uoft-cs/cifar10``) or a folder written by
    ``save_to_disk`` (``hf:/data/my-set``), splits ``train`` and ``test`` (or ``validation``), an image column
    (``image``/``img``) and a ``ClassLabel`` column (``label``/``labels``/``fine_label``). Needs ``pip install
    "dfkd-bench[hf]"``.

The geometry follows the images: a data set whose first training image is at most 64 pixels on its shorter side
is treated like CIFAR (input 32, RandomCrop with padding + flip; default teacher/student resnet34 → resnet18), a
larger one like ImageNet (input 224, RandomResizedCrop + flip, resize 256 + centre crop 224; torchvision
ResNet-50 → ResNet-18); normalisation is ImageNet's. The spec's ``name`` is the key itself, so a record says
where its data came from; file names made from it replace ``/`` (``dfkd.paths.safe_name``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dfkd.datasets.base import DatasetSpec
from dfkd.datasets.shifted import EXPORT_FOLDER
from dfkd.errors import UserError, one_line

PREFIXES = ("imagefolder", "torchvision", "hf")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_SPLITS = {"train": ("train",), "test": ("test", "val", "validation")}


def is_external(name: str) -> bool:
    return name.split(":", 1)[0] in PREFIXES and ":" in name


@dataclass(frozen=True)
class ExternalSpec(DatasetSpec):
    """A data set named by ``imagefolder:`` / ``torchvision:`` / ``hf:`` (see the module docstring)."""

    kind: str = "imagefolder"
    location: str = ""  # the PATH or NAME after the prefix

    def _small(self) -> bool:
        return self.input_size <= 64

    def _train_geometry(self) -> list[Callable]:
        from torchvision.transforms import v2

        s = self.input_size
        if self._small():
            fit = [v2.Resize(s, antialias=True), v2.CenterCrop(s)]
            return [*fit, v2.RandomCrop(s, padding=s // 8), v2.RandomHorizontalFlip()]
        return [v2.RandomResizedCrop(s, antialias=True), v2.RandomHorizontalFlip()]

    def _test_geometry(self) -> list[Callable]:
        from torchvision.transforms import v2

        s = self.input_size
        return [v2.Resize(s if self._small() else round(s * 256 / 224), antialias=True), v2.CenterCrop(s)]

    def _load(self, split: str, root: Path, transform: Callable | None, download: bool) -> torch.utils.data.Dataset:
        if self.kind == "imagefolder":
            from dfkd.datasets.shifted import ImageFiles

            return ImageFiles(_folder_samples(Path(self.location), split, self.class_names), transform)
        if self.kind == "torchvision":
            return _Mapped(_torchvision(self.location, split, root, download), transform)
        return _Mapped(_HFRows(_hf_split(self.location, split)), transform)


class _Mapped(torch.utils.data.Dataset):
    """``(image, label)`` items of ``base`` with ``transform`` applied to the image (PIL RGB)."""

    def __init__(self, base: Any, transform: Callable | None):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img, y = self.base[i]
        img = img.convert("RGB") if hasattr(img, "convert") else img
        return (self.transform(img) if self.transform is not None else img), int(y)


# -- building the spec ------------------------------------------------------------------------------------------
def external_spec(key: str) -> ExternalSpec:
    """The spec of ``key`` (``imagefolder:…``, ``torchvision:…``, ``hf:…``); reads what it needs to know the classes
    and the image size (the training split's folder names and first image, or the data set's metadata)."""
    kind, location = key.split(":", 1)
    if not location:
        raise UserError(f"data set {key!r} names nothing after '{kind}:'; e.g. {kind}:{_EXAMPLE[kind]}")
    if kind == "imagefolder":
        classes, first = _folder_classes(Path(location).expanduser())
    elif kind == "torchvision":
        from dfkd.paths import data_dir

        base = _torchvision(location, "train", data_dir(), download=True)
        classes, first = tuple(str(c) for c in getattr(base, "classes", ())), base[0][0]
        if not classes:
            raise UserError(f"torchvision's {location} has no `classes` attribute: use imagefolder: or hf: instead")
    else:
        train = _hf_split(location, "train")
        classes, first = tuple(train.features[_label_column(train, location)].names), _HFRows(train)[0][0]
    size = min(first.size) if hasattr(first, "size") and not callable(first.size) else min(first.shape[-2:])
    small = size <= 64
    return ExternalSpec(
        name=key,
        num_classes=len(classes),
        class_names=classes,
        input_size=32 if small else 224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        default_teacher="resnet34" if small else "torchvision/resnet50",
        default_student="resnet18" if small else "torchvision/resnet18",
        description=f"{kind} data set {location}",
        kind=kind,
        location=str(Path(location).expanduser()) if kind == "imagefolder" else location,
    )


_EXAMPLE = {"imagefolder": "/data/pets", "torchvision": "SVHN", "hf": "uoft-cs/cifar10"}


# -- imagefolder ------------------------------------------------------------------------------------------------
def _split_folder(root: Path, split: str) -> Path:
    for name in _SPLITS[split]:
        if (root / name).is_dir():
            return root / name
    raise UserError(
        f"{root} has no {' or '.join(_SPLITS[split])}/ folder: an imagefolder: data set is PATH/train/<class>/… "
        "and PATH/test/<class>/… (or val/)"
    )


def _folder_classes(root: Path) -> tuple[tuple[str, ...], Any]:
    from PIL import Image

    from dfkd.datasets.shifted import _images, _subdirs

    if not root.is_dir():
        raise UserError(f"imagefolder: {root} is not a folder; give PATH holding train/ and test/")
    train = _split_folder(root, "train")
    listed = root / "classes.txt"
    if listed.is_file():
        classes = tuple(line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip())
    else:
        folders = _subdirs(train)
        exported = [EXPORT_FOLDER.match(f) for f in folders]
        if folders and all(exported) and sorted(int(m.group(1)) for m in exported) == list(range(len(folders))):
            classes = tuple(m.group(2) for m in sorted(exported, key=lambda m: int(m.group(1))))
        else:
            classes = tuple(folders)
    if len(classes) < 2:
        raise UserError(f"{train} has {len(classes)} class folder(s); a classification data set needs at least 2")
    images = _images(train)
    if not images:
        raise UserError(f"{train} holds no images ({', '.join(_image_suffixes())})")
    with Image.open(images[0]) as img:
        return classes, img.copy()


def _image_suffixes() -> tuple[str, ...]:
    from dfkd.datasets.shifted import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def folder_label(name: str, class_names: tuple[str, ...]) -> int | None:
    """A class folder's label: a class name, an index, or ``bench synth export``'s ``<index>_<name>``."""
    if name in class_names:
        return class_names.index(name)
    if name.isdigit() and int(name) < len(class_names):
        return int(name)
    m = EXPORT_FOLDER.match(name)
    if m and int(m.group(1)) < len(class_names):
        return int(m.group(1))
    return None


def _folder_samples(root: Path, split: str, class_names: tuple[str, ...]) -> list[tuple[str, int]]:
    from dfkd.datasets.shifted import _images, _subdirs

    folder = _split_folder(root, split)
    samples = []
    for name in _subdirs(folder):
        label = folder_label(name, class_names)
        if label is None:
            raise UserError(f"{folder / name} is not a class of {root} (classes: {', '.join(class_names[:5])}, …)")
        samples += [(p, label) for p in _images(folder / name)]
    return samples


# -- torchvision ------------------------------------------------------------------------------------------------
def _torchvision(name: str, split: str, root: Path, download: bool) -> Any:
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not inspect.isclass(cls):
        from dfkd.errors import did_you_mean

        known = [n for n in dir(tvd) if inspect.isclass(getattr(tvd, n)) and not n.startswith("_")]
        raise UserError(f"torchvision has no data set {name!r}.{did_you_mean(name, known)}")
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {"root": str(root / "torchvision" / name)}
    if "train" in params:
        kwargs["train"] = split == "train"
    elif "split" in params:
        kwargs["split"] = "train" if split == "train" else "test"
    if "download" in params:
        kwargs["download"] = download
    try:
        return cls(**kwargs)
    except Exception as e:
        raise UserError(
            f"torchvision's {name} could not be loaded from {kwargs['root']} ({one_line(e, with_type=True)}): "
            "connect once to download it, or put its files there"
        ) from e


# -- Hugging Face datasets --------------------------------------------------------------------------------------
def _hf_split(name: str, split: str) -> Any:
    try:
        import datasets
    except ImportError as e:
        raise UserError('hf: data sets need the datasets package: pip install "dfkd-bench[hf]"') from e
    try:
        if Path(name).expanduser().is_dir():
            data = datasets.load_from_disk(str(Path(name).expanduser()))
        else:
            data = datasets.load_dataset(name)
    except Exception as e:
        raise UserError(
            f"hf:{name} could not be loaded ({one_line(e, with_type=True)}): a Hub id needs the network once (then "
            "the Hugging Face cache), a folder must be written by save_to_disk"
        ) from e
    if not isinstance(data, datasets.DatasetDict):
        raise UserError(f"hf:{name} is one split; save a DatasetDict with train and test splits")
    for candidate in _SPLITS[split]:
        if candidate in data:
            return data[candidate]
    raise UserError(f"hf:{name} has splits {', '.join(data)}; it needs {' or '.join(_SPLITS[split])}")


def _label_column(ds: Any, name: str) -> str:
    import datasets

    for column in ("label", "labels", "fine_label"):
        if isinstance(ds.features.get(column), datasets.ClassLabel):
            return column
    raise UserError(f"hf:{name} has no ClassLabel column (label, labels or fine_label): cast one with class names")


class _HFRows:
    """``(PIL image, label)`` rows of a Hugging Face split (the image and ClassLabel columns found by name)."""

    def __init__(self, ds: Any):
        self.ds = ds
        self.image = next((c for c in ("image", "img") if c in ds.features), None)
        if self.image is None:
            raise UserError(f"the Hugging Face data set has no image column (image or img): {list(ds.features)}")
        self.label = _label_column(ds, "")

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        row = self.ds[int(i)]
        return row[self.image], int(row[self.label])
