"""User-facing errors: one line that says what to do next.

The CLI prints ``UserError`` messages on one line and exits with status 1; a traceback is shown
only with ``--debug``. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


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
