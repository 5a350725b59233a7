"""Shifted test sets for domain-generalisation evaluation: ImageNet-R/-A/-Sketch/-V2, CIFAR-10/100-C, folders.

A run's config names them in ``dg: {key: path}``; :func:`load_shifted` turns one entry into named
evaluation sets and ``dfkd.benchmark.dg.evaluate_shifted`` scores a student on all of them.

**Keys.** ``[kind:]name[@severity]``, e.g. ``imagenet-r``, ``ImageNet-Sketch``, ``folder:my-photos``,
``cifar10-c@5``. Without ``kind:``, the kind is inferred from the name: the name (lower case, ``_`` read
as ``-``) equals a kind, or starts with a kind followed by ``-`` (``imagenet-v2-matched-frequency`` is
``imagenet-v2``), or equals a kind with the hyphens dropped (``imagenetv2``). ``@k`` (corruption kinds
only) keeps severity ``k`` and makes the set's name ``<name>-s<k>``. Names are lower-cased and may
hold letters, digits, ``.``, ``_`` and ``-``, because they become leaderboard columns (``dg/<name>/...``).

**Kinds and layouts** (``path`` may also be a folder holding exactly one sub-folder with the layout,
as archives extract, e.g. ``/data/imagenet-r/imagenet-r/``):

=================== ======================================================================================
``imagenet-v2``     ``path/<class>/*.jpeg`` with ``<class>`` = "0".."999" (the official layout: class
                    indices) or WordNet ids. Needs an ImageNet-1k spec.
``imagenet-sketch`` ``path/<wnid>/*.JPEG`` (class indices are accepted too). Needs an ImageNet-1k spec.
``imagenet-r``      ``path/<wnid>/*.jpg``, at most the 200 ImageNet-R classes. Needs an ImageNet-1k spec.
``imagenet-a``      ``path/<wnid>/*.jpg``, at most the 200 ImageNet-A classes. Needs an ImageNet-1k spec.
``cifar10-c``       Hendrycks' layout ``path/<corruption>.npy`` (N×32×32×3 uint8: 5 severities one after
``cifar100-c``      the other, severity 1 first, N/5 test images each) + ``path/labels.npy`` (N labels,
                    or N/5 repeated per severity); or corruption folders as for ``folder-c``. Needs the
                    CIFAR-10 / CIFAR-100 spec (same class names).
``folder``          ``path/<class>/<image>``, ``<class>`` a class index, a class name of the spec
                    ("airplane"; ``_``, ``-`` and spaces alike, any case) or, for ImageNet, a wnid.
``folder-c``        ``path/<corruption>/<class>/<image>`` or ``path/<corruption>/<severity 1..5>/<class>/
                    <image>`` (ImageNet-C style), ``<class>`` as for ``folder``; or the ``.npy`` layout.
=================== ======================================================================================

**Labels** are always in the spec's label space: ImageNet folders by the global index of their wnid
(as ``dfkd.datasets.imagenet``), or their integer name; CIFAR-C by ``labels.npy``.

**Returned sets.** :func:`load_shifted` returns ``{name: ShiftedSet}``. Image-folder kinds give one set
named ``name``; corruption kinds give one set per corruption, named ``<name>/<corruption>`` (file or
folder name, lower case), holding all severities (or the one asked for) with each item's severity in
``ShiftedSet.severities``. Items are ``(x, y)``: the spec's **test** transform applied, ``y`` an int.

**Class subsets.** ImageNet-R and -A cover 200 of the 1000 classes; the standard protocol takes the
argmax over those 200 logits only. Their sets carry ``class_subset`` (the 200 global indices, sorted),
read from the subset files timm ships (``timm/data/_info/imagenet_{r,a}_synsets.txt``); if those are
missing, the classes present in the folder are the subset. Every other set has ``class_subset=None``.

Images are read with PIL and converted to RGB; ``.npy`` arrays are memory-mapped (opened lazily, so
DataLoader workers do not copy them). Nothing here downloads: a missing set raises
``DatasetNotFoundError`` with the expected layout and where the data set is published.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dfkd.datasets.base import DatasetSpec
from dfkd.errors import DatasetNotFoundError, UserError, did_you_mean, one_line

EXPORT_FOLDER = re.compile(r"^(\d+)_(.+)$")  # bench synth export's class folders: <label:03d>_<class name>
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
NUM_SEVERITIES = 5  # Hendrycks & Dietterich (2019): severities 1..5

# The 15 benchmark corruptions of CIFAR-10-C / ImageNet-C, and the 4 extra ones Hendrycks & Dietterich
# hold out for validation; means over corruptions leave the extra ones out (see ``benchmark_corruptions``).
BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")


@dataclass(frozen=True)
class _Kind:
    title: str  # for messages
    layout: str  # expected layout, for the missing-data message
    source: str  # where the data set is published (no URL promised)
    imagenet: bool = False  # needs an ImageNet-1k spec
    subset_file: str | None = None  # timm's packaged wnid list of a 200-class subset
    cifar: int | None = None  # needs CIFAR-<n> (10 or 100)
    corruptions: bool = False  # one set per corruption, with severities


_CORRUPTION_LAYOUT = (
    "PATH/<corruption>.npy (N x 32 x 32 x 3 uint8, 5 severities of N/5 images, severity 1 first) and "
    "PATH/labels.npy, or folders PATH/<corruption>/[<severity>/]<class>/<image>"
)
KINDS: dict[str, _Kind] = {
    "imagenet-r": _Kind(
        "ImageNet-R",
        "PATH/<wnid>/*.jpg, one folder per ImageNet-R class (n01443537/, ...)",
        "imagenet-r.tar from the ImageNet-R GitHub repository (hendrycks/imagenet-r)",
        imagenet=True,
        subset_file="imagenet_r_synsets.txt",
    ),
    "imagenet-a": _Kind(
        "ImageNet-A",
        "PATH/<wnid>/*.jpg, one folder per ImageNet-A class (n01498041/, ...)",
        "imagenet-a.tar from the natural adversarial examples GitHub repository (hendrycks/natural-adv-examples)",
        imagenet=True,
        subset_file="imagenet_a_synsets.txt",
    ),
    "imagenet-sketch": _Kind(
        "ImageNet-Sketch",
        "PATH/<wnid>/*.JPEG, one folder per ImageNet-1k class (n01440764/, ...)",
        "the ImageNet-Sketch archive linked from its GitHub repository (HaohanWang/ImageNet-Sketch)",
        imagenet=True,
    ),
    "imagenet-v2": _Kind(
        "ImageNet-V2",
        "PATH/<class>/*.jpeg with folders 0/ .. 999/ (class indices, the official layout) or wnids",
        "a tarball (usually matched-frequency) linked from the ImageNetV2 GitHub repository (modestyachts/ImageNetV2)",
        imagenet=True,
    ),
    "cifar10-c": _Kind(
        "CIFAR-10-C",
        _CORRUPTION_LAYOUT,
        "CIFAR-10-C.tar from Hendrycks & Dietterich's Zenodo archive (linked from github.com/hendrycks/robustness)",
        cifar=10,
        corruptions=True,
    ),
    "cifar100-c": _Kind(
        "CIFAR-100-C",
        _CORRUPTION_LAYOUT,
        "CIFAR-100-C.tar from Hendrycks & Dietterich's Zenodo archive (linked from github.com/hendrycks/robustness)",
        cifar=100,
        corruptions=True,
    ),
    "folder": _Kind(
        "image folder",
        "PATH/<class>/<image>, <class> a class index, class name or (ImageNet) wnid",
        "your own images",
    ),
    "folder-c": _Kind(
        "corruption folders",
        _CORRUPTION_LAYOUT.replace("32 x 32", "H x W"),
        "your own corrupted test images (e.g. made with Hendrycks' corruption code)",
        corruptions=True,
    ),
}

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


@dataclass
class ShiftedSet:
    """One evaluation set: items ``(x, y)`` with the spec's test transform and global labels."""

    name: str  # metric name: "imagenet-r", "cifar10-c/gaussian_noise" (group/corruption for corruption kinds)
    dataset: Dataset  # map-style, items (float32 (3, S, S), int)
    class_subset: list[int] | None = None  # sorted labels the argmax runs over (ImageNet-R/-A); None = all
    severities: list[int] | None = None  # per item, 1..5 (corruption kinds); None otherwise

    @property
    def group(self) -> str:
        """The config entry's name: "cifar10-c" for "cifar10-c/fog"."""
        return self.name.split("/", 1)[0]

    @property
    def corruption(self) -> str | None:
        """ "fog" for "cifar10-c/fog"; None for sets that are not corruptions."""
        parts = self.name.split("/", 1)
        return parts[1] if len(parts) == 2 else None


