"""A network's residual stages, in forward order: what stage-wise losses (ZSKT's attention transfer) hook.

A stage is a top-level child named ``layer<N>`` or ``block<N>``, sorted by N: ``layer1..4`` of the CIFAR
``ResNet`` and of timm / torchvision ResNets, ``layer1..3`` of ``CifarResNet``, ``block1..3`` of ``WideResNet``
(the three block outputs the original ZSKT reads, ``ZSKT:models/wresnet.py:87-96``). VGG's ``block0..4`` match
the names too; their outputs are taken before the ReLU and pooling.
"""

from __future__ import annotations

import re

from torch import nn

from dfkd.errors import ConfigError

__all__ = ["stage_modules"]

_STAGE = re.compile(r"(?:layer|block)(\d+)")


def stage_modules(model: nn.Module) -> list[nn.Module]:
    """The top-level ``layer<N>`` / ``block<N>`` children of ``model``, sorted by N; ConfigError if there are none."""
    found = [(int(m.group(1)), child) for name, child in model.named_children() if (m := _STAGE.fullmatch(name))]
    found.sort(key=lambda pair: pair[0])
    if not found:
        raise ConfigError(
            f"{type(model).__name__} has no residual stages (top-level layer<N> / block<N> children, as in the CIFAR "
            "ResNets, WideResNets and timm / torchvision ResNets): use one of those, or set at_weight=0"
        )
    return [child for _, child in found]
