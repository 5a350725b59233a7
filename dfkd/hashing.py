"""Stable content hashes for configurations and files.

``stable_hash(obj)`` is sha256 over a canonical JSON form of ``obj``: dict keys sorted, dataclasses
as their fields (``asdict``), tuples and lists as lists, sets as sorted lists, ``Path`` as ``str``,
enums as their value, floats via ``repr`` (so ``1`` and ``1.0`` hash differently, ``-0.0`` and
``0.0`` too). Tensors and arrays are refused with a ``TypeError``: hash the configuration that
produced them, or the file they were saved to (``file_digest``).

The hash names content-addressed synthetic stores, so changing the canonical form changes every
store name: pin it with a golden value in the tests and do not edit it lightly.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
from pathlib import PurePath
from typing import Any

_CHUNK = 1 << 20  # 1 MiB per read in file_digest


def canonicalize(obj: Any) -> Any:
    """The JSON-ready canonical form that ``stable_hash`` digests (also handy for manifests)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return canonicalize(obj.value)
    if isinstance(obj, int):
        return int(obj)  # int subclasses (IntEnum handled above, numpy ints are not int subclasses)
    if isinstance(obj, float):
        return float(obj)  # json writes floats with float.__repr__
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: canonicalize(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            name = _key(key)
            if name in out:
                raise ValueError(f"keys {key!r} and another key both map to {name!r} in canonical JSON")
            out[name] = canonicalize(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [canonicalize(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [canonicalize(v) for v in obj]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    module = type(obj).__module__ or ""
    if module.startswith(("torch", "numpy")):
        raise TypeError(
            f"stable_hash does not hash {type(obj).__module__}.{type(obj).__name__} values; "
            "hash the configuration that produced them or the file they are saved in (file_digest)"
        )
    raise TypeError(f"stable_hash cannot canonicalise {type(obj).__name__!s} value {obj!r}")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, enum.Enum):
        return _key(key.value)
    if isinstance(key, bool) or key is None:
        return json.dumps(key)  # "true" / "false" / "null", as json.dumps would write them
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, float):
        return repr(float(key)) if math.isfinite(key) else json.dumps(float(key))
    if isinstance(key, PurePath):
        return str(key)
    raise TypeError(f"stable_hash needs dict keys that are str, int, float, bool or None, not {type(key).__name__}")


def canonical_json(obj: Any) -> str:
    """Compact canonical JSON text of ``obj`` (sorted keys, no spaces, ASCII)."""
    return json.dumps(canonicalize(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stable_hash(obj: Any, n: int = 16) -> str:
    """First ``n`` hex digits of sha256 over ``canonical_json(obj)``; stable across runs and machines."""
    if not 1 <= n <= 64:
        raise ValueError(f"n must be between 1 and 64 hex digits, got {n}")
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()[:n]


def file_digest(path: str | os.PathLike[str], n: int = 16) -> str:
    """First ``n`` hex digits of the sha256 of a file's bytes, read in 1 MiB chunks."""
    if not 1 <= n <= 64:
        raise ValueError(f"n must be between 1 and 64 hex digits, got {n}")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:n]


def folder_digest(path: str | os.PathLike[str], n: int = 16) -> str:
    """First ``n`` hex digits of a sha256 over every file of a folder (relative POSIX paths, sorted, with each
    file's sha256): the content identity of a model folder, independent of where it lies."""
    root = os.fspath(path)
    entries = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            full = os.path.join(dirpath, name)
            entries.append([os.path.relpath(full, root).replace(os.sep, "/"), file_digest(full, 64)])
    if not entries:
        raise ValueError(f"{root} holds no files")
    return stable_hash(sorted(entries), n)