@dataclass(frozen=True)
class DGKey:
    """A parsed ``dg`` config key ``[kind:]name[@severity]``."""

    kind: str  # one of KINDS
    name: str  # the metric name (lower case; "-s<k>" appended when a severity is given)
    severity: int | None = None


# -- keys -----------------------------------------------------------------------------------------
def _infer_kind(name: str) -> str | None:
    n = name.lower().replace("_", "-")
    for kind in sorted(KINDS, key=len, reverse=True):  # "folder-c" before "folder"
        if n == kind or n.startswith(kind + "-") or n.replace("-", "") == kind.replace("-", ""):
            return kind
    return None


def _kind_list() -> str:
    return ", ".join(KINDS)


def parse_key(key: str, severity: int | None = None) -> DGKey:
    """``"[kind:]name[@severity]"`` → :class:`DGKey`; ``severity`` (if given) must agree with ``@k``."""
    text = str(key).strip()
    kind: str | None
    if ":" in text:
        kind, _, text = (s.strip() for s in text.partition(":"))
        kind = kind.lower()
        if kind not in KINDS:
            hint = did_you_mean(kind, KINDS, n=3)
            raise UserError(f"Unknown shifted test set kind {kind!r} in dg key {key!r}.{hint} Kinds: {_kind_list()}")
    else:
        kind = None
    if "@" in text:
        text, _, level = text.rpartition("@")
        if not level.strip().isdigit():
            raise UserError(f"dg key {key!r}: '@' must be followed by a severity 1..{NUM_SEVERITIES}, e.g. cifar10-c@5")
        at = int(level)
        if severity is not None and severity != at:
            raise UserError(f"dg key {key!r} asks for severity {at} but severity={severity} was passed")
        severity = at
    name = text.strip().lower()
    if not _NAME.fullmatch(name):
        raise UserError(
            f"dg key {key!r}: the name must be letters, digits, '.', '_' or '-' (it becomes the column dg/<name>/top1)"
        )
    if kind is None:
        kind = _infer_kind(name)
        if kind is None:
            raise UserError(
                f"Cannot tell which kind of shifted test set dg key {key!r} is: name it after a kind "
                f"({_kind_list()}) or write 'KIND:{name}', e.g. 'folder:{name}'"
            )
    if severity is not None:
        if not KINDS[kind].corruptions:
            raise UserError(f"dg key {key!r}: a severity applies only to corruption sets (cifar10-c, ...), not {kind}")
        if not 1 <= severity <= NUM_SEVERITIES:
            raise UserError(f"dg key {key!r}: severity must be 1..{NUM_SEVERITIES}, not {severity}")
        name = f"{name}-s{severity}"
    return DGKey(kind=kind, name=name, severity=severity)


