"""Where the suite keeps data, teachers, stores and runs (all overridable by environment)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of everything cached: ``$DFKD_CACHE`` or ``~/.cache/dfkd``."""
    return Path(os.environ.get("DFKD_CACHE", Path.home() / ".cache" / "dfkd")).expanduser()


def data_dir() -> Path:
    """Default ``--data-root``: ``$DFKD_DATA`` or ``<cache>/data``."""
    env = os.environ.get("DFKD_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"


def teachers_dir() -> Path:
    """Teacher checkpoints: ``<cache>/teachers/<dataset>_<arch>.pth`` (the community bundle's names)."""
    return cache_dir() / "teachers"


def stores_dir() -> Path:
    """Content-addressed synthetic stores, shared by every run that asks for the same synthesis."""
    return cache_dir() / "stores"
