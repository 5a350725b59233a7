"""DFKD methods: one file each, registered lazily in :data:`dfkd.registry.METHODS`.

Third-party methods register through the ``dfkd.methods`` entry-point group.
"""

from __future__ import annotations

from typing import Any

from dfkd.registry import METHODS

METHODS.register("diffdfkd", "dfkd.methods.diffdfkd:DiffDFKD")
METHODS.register("diffusion_kd", "dfkd.methods.diffusion_kd:DiffusionKD")
METHODS.register("prism", "dfkd.methods.prism:PRISM")
METHODS.register("deepinversion", "dfkd.methods.deepinversion:DeepInversion")
METHODS.register("real_kd", "dfkd.methods.baselines:RealKD")
METHODS.register("noise_kd", "dfkd.methods.baselines:NoiseKD")
METHODS.register("dafl", "dfkd.methods.dafl:DAFL")
METHODS.register("zskt", "dfkd.methods.zskt:ZSKT")
METHODS.register("dfad", "dfkd.methods.dfad:DFAD")
METHODS.register("dfq", "dfkd.methods.dfq:DFQ")


def get_method_class(name: str) -> type:
    """The method class registered as ``name`` (imports it on first use)."""
    cls = METHODS.get(name)
    if not getattr(cls, "name", ""):
        cls.name = name
    return cls


def create_method(name: str, config: Any = None, **overrides: Any) -> Any:
    """``create_method("diffdfkd", bn_weight=0.2)`` → a configured method instance."""
    return get_method_class(name)(config, **overrides)


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a shell pattern (``"diff*"``)."""
    return METHODS.names(pattern)
