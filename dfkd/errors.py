"""User-facing errors: one line that says what to do next.

The CLI prints ``UserError`` messages on one line and exits with status 1; a traceback is shown
only with ``--debug``. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable


class UserError(Exception):
    """A problem the user can fix (bad name, missing file, wrong checkpoint, bad config)."""


class ConfigError(UserError):
    """An unknown or ill-typed configuration key or value."""


class UnknownNameError(UserError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not match the model."""


class DatasetNotFoundError(UserError):
    """A data set that is not on disk and could not be downloaded."""


class TrainingDivergedError(UserError):
    """A loss or metric became NaN or infinite: the run stops, nothing is recorded."""


# -- the parts every one-line message is made of ------------------------------------------------------------------
def did_you_mean(word: str, choices: Iterable[str], *, n: int = 1, show: Callable[[str], str] = str) -> str:
    """The hint of an unknown-name message: ``" Did you mean 'x'?"`` (``n`` 1) or ``" Did you mean: x, y?"`` (``n`` >
    1) for the choices closest to ``word`` (difflib, cutoff 0.6), each written by ``show``; ``""`` when none is close.
    The leading space lets a caller write ``f"Unknown thing {name!r}.{did_you_mean(name, known)} Valid: …"``."""
    close = difflib.get_close_matches(str(word), list(choices), n=n)
    if not close:
        return ""
    if n == 1:
        return f" Did you mean {show(close[0])!r}?"
    return f" Did you mean: {', '.join(show(c) for c in close)}?"


def one_line(err: BaseException | str, limit: int = 200, *, with_type: bool = False) -> str:
    """An exception (or text) as one short line, for wrapping a library's error into a ``UserError`` message:
    whitespace collapsed, cut at ``limit`` characters; ``with_type`` prefixes the exception's class name."""
    text = " ".join(str(err).split())
    if isinstance(err, BaseException) and (with_type or not text):
        text = f"{type(err).__name__}: {text}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
