"""CIFAR-10 and CIFAR-100 in torchvision's python format under ``root``.

Layout: ``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``root/cifar-100-python/{train, test, meta}``, i.e. the archives from
https://www.cs.toronto.edu/~kriz/cifar.html extracted in ``root``.

Normalisation and transforms follow the community DFKD benchmark (CMI / Fast-Datafree
``registry.py``), whose teachers expect exactly these inputs:

* train: RandomCrop(32, padding=4, zero fill) → RandomHorizontalFlip(0.5) → [0, 1] → Normalize;
* test: [0, 1] → Normalize.

Both first resize images that are not 32×32 (bicubic, antialiased; see ``ResizeIfNeeded``).

Loading uses torchvision's ``CIFAR10`` / ``CIFAR100`` with one change: torchvision checks the md5
sum of every file even when not downloading, which rejects re-packed copies that users keep (and
our tests' small fixture folders). Here the files only have to exist; md5 sums are checked when
downloading (the archive's, by torchvision). The subclasses ``CIFAR10Folder`` / ``CIFAR100Folder``
are created on first use (module ``__getattr__``), so importing this module does not import
torchvision, and they pickle by name for DataLoader workers.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfkd.datasets.base import DatasetSpec, ResizeIfNeeded
from dfkd.errors import DatasetNotFoundError, UserError, one_line

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR100_CLASSES = (  # "fine_label_names" of cifar-100-python/meta, in label order
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip


_PICKLE_GLOBALS = {  # everything the CIFAR python batches reference: numpy arrays and their bytes
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR python format holds (dicts, lists, str, bytes, ints, numpy arrays): any other
    global — a function to call, a class to build — is refused before anything runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def read_batch(path: str | os.PathLike) -> dict:
    """One CIFAR python batch (or meta) file, read with the restricted unpickler; one-line ``UserError`` if it holds
    anything else."""
    try:
        with open(path, "rb") as f:
            data = _BatchUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{path} is not a CIFAR python batch: it references {e} (Python code, which is not run). "
            "Fix: replace the folder with the archive from the data set's site"
        ) from None
    except (EOFError, ValueError, TypeError) as e:
        raise UserError(f"{path} is not a CIFAR python batch ({type(e).__name__}: {e}). Fix: re-extract it") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a CIFAR python batch (a {type(data).__name__}, not a dict). Fix: re-extract it")
    return data


class _ExistenceCheck:
    """Mixin for torchvision's CIFAR classes: files must exist (md5 sums are not checked), and every file is read
    with the restricted unpickler (``read_batch``), never with ``pickle.load``."""

    train: bool
    root: str
    base_folder: str
    train_list: list[list[str]]
    test_list: list[list[str]]
    meta: dict[str, str]

    def _check_integrity(self) -> bool:
        files = [f for f, _md5 in (self.train_list if self.train else self.test_list)] + [self.meta["filename"]]
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in files)

    def __init__(self, root: str, train: bool = True, transform=None, target_transform=None, download=False):
        import numpy as np
        from torchvision.datasets.vision import VisionDataset

        VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self.train = train
        if not self._check_integrity():
            raise DatasetNotFoundError(f"{os.path.join(self.root, self.base_folder)} lacks CIFAR batch files")
        data, targets = [], []
        for name, _md5 in self.train_list if train else self.test_list:
            entry = read_batch(os.path.join(self.root, self.base_folder, name))
            data.append(entry["data"])
            targets.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # (N, 32, 32, 3) uint8
        self.targets = targets
        self._load_meta()

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        data = read_batch(path)  # the data set's own format, without running any code it might hold
        self.classes = list(data[self.meta["key"]])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


_FOLDER_CLASSES = {"CIFAR10Folder": "CIFAR10", "CIFAR100Folder": "CIFAR100"}


def __getattr__(name: str) -> Any:
    """Create ``CIFAR10Folder`` / ``CIFAR100Folder`` (torchvision subclasses) on first access."""
    base_name = _FOLDER_CLASSES.get(name)
    if base_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from torchvision import datasets as tv_datasets

    cls = type(
        name,
        (_ExistenceCheck, getattr(tv_datasets, base_name)),
        {"__module__": __name__, "__doc__": f"torchvision's {base_name} without md5 checks of the extracted files."},
    )
    globals()[name] = cls
    return cls


@dataclass(frozen=True)
class CIFARSpec(DatasetSpec):
    """CIFAR-10 / CIFAR-100 (torchvision python format)."""

    folder: str = ""  # extracted folder under root: torchvision's base_folder
    url: str = ""  # the archive torchvision downloads
    split_files: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # (train files, test files) in folder
    meta_file: str = ""  # file with the label names
    folder_class: str = ""  # "CIFAR10Folder" | "CIFAR100Folder" in this module

    def _train_geometry(self) -> list[Callable]:
        from torchvision.transforms import v2

        s = self.input_size
        return [ResizeIfNeeded(s), v2.RandomCrop(s, padding=4), v2.RandomHorizontalFlip(0.5)]

    def _test_geometry(self) -> list[Callable]:
        return [ResizeIfNeeded(self.input_size)]

    def _present(self, root: Path, split: str) -> bool:
        files = self.split_files[0] if split == "train" else self.split_files[1]
        return all((root / self.folder / f).is_file() for f in (*files, self.meta_file))

    def _missing_message(self, root: Path, why: str) -> str:
        return (
            f"{self.name} not found{why}: expected {root / self.folder} (the archive {self.url} extracted there); "
            f"download it or point --data-root DIR / $DFKD_DATA at the folder that contains {self.folder}"
        )

    def _load(self, split: str, root: Path, transform: Callable | None, download: bool) -> Any:
        if not self._present(root, split):
            if not download:
                raise DatasetNotFoundError(self._missing_message(root, " (download=False)"))
            self._download(root)
        cls = globals().get(self.folder_class) or __getattr__(self.folder_class)
        ds = cls(str(root), train=split == "train", transform=transform, download=False)
        if tuple(ds.classes) != self.class_names:
            raise UserError(
                f"{root / self.folder}: its label names ({', '.join(ds.classes[:3])}, ...) differ from {self.name}'s "
                f"({', '.join(self.class_names[:3])}, ...); is it the right data set?"
            )
        return ds

    def _download(self, root: Path) -> None:
        from torchvision import datasets as tv_datasets
        from torchvision.datasets import utils as tv_utils

        tv_cls = getattr(tv_datasets, _FOLDER_CLASSES[self.folder_class])
        try:
            root.mkdir(parents=True, exist_ok=True)
            tv_utils.download_and_extract_archive(self.url, str(root), filename=tv_cls.filename, md5=tv_cls.tgz_md5)
        except Exception as e:  # no network, HTTP error, bad md5, broken archive: all mean "not available"
            raise DatasetNotFoundError(self._missing_message(root, f" and its download failed ({one_line(e)})")) from e
        if not self._present(root, "train") or not self._present(root, "test"):
            raise DatasetNotFoundError(self._missing_message(root, " after downloading (unexpected archive layout)"))


CIFAR10 = CIFARSpec(
    name="cifar10",
    num_classes=10,
    class_names=CIFAR10_CLASSES,
    input_size=32,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2023, 0.1994, 0.2010),  # the community variant, not (0.247, 0.243, 0.261): the teachers expect it
    default_teacher="resnet34",
    default_student="resnet18",
    description="CIFAR-10: 50,000 train / 10,000 test 32x32 colour images, 10 classes",
    folder="cifar-10-batches-py",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    split_files=(tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",)),
    meta_file="batches.meta",
    folder_class="CIFAR10Folder",
)

CIFAR100 = CIFARSpec(
    name="cifar100",
    num_classes=100,
    class_names=CIFAR100_CLASSES,
    input_size=32,
    mean=(0.5071, 0.4867, 0.4408),
    std=(0.2675, 0.2565, 0.2761),
    default_teacher="resnet34",
    default_student="resnet18",
    description="CIFAR-100: 50,000 train / 10,000 test 32x32 colour images, 100 fine classes",
    folder="cifar-100-python",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    split_files=(("train",), ("test",)),
    meta_file="meta",
    folder_class="CIFAR100Folder",
)
