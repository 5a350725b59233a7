"""Model registry and factory.

CIFAR models (spec ``cifar-archs.md``; :mod:`dfkd.models.cifar`) are registered in
:data:`dfkd.registry.MODELS` as lazy ``"module:attribute"`` strings, so importing this package
imports neither the model code nor timm / torchvision. Zoo models are addressed by prefix and
built by :mod:`dfkd.models.zoo`::

    create_model("wrn40_2", 100)                               # CIFAR, bundle-compatible keys
    create_model("timm/resnet50.tv_in1k", 1000, pretrained=True)
    create_model("torchvision/resnet18", 10)

Every model answers ``forward(x, return_features=False)`` with logits, or ``(logits, features)``
where ``features`` is the pooled penultimate vector fed to the classifier head.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dfkd.errors import UnknownNameError, UserError
from dfkd.models.stages import stage_modules
from dfkd.registry import MODELS

__all__ = ["ZOO_PREFIXES", "create_model", "list_models", "stage_modules"]

ZOO_PREFIXES = ("timm/", "torchvision/")  # names routed to dfkd.models.zoo

_CIFAR = (
    # spec-checked, loadable from the community teacher bundle (CMI / Fast-Datafree)
    "resnet18",
    "resnet34",
    "wrn16_1",
    "wrn16_2",
    "wrn40_1",
    "wrn40_2",
    "vgg8",
    "vgg11",
    # small RepDistiller-style CIFAR ResNets for CPU runs (not in the bundle)
    "resnet8",
    "resnet20",
)
for _name in _CIFAR:
    MODELS.register(_name, f"dfkd.models.cifar:{_name}")


def create_model(name: str, num_classes: int, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered model, ``timm/<name>`` or ``torchvision/<name>`` with ``num_classes`` outputs.

    ``pretrained`` fetches zoo weights (timm / torchvision); registered CIFAR models have none
    (load the teacher bundle with :func:`dfkd.models.checkpoint.load_weights`). ``kwargs`` go to
    the builder. Unknown names raise :class:`~dfkd.errors.UnknownNameError` with a did-you-mean.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    if name.startswith(ZOO_PREFIXES):
        from dfkd.models.zoo import create_zoo_model

        return create_zoo_model(name, num_classes, pretrained=pretrained, **kwargs)
    try:
        builder = MODELS.get(name)
    except UnknownNameError as e:
        raise UnknownNameError(f"{e} Zoo models: timm/<name> or torchvision/<name>.") from None
    if pretrained:
        raise UserError(
            f"Model {name!r} has no built-in pretrained weights; load a checkpoint instead (the community teacher "
            f"bundle, e.g. cifar10_{name}.pth, via --teacher PATH or dfkd.models.checkpoint.load_weights)"
        )
    return builder(num_classes=num_classes, **kwargs)


def check_model_name(name: str) -> None:
    """Raise ``UnknownNameError`` (with a did-you-mean) for a name ``create_model`` would refuse; builds nothing.
    Zoo names (``timm/…``, ``torchvision/…``) are checked when they are built."""
    if not name.startswith(ZOO_PREFIXES):
        try:
            MODELS.get(name)
        except UnknownNameError as e:
            raise UnknownNameError(f"{e} Zoo models: timm/<name> or torchvision/<name>.") from None


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered model names matching a shell-style ``pattern`` (zoo models not listed)."""
    return MODELS.names(pattern)