# -- datasets -------------------------------------------------------------------------------------
def _read_rgb(path: str) -> Any:
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")  # palette, CMYK and grayscale sketches → RGB


class ImageFiles(Dataset):
    """Images on disk with given labels: items ``(transform(PIL RGB image), label)``."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable | None):
        self.samples = list(samples)
        self.targets = [y for _, y in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, y = self.samples[i]
        img = _read_rgb(path)
        return (self.transform(img) if self.transform is not None else img), y


class NpyImages(Dataset):
    """Rows of an (N, H, W, 3) uint8 ``.npy`` file, memory-mapped on first access in each process.

    Items ``(transform(uint8 (3, H, W) tensor), label)`` for ``rows`` (indices into the file) and one
    label per row. The array is not pickled, so DataLoader workers each map the file themselves.
    """

    def __init__(self, path: str | Path, rows: Sequence[int], labels: Sequence[int], transform: Callable | None):
        self.path = str(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = [int(y) for y in labels]
        if len(self.targets) != len(self.rows):
            raise ValueError(f"{len(self.rows)} rows but {len(self.targets)} labels")
        self.transform = transform
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        img = torch.from_numpy(np.array(self._array[self.rows[i]])).permute(2, 0, 1)  # (H, W, 3) → (3, H, W)
        return (self.transform(img) if self.transform is not None else img), self.targets[i]


# -- folder scanning ------------------------------------------------------------------------------
def _subdirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _images(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def _folder_label(spec: DatasetSpec, name: str) -> int | None:
    """A class folder's label (``DatasetSpec.class_index``: index, wnid or class name; or ``bench synth export``'s
    ``<index>_<name>``), None when it names no class of ``spec`` or several (the caller lists those folders in one
    error)."""
    label = spec.class_index(name, default=None)
    exported = EXPORT_FOLDER.match(name)
    if label is None and exported and int(exported.group(1)) < spec.num_classes:
        label = int(exported.group(1))
    return label


def _unresolved_error(folder: Path, bad: list[str], spec: DatasetSpec) -> UserError:
    shown = ", ".join(repr(d) for d in bad[:3]) + (", ..." if len(bad) > 3 else "")
    what = "class indices 0.." + str(spec.num_classes - 1)
    what += ", WordNet ids" if getattr(spec, "wnids", None) is not None else ""
    return UserError(
        f"{folder} has {len(bad)} class folder(s) that are not {spec.name} classes ({shown}); "
        f"name class folders by {what} or {spec.name} class names (unambiguous ones)"
    )


def _labelled_images(folder: Path, spec: DatasetSpec) -> list[tuple[str, int]]:
    """``folder/<class>/**/<image>`` → (path, label) sorted by class folder then path."""
    classes = _subdirs(folder)
    labels = {c: _folder_label(spec, c) for c in classes}
    bad = [c for c, y in labels.items() if y is None]
    if bad:
        raise _unresolved_error(folder, bad, spec)
    samples = []
    for c in classes:
        samples += [(p, labels[c]) for p in _images(folder / c)]
    return samples


def _descend(folder: Path, spec: DatasetSpec) -> Path:
    """``folder`` itself, or its only sub-folder when that is not a class folder (an extracted archive)."""
    subdirs = _subdirs(folder)
    if len(subdirs) == 1 and _folder_label(spec, subdirs[0]) is None:
        inner = folder / subdirs[0]
        if not any(f.lower().endswith((*IMAGE_EXTENSIONS, ".npy")) for f in os.listdir(folder)):
            return inner
    return folder


# -- kinds ----------------------------------------------------------------------------------------
def _missing(kind: str, path: Path, why: str = "") -> DatasetNotFoundError:
    k = KINDS[kind]
    layout = k.layout.replace("PATH", str(path))
    return DatasetNotFoundError(f"{k.title} not found at {path}{why}: expected {layout}; get it from {k.source}")


def _check_spec(key: DGKey, spec: DatasetSpec) -> None:
    k = KINDS[key.kind]
    if k.imagenet and (spec.num_classes != 1000 or getattr(spec, "wnids", None) is None):
        raise UserError(
            f"{k.title} ({key.name}) needs an ImageNet-1k student, but the data set is {spec.name}; "
            f"use 'folder:{key.name}' for class folders of {spec.name}"
        )
    if k.cifar is not None:
        from dfkd.datasets.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES

        expected = CIFAR10_CLASSES if k.cifar == 10 else CIFAR100_CLASSES
        if tuple(spec.class_names) != expected:
            raise UserError(
                f"{k.title} ({key.name}) holds CIFAR-{k.cifar} classes, but the data set is {spec.name}; "
                f"use 'folder-c:{key.name}' for corruptions of {spec.name}"
            )


def class_subset_of(kind: str, spec: DatasetSpec, present: Sequence[int] = ()) -> list[int] | None:
    """The sorted global labels of a 200-class subset kind (ImageNet-R/-A), else None.

    Read from timm's packaged wnid list (``timm/data/_info/imagenet_{r,a}_synsets.txt``) and mapped
    through the spec's wnids; without that file, the labels ``present`` in the data.
    """
    subset_file = KINDS[kind].subset_file
    if subset_file is None:
        return None
    try:
        from importlib.resources import files

        text = (files("timm.data") / "_info" / subset_file).read_text()
    except (ImportError, OSError):
        return sorted(set(present))
    index = {w: i for i, w in enumerate(spec.wnids)}  # type: ignore[attr-defined]
    wnids = text.split()
    unknown = [w for w in wnids if w not in index]
    if unknown:
        raise RuntimeError(f"timm's {subset_file} has wnids that are not ImageNet-1k classes: {unknown[:3]}")
    return sorted(index[w] for w in wnids)


def _load_folder(key: DGKey, path: Path, spec: DatasetSpec, transform: Callable) -> dict[str, ShiftedSet]:
    folder = _descend(path, spec)
    samples = _labelled_images(folder, spec)
    if not samples:
        raise _missing(key.kind, path, " (no images in class folders)")
    subset = class_subset_of(key.kind, spec, [y for _, y in samples])
    if subset is not None:
        outside = sorted({y for _, y in samples} - set(subset))
        if outside:
            names = ", ".join(spec.wnids[y] for y in outside[:3])  # type: ignore[attr-defined]
            raise UserError(
                f"{folder} has {len(outside)} class(es) outside {KINDS[key.kind].title}'s 200 ({names}); "
                f"is it {KINDS[key.kind].title}? Use 'folder:{key.name}' for other wnid folders"
            )
    return {key.name: ShiftedSet(key.name, ImageFiles(samples, transform), class_subset=subset)}


def _npy_sets(key: DGKey, folder: Path, spec: DatasetSpec, transform: Callable) -> dict[str, ShiftedSet]:
    labels_file = folder / "labels.npy"
    if not labels_file.is_file():
        raise _missing(key.kind, folder, " (labels.npy is missing)")
    try:
        labels = np.load(labels_file).astype(np.int64).reshape(-1)
    except (OSError, ValueError) as e:
        raise UserError(f"Cannot read {labels_file}: {one_line(e)}") from e
    if len(labels) and not 0 <= labels.min() <= labels.max() < spec.num_classes:
        raise UserError(
            f"{labels_file} has labels {labels.min()}..{labels.max()}, outside {spec.name}'s "
            f"0..{spec.num_classes - 1}; is it the right data set?"
        )
    out = {}
    for file in sorted(folder.glob("*.npy")):
        if file.name == "labels.npy":
            continue
        try:
            shape = np.load(file, mmap_mode="r").shape
        except (OSError, ValueError) as e:
            raise UserError(f"Cannot read {file}: {one_line(e)}") from e
        n_total = shape[0]
        if len(shape) != 4 or shape[3] != 3 or n_total % NUM_SEVERITIES:
            raise UserError(
                f"{file} has shape {shape}; expected (5*n, H, W, 3) uint8: {NUM_SEVERITIES} severities of n images"
            )
        if len(labels) not in (n_total, n_total // NUM_SEVERITIES):
            raise UserError(f"{labels_file} has {len(labels)} labels for the {n_total} images of {file.name}")
        n = n_total // NUM_SEVERITIES
        levels = [key.severity] if key.severity else list(range(1, NUM_SEVERITIES + 1))
        rows = [r for s in levels for r in range((s - 1) * n, s * n)]  # severity s: rows (s-1)n .. sn-1
        ys = [int(labels[r % len(labels)]) for r in rows]  # labels.npy is per row, or per image (repeated)
        name = f"{key.name}/{file.stem.lower()}"
        sev = [s for s in levels for _ in range(n)]
        out[name] = ShiftedSet(name, NpyImages(file, rows, ys, transform), severities=sev)
    return out


def _is_severity_layer(folder: Path) -> bool:
    subdirs = _subdirs(folder)
    return bool(subdirs) and all(d.isdigit() and _subdirs(folder / d) for d in subdirs)


def _corruption_folder_sets(key: DGKey, folder: Path, spec: DatasetSpec, transform: Callable) -> dict[str, ShiftedSet]:
    out = {}
    for corruption in _subdirs(folder):
        cdir = folder / corruption
        if _is_severity_layer(cdir):
            found = {int(d): d for d in _subdirs(cdir)}
            bad = [s for s in found if not 1 <= s <= NUM_SEVERITIES]
            if bad:
                raise UserError(f"{cdir} has severity folders outside 1..{NUM_SEVERITIES}: {bad}")
            levels = [key.severity] if key.severity else sorted(found)
            if key.severity and key.severity not in found:
                raise UserError(f"{cdir} has no severity {key.severity} folder (found: {sorted(found)})")
            samples, sev = [], []
            for s in levels:
                part = _labelled_images(cdir / found[s], spec)
                samples += part
                sev += [s] * len(part)
        else:
            if key.severity:
                raise UserError(f"{cdir} has no severity folders 1..{NUM_SEVERITIES}, so {key.name} cannot pick one")
            samples, sev = _labelled_images(cdir, spec), None
        if samples:
            name = f"{key.name}/{corruption.lower()}"
            out[name] = ShiftedSet(name, ImageFiles(samples, transform), severities=sev)
    return out


def _load_corruptions(key: DGKey, path: Path, spec: DatasetSpec, transform: Callable) -> dict[str, ShiftedSet]:
    folder = path
    if not any(folder.glob("*.npy")) and len(_subdirs(folder)) == 1:
        inner = folder / _subdirs(folder)[0]  # CIFAR-10-C.tar extracts to CIFAR-10-C/
        if any(inner.glob("*.npy")):
            folder = inner
    if any(folder.glob("*.npy")):
        out = _npy_sets(key, folder, spec, transform)
    else:
        out = _corruption_folder_sets(key, folder, spec, transform)
    if not out:
        raise _missing(key.kind, path, " (no corruption files or folders with images)")
    return out


def load_shifted(
    kind_or_name: str, path: str | Path, spec: DatasetSpec, *, severity: int | None = None
) -> dict[str, ShiftedSet]:
    """The evaluation sets of one ``dg`` entry, ``{name: ShiftedSet}`` (see the module docstring).

    ``kind_or_name`` is a config key ``[kind:]name[@severity]``; ``severity`` (1..5, corruption kinds
    only) keeps one severity, like ``@k``. Items have the spec's test transform and global labels.
    Raises ``DatasetNotFoundError`` for a missing or empty path, ``UserError`` for a wrong layout or a
    spec that does not fit the kind; both one line.
    """
    key = parse_key(kind_or_name, severity)
    _check_spec(key, spec)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise _missing(key.kind, root)
    transform = spec.test_transform()
    if KINDS[key.kind].corruptions:
        return _load_corruptions(key, root, spec, transform)
    return _load_folder(key, root, spec, transform)


def benchmark_corruptions(names: Sequence[str]) -> list[str]:
    """The corruptions a mean is taken over: all but the 4 held-out extras, unless only extras are given."""
    main = [n for n in names if n not in EXTRA_CORRUPTIONS]
    return main or list(names)
