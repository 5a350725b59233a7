"""Where the suite keeps data, teachers, stores and runs (all overridable by environment)."""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"  # temporary files are ".<name>.<pid>-<token>.tmp" beside the file they become


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


@contextmanager
def file_lock(path: str | os.PathLike[str], what: str, notify: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``path`` (a ``.lock`` file beside what it guards).

    If another process holds it, say once (``notify``, default stderr) what it is doing and wait for it; the
    caller then re-checks whether that process already made what it needed. Locks are released on exit, also by
    a killed process (the OS drops them), so a crash never leaves a stale lock.
    """
    from filelock import FileLock, Timeout

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(os.fspath(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        message = f"another process is {what} ({path}); waiting for it to finish"
        (notify or (lambda m: print(m, file=sys.stderr, flush=True)))(message)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def ordinary_permissions(path: str | os.PathLike[str]) -> None:
    """Give a file or folder made by ``tempfile`` (0600 / 0700) the permissions an ordinary ``open`` or ``mkdir``
    would have under the process's umask, before it is renamed into a shared cache."""
    mask = os.umask(0o022)
    os.umask(mask)  # reading the umask means setting it; put it back at once
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~mask)


def existing_ancestor(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it exists, else its nearest existing parent: what decides whether it can be created."""
    probe = Path(path).expanduser().absolute()
    while not probe.exists():
        probe = probe.parent
    return probe


# -- atomic writes: the one implementation -------------------------------------------------------------------------
def tmp_path_for(path: str | os.PathLike[str], stem: str | None = None) -> Path:
    """A fresh temporary name beside ``path``: ``.<stem or name>.<pid>-<token>.tmp`` (hidden, unique per writer)."""
    path = Path(path)
    return path.with_name(f".{stem or path.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename in folder ``path`` durable (POSIX; a no-op elsewhere or where the file system refuses)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: str = "wb", *, durable: bool = False, tmp_stem: str | None = None
) -> Iterator[IO[Any]]:
    """Write ``path`` all or nothing: the block writes a temporary file beside it, which then replaces ``path``
    (``os.replace`` is atomic), so a reader never sees half a file and a crash leaves the old one (or none). On any
    error the temporary file is removed. ``durable``: flush and fsync the file and its folder, so the new file also
    survives a power cut (records, checkpoints, store shards). Parent folders are created. ``mode``: "wb" or "w"
    (UTF-8)::

        with atomic_writer(path, durable=True) as f:
            torch.save(state, f)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path, tmp_stem)
    try:
        with open(tmp, mode.replace("w", "x"), **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, durable: bool = False) -> Path:
    """``path.write_text(text)`` done with :func:`atomic_writer`."""
    with atomic_writer(path, "w", durable=durable) as f:
        f.write(text)
    return Path(path)


def safe_name(name: str) -> str:
    """A name as one path component: ``/`` → ``__`` (``timm/resnet50`` → ``timm__resnet50``; a data set named
    ``imagefolder:/data/pets`` → ``imagefolder:__data__pets``)."""
    return name.replace("/", "__")
