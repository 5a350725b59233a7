"""One generic registry for methods, models and data sets.

Built-ins are registered as ``"module:attribute"`` strings and imported on first use, so
``bench --help`` and ``bench ls`` never import diffusers. Third-party packages add methods
through the entry-point group ``dfkd.methods``::

    [project.entry-points."dfkd.methods"]
    my_method = "my_package.my_method:MyMethod"

Usage::

    METHODS.register("prism", "dfkd.methods.prism:PRISM")     # lazy
    @MODELS.register("resnet8")                               # decorator
    def resnet8(num_classes): ...
    METHODS.get("prsim")  # UnknownNameError: Unknown method 'prsim'. Did you mean: prism? Run `bench ls methods`.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from dfkd.errors import UnknownNameError, UserError, did_you_mean

T = TypeVar("T")


@dataclass
class _Entry:
    target: Any  # the object, or a "module:attr" string until first use
    source: str  # "dfkd" for built-ins, the distribution name for plugins, or a module path


def _import_target(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"lazy registry target {path!r} must look like 'package.module:attribute'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise ImportError(f"{module_name!r} has no attribute {attr!r} (registered as {path!r})") from e


class Registry(Generic[T]):
    """Name → object, with lazy imports, plugin discovery and helpful errors."""

    def __init__(self, kind: str, *, entry_point_group: str | None = None, plural: str | None = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.entry_point_group = entry_point_group
        self._entries: dict[str, _Entry] = {}
        self._plugins_loaded = entry_point_group is None

    # -- registration ---------------------------------------------------------------------------
    def register(self, name: str, target: T | str | None = None, *, source: str = "dfkd") -> Any:
        """Register ``target`` under ``name``; without ``target``, return a decorator."""
        if target is None:

            def decorator(obj: T) -> T:
                self.register(name, obj, source=source)
                return obj

            return decorator
        if name in self._entries:
            first = self._entries[name]
            raise UserError(
                f"{self.kind} {name!r} is already registered (first by {first.source}: {self._describe(first)}); "
                f"pick another name or unregister the first"
            )
        self._entries[name] = _Entry(target, source)
        return target

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    # -- lookup ---------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        self._load_plugins()
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(self._unknown_message(name))
        if isinstance(entry.target, str):
            entry.target = _import_target(entry.target)
        return entry.target

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style ``pattern`` (``"wrn*"``)."""
        self._load_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def source(self, name: str) -> str:
        """Where ``name`` came from: ``dfkd`` or the plugin distribution's name."""
        self._load_plugins()
        if name not in self._entries:
            raise UnknownNameError(self._unknown_message(name))
        return self._entries[name].source

    def target_path(self, name: str) -> str:
        """``module:attr`` of an entry, without importing it."""
        self._load_plugins()
        if name not in self._entries:
            raise UnknownNameError(self._unknown_message(name))
        return self._describe(self._entries[name])

    # -- internals ------------------------------------------------------------------------------
    def _unknown_message(self, name: str) -> str:
        return f"Unknown {self.kind} {name!r}.{did_you_mean(name, self._entries, n=3)} Run `bench ls {self.plural}`."

    @staticmethod
    def _describe(entry: _Entry) -> str:
        if isinstance(entry.target, str):
            return entry.target
        obj = entry.target
        return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            dist = getattr(ep, "dist", None)
            source = dist.name if dist is not None else ep.module
            if ep.name in self._entries:
                first = self._entries[ep.name]
                raise UserError(
                    f"{self.kind} {ep.name!r} from plugin {source} ({ep.value}) clashes with the one registered by "
                    f"{first.source} ({self._describe(first)}); rename it in the plugin's entry points"
                )
            self._entries[ep.name] = _Entry(ep.value, source)

    def _reset_plugins(self) -> None:
        """Forget plugin entries so the next lookup rescans entry points (for tests)."""
        self._entries = {k: v for k, v in self._entries.items() if v.source == "dfkd"}
        self._plugins_loaded = self.entry_point_group is None


METHODS: Registry[Any] = Registry("method", entry_point_group="dfkd.methods")
MODELS: Registry[Callable[..., Any]] = Registry("model")
DATASETS: Registry[Any] = Registry("dataset")
