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
METHODS.register("fast2", "dfkd.methods.fast:Fast2")
METHODS.register("fast5", "dfkd.methods.fast:Fast5")
METHODS.register("fast10", "dfkd.methods.fast:Fast10")
METHODS.register("cmi", "dfkd.methods.cmi:CMI")
METHODS.register("nayer", "dfkd.methods.nayer:NAYER")


def get_method_class(name: str) -> type:
    """The method class registered as ``name`` (imports it on first use). ``package.module:Class`` or
    ``path/to/file.py:Class`` loads a method that is not packaged (registered under that name on first use)."""
    if name not in METHODS and ":" in name:
        METHODS.register(name, _load_unregistered(name), source=name.partition(":")[0])
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


def _load_unregistered(spec: str) -> type:
    """``module:Class`` or ``file.py:Class`` → the class, with a one-line error naming what is missing."""
    import importlib
    import importlib.util
    from pathlib import Path

    from dfkd.errors import UserError
    from dfkd.methods.base import Method

    where, _, attr = spec.rpartition(":")
    if where.endswith(".py") or "/" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise UserError(f"--method {spec}: no file {path}. Fix: give an existing path/to/file.py:ClassName")
        module_spec = importlib.util.spec_from_file_location(f"dfkd_user_method_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise UserError(
                f"--method {spec}: cannot import {where} ({e}). Fix: install it or put it on PYTHONPATH"
            ) from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError(
            f"--method {spec}: {attr!r} in {where} is not a dfkd Method subclass (dfkd.methods.base.Method)"
        )
    return cls
