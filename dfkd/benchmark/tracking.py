"""Experiment tracking: ``bench run --report-to tensorboard,wandb`` (``RunConfig.report_to``).

What a tracked run sends, on the main process only:

* at the start, the resolved config (the run's ``config.yaml``, flattened to dotted keys) and the run's identity
  (run id, config id: the seeds of one configuration share it, so W&B groups them);
* after every distillation epoch, the trainer's row under ``distill/`` (loss, lr, test top-1 / top-5 where the
  epoch was evaluated, agreement with the teacher, seconds) at step = epoch;
* at the end, every stage's seconds under ``stage_seconds/`` and the record's numbers (the headline last-epoch top-1,
  the best epoch's, the teacher's, images, synthesis and distillation seconds, every numeric ``extra``) under
  ``record/``, also as the W&B run summary.

TensorBoard writes event files into ``<run folder>/tensorboard/`` (``tensorboard --logdir runs``). W&B uses the
project ``$WANDB_PROJECT`` (default ``dfkd-bench``) with the run id as W&B id, so a resumed run continues its W&B run;
``WANDB_MODE=offline`` keeps everything in ``<run folder>/wandb/`` for ``wandb sync`` later. Both packages are
optional (``pip install "dfkd-bench[track]"``); a tracker whose package is missing stops the run before any work with
a one-line error that names the install.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from dfkd.config import flatten
from dfkd.errors import UserError

_PACKAGE = {"tensorboard": "tensorboard", "wandb": "wandb"}  # tracker → the package it needs


def _missing(name: str) -> UserError:
    return UserError(
        f'report_to {name} needs the {_PACKAGE[name]} package: pip install "dfkd-bench[track]" '
        f"(or pip install {_PACKAGE[name]}), or drop it from --report-to"
    )


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``values`` (bools and text left out), as floats."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


class Tracker(Protocol):
    def start(self, config: dict[str, Any]) -> None: ...
    def log(self, values: Mapping[str, float], step: int) -> None: ...
    def finish(self, summary: Mapping[str, float], step: int) -> None: ...
    def abort(self) -> None: ...


class TensorBoardTracker:
    """Scalars into ``folder`` through ``torch.utils.tensorboard``; the config as a text summary."""

    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise _missing("tensorboard") from e
        self.writer = SummaryWriter(log_dir=str(folder))

    def start(self, config: dict[str, Any]) -> None:
        text = "\n".join(f"    {k}: {json.dumps(v, default=str)}" for k, v in sorted(config.items()))
        self.writer.add_text("config", text, global_step=0)  # indented: Markdown shows it as code

    def log(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)

    def finish(self, summary: Mapping[str, float], step: int) -> None:
        self.log(summary, step)  # at the last epoch's step, beside the curves they end
        self.writer.close()

    def abort(self) -> None:
        self.writer.close()  # what was logged stays; a resumed run appends to the same folder


class WandbTracker:
    """One W&B run per benchmark run: id = the run id (a resume continues it), group = the config id (its seeds)."""

    def __init__(self, folder: Path, run_id: str, name: str, group: str, tags: list[str]):
        try:
            import wandb
        except ImportError as e:
            raise _missing("wandb") from e
        self._wandb = wandb
        self._args = {
            "project": os.environ.get("WANDB_PROJECT", "dfkd-bench"),
            "id": run_id,
            "name": name,
            "group": group,
            "tags": tags,
            "dir": str(folder),
            "resume": "allow",
        }
        self.run = None

    def start(self, config: dict[str, Any]) -> None:
        try:
            self.run = self._wandb.init(config=config, **self._args)
        except Exception as e:  # no login, no network in online mode: say what to do instead of a stack trace
            raise UserError(
                f"W&B could not start ({str(e).splitlines()[0] if str(e) else type(e).__name__}): run `wandb login`, "
                "or set WANDB_MODE=offline (then `wandb sync` later), or drop wandb from --report-to"
            ) from e

    def log(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def finish(self, summary: Mapping[str, float], step: int) -> None:
        self.run.summary.update(dict(summary))
        self.run.finish()

    def abort(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)  # marked failed; a resumed run continues it (same id)


class Tracking:
    """The trackers of one run, fanned out; empty (every call a no-op) when ``names`` is empty."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers
        self._last_step = 0

    @classmethod
    def open(cls, names: Iterable[str], out: Path, *, run_id: str, config_id: str, cfg_tags: list[str]) -> Tracking:
        trackers: list[Tracker] = []
        for name in dict.fromkeys(names):  # validated by RunConfig (dfkd.config.TRACKERS)
            if name == "tensorboard":
                trackers.append(TensorBoardTracker(out / "tensorboard"))
            else:
                trackers.append(WandbTracker(out, run_id, "/".join([*cfg_tags, run_id]), config_id, cfg_tags))
        return cls(trackers)

    def start(self, config: dict[str, Any]) -> None:
        flat = flatten(config)
        for t in self.trackers:
            t.start(flat)

    def epochs(self, prefix: str, show: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        """``show`` (the console's epoch line) that also logs the row's numbers under ``prefix/`` at step = epoch."""
        if not self.trackers:
            return show

        def both(row: dict[str, Any]) -> None:
            show(row)
            step = int(row["epoch"])
            self._last_step = max(self._last_step, step)
            values = {f"{prefix}/{k}": v for k, v in _numbers(row).items() if k != "epoch"}
            for t in self.trackers:
                t.log(values, step)

        return both

    def finish(self, record: Any, stages: list[tuple[str, float]]) -> None:
        """The stage timings and the record's numbers (``record/…``), logged and set as the summary; trackers closed."""
        if not self.trackers:
            return
        seconds: dict[str, float] = {}
        for name, value in stages:  # a stage met twice (resumed units): its total
            key = f"stage_seconds/{name.replace(' ', '_')}"
            seconds[key] = seconds.get(key, 0.0) + value
        plain = record.to_dict()
        summary = {f"record/{k}": v for k, v in _numbers(plain).items() if k not in ("schema_version", "seed")}
        summary.update({f"record/{k}": v for k, v in _numbers(plain.get("extra") or {}).items()})
        summary.update(seconds)
        for t in self.trackers:
            t.finish(summary, self._last_step)

    def abort(self) -> None:
        """The run failed or was interrupted: close every tracker, keeping what it logged."""
        for t in self.trackers:
            t.abort()


def check_installed(names: Iterable[str]) -> None:
    """Refuse, before any work, a tracker whose package is not installed (one line naming the install)."""
    import importlib.util

    for name in names:
        if importlib.util.find_spec(_PACKAGE[name]) is None:
            raise _missing(name)
