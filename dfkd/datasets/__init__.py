"""Data set specs: class names, normalisation, transforms, default teacher/student, real splits.

    from dfkd.datasets import get_dataset, list_datasets
    spec = get_dataset("cifar10")
    spec.class_names[:2]                    # ('airplane', 'automobile')
    test = spec.load("test")                # items (normalised float32 (3, 32, 32), int)
    spec.normalize(images01)                # differentiable, for synthetic images in [0, 1]

Built-ins are registered lazily (``"module:attribute"`` strings), so importing this package imports
neither torchvision, timm nor scikit-learn; a family's module is imported by ``get_dataset``.
``digits`` (scikit-learn's bundled handwritten digits) is the default and needs no download.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dfkd.registry import DATASETS

if TYPE_CHECKING:
    from dfkd.datasets.base import DatasetSpec

_BUILTINS = {
    "cifar10": "dfkd.datasets.cifar:CIFAR10",
    "cifar100": "dfkd.datasets.cifar:CIFAR100",
    "imagenet": "dfkd.datasets.imagenet:IMAGENET",
    "digits": "dfkd.datasets.digits:DIGITS",
}
for _name, _target in _BUILTINS.items():
    if _name not in DATASETS:
        DATASETS.register(_name, _target)

_LAZY = {
    "DatasetSpec": "dfkd.datasets.base",
    "CIFARSpec": "dfkd.datasets.cifar",
    "ImageNetSpec": "dfkd.datasets.imagenet",
    "DigitsSpec": "dfkd.datasets.digits",
}

__all__ = ["CIFARSpec", "DatasetSpec", "DigitsSpec", "ImageNetSpec", "get_dataset", "list_datasets"]


_EXTERNAL: dict[str, DatasetSpec] = {}  # imagefolder: / torchvision: / hf: specs built in this process


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered as ``name``, or of a data set named by where it is (``imagefolder:PATH``,
    ``torchvision:NAME``, ``hf:NAME``; ``dfkd.datasets.external``); unknown names raise ``UnknownNameError`` with
    suggestions."""
    if ":" in name:  # only then can it be imagefolder:/torchvision:/hf: (registered names have no colon)
        from dfkd.datasets.external import external_spec, is_external

        if is_external(name):
            if name not in _EXTERNAL:
                _EXTERNAL[name] = external_spec(name)
            return _EXTERNAL[name]
    return DATASETS.get(name)


def list_datasets(pattern: str = "*") -> list[str]:
    """Sorted registered data set names matching a shell-style ``pattern``."""
    return DATASETS.names(pattern)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
