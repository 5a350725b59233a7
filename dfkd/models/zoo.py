"""ImageNet-scale models from the zoos: ``timm/<name>`` and ``torchvision/<name>``.

``create_zoo_model("timm/resnet50.tv_in1k", 1000, pretrained=True)`` calls
``timm.create_model(name, pretrained=..., num_classes=...)``; ``torchvision/<name>`` calls
``torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None, num_classes=...)``.

**How ``forward(x, return_features=False)`` is added without changing any key.** The upstream
instance is kept as it is and its class is swapped for a cached subclass
(``<Upstream>WithFeatures``, e.g. ``ResNetWithFeatures``) that only overrides ``forward``. So
``state_dict()``, ``named_parameters()``, ``named_modules()`` and ``load_state_dict`` are exactly
upstream's (no ``model.`` prefix, upstream checkpoints load as they are), ``isinstance(m,
timm.models.ResNet)`` still holds, and ``copy.deepcopy`` / pickling work (``__reduce_ex__``
rebuilds from the upstream class, which is importable).

* plain call → upstream ``forward(x)``, unchanged;
* timm, ``return_features=True`` → ``f = forward_features(x)``;
  ``feats = forward_head(f, pre_logits=True)`` (pooled, normed where the model norms, before the
  classifier); ``logits = get_classifier()(feats)``;
* torchvision, ``return_features=True`` → a one-shot forward *pre*-hook on the classifier head
  records the head's input during the upstream forward. The head is the **last ``nn.Linear`` in
  registration order** (``fc`` for ResNets, ``classifier[-1]`` for VGG / MobileNet / EfficientNet /
  ConvNeXt, ``heads.head`` for ViT, ``head`` for Swin); models without one (SqueezeNet) raise a
  ``UserError`` when features are asked for.

With ``pretrained=True`` and a class count other than the weights' (torchvision), the weights are
loaded and the last ``nn.Linear`` is replaced by a fresh one (timm does the same itself). Weights
that cannot be fetched (no network, nothing cached) raise a one-line :class:`~dfkd.errors.UserError`
naming the cache folder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dfkd.errors import UnknownNameError, UserError, did_you_mean

__all__ = ["add_features", "create_zoo_model"]


# ------------------------------------------------------------------------------------------------
# forward(x, return_features) mixins and the class swap
# ------------------------------------------------------------------------------------------------
class _TimmFeatures:
    """``forward(x, return_features)`` for timm models (forward_features → forward_head(pre_logits))."""

    _dfkd_zoo = "timm"

    def forward(self, x: Tensor, return_features: bool = False) -> Any:
        if not return_features:
            return super().forward(x)  # type: ignore[misc]
        f = self.forward_features(x)  # (B, C, H, W) for CNNs, (B, L, C) for transformers
        feats = self.forward_head(f, pre_logits=True)  # (B, D)
        head = self.get_classifier()
        logits = head(feats) if isinstance(head, nn.Module) else self.forward_head(f)  # (B, num_classes)
        return logits, feats


class _TorchvisionFeatures:
    """``forward(x, return_features)`` for torchvision models (pre-hook on the last ``nn.Linear``)."""

    _dfkd_zoo = "torchvision"

    def forward(self, x: Tensor, return_features: bool = False) -> Any:
        if not return_features:
            return super().forward(x)  # type: ignore[misc]
        head_name = _last_linear_name(self)  # type: ignore[arg-type]
        if head_name is None:
            raise UserError(
                f"{type(self).__name__} has no nn.Linear classifier to take features from; "
                "use a model with an fc/classifier head as teacher"
            )
        head = self.get_submodule(head_name)  # type: ignore[attr-defined]
        captured: list[Tensor] = []
        handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            logits = super().forward(x)  # type: ignore[misc]  # (B, num_classes)
        finally:
            handle.remove()
        return logits, captured[-1]  # head input: (B, D)


_MIXINS: dict[str, type] = {"timm": _TimmFeatures, "torchvision": _TorchvisionFeatures}
_SWAPPED: dict[tuple[type, str], type] = {}


def _with_features_class(upstream: type, zoo: str) -> type:
    key = (upstream, zoo)
    if key not in _SWAPPED:
        namespace = {"__module__": __name__, "__reduce_ex__": _reduce_ex, "_dfkd_upstream": upstream}
        _SWAPPED[key] = type(f"{upstream.__name__}WithFeatures", (_MIXINS[zoo], upstream), namespace)
    return _SWAPPED[key]


def _reduce_ex(self: nn.Module, protocol: Any) -> Any:
    """Pickle as "upstream instance + class swap", so unpickling needs only importable classes."""
    cls = type(self)
    return _restore, (cls._dfkd_upstream, cls._dfkd_zoo), self.__dict__.copy()  # type: ignore[attr-defined]


def _restore(upstream: type, zoo: str) -> nn.Module:
    obj = upstream.__new__(upstream)
    obj.__class__ = _with_features_class(upstream, zoo)
    return obj


def add_features(model: nn.Module, zoo: str) -> nn.Module:
    """Give ``model`` (a timm or torchvision classifier) ``forward(x, return_features)``, in place."""
    if isinstance(model, tuple(_MIXINS.values())):
        return model
    model.__class__ = _with_features_class(type(model), zoo)
    return model


def _last_linear_name(model: nn.Module) -> str | None:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


# ------------------------------------------------------------------------------------------------
# construction
# ------------------------------------------------------------------------------------------------
def _is_fetch_error(e: BaseException) -> bool:
    """A network / cache failure anywhere in the exception chain (OSError, httpx, hub errors)."""
    seen: set[int] = set()
    c: BaseException | None = e
    while c is not None and id(c) not in seen:
        seen.add(id(c))
        root = type(c).__module__.split(".")[0]
        if isinstance(c, OSError) or root in {"httpx", "httpx2", "httpcore", "huggingface_hub", "requests", "urllib3"}:
            return True
        c = c.__cause__ or c.__context__
    return False


def _unknown(zoo: str, name: str, known: list[str]) -> UnknownNameError:
    hint = did_you_mean(name, known, n=3, show=lambda c: f"{zoo}/{c}")
    listing = "timm.list_models('*pattern*')" if zoo == "timm" else "torchvision.models.list_models()"
    return UnknownNameError(f"Unknown {zoo} model {name!r}.{hint} See {listing}.")


def _create_timm(name: str, num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    import timm

    if not name.startswith("hf-hub:") and not timm.is_model(name):  # hf-hub:org/repo: a model card on the Hub
        raise _unknown("timm", name, timm.list_models())
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except Exception as e:
        if pretrained and _is_fetch_error(e):
            from huggingface_hub.constants import HF_HUB_CACHE

            raise UserError(
                f"Cannot fetch pretrained weights for timm/{name} (no network, not cached); timm keeps them in the "
                f"Hugging Face cache {HF_HUB_CACHE} (or {torch.hub.get_dir()}/checkpoints for older URLs): on a "
                f"machine with network run `python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` "
                "and copy that folder here (set HF_HUB_OFFLINE=1 to skip the network retries)"
            ) from e
        raise
    return add_features(model, "timm")


def _create_torchvision(name: str, num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in known:
        raise _unknown("torchvision", name, known)
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    weight_classes = len(weights.meta["categories"]) if weights is not None else num_classes
    try:
        model = torchvision.models.get_model(name, weights=weights, num_classes=weight_classes, **kwargs)
    except Exception as e:
        if weights is not None and _is_fetch_error(e):
            raise UserError(
                f"Cannot fetch pretrained weights for torchvision/{name} (no network, not cached); torchvision "
                f"keeps them in {torch.hub.get_dir()}/checkpoints (set TORCH_HOME to move it): download "
                f"{weights.url} into that folder on a machine with network"
            ) from e
        raise
    if weight_classes != num_classes:  # pretrained backbone, fresh head for this data set
        head_name = _last_linear_name(model)
        if head_name is None:
            raise UserError(f"torchvision/{name} has no nn.Linear head to resize to {num_classes} classes")
        old = model.get_submodule(head_name)
        parent_name, _, attr = head_name.rpartition(".")
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    return add_features(model, "torchvision")


def create_zoo_model(name: str, num_classes: int, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build ``timm/<name>`` or ``torchvision/<name>`` with ``forward(x, return_features=False)``.

    ``kwargs`` go to ``timm.create_model`` / ``torchvision.models.get_model``. Keys are upstream's.
    """
    zoo, _, model_name = name.partition("/")
    if zoo == "timm":
        return _create_timm(model_name, num_classes, pretrained, **kwargs)
    if zoo == "torchvision":
        return _create_torchvision(model_name, num_classes, pretrained, **kwargs)
    raise UnknownNameError(f"Unknown model zoo {zoo!r} in {name!r}; use timm/<name> or torchvision/<name>")
