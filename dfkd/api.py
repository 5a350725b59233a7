"""The Python API for notebooks and scripts: real keyword values in, a record or a DataFrame out.

    import dfkd
    record = dfkd.run(method="deepinversion", dataset="digits", seed=1, distill={"epochs": 5}, iterations=30)
    record.student_top1, record.load_student()          # the numbers, and the trained student (eval mode)
    df = dfkd.load_runs("runs")                          # every record under runs/, one row each

Keyword overrides are what ``--set`` takes, as Python values: run-level fields (``seed``, ``teacher``, ``distill``
as a dict or ``**{"distill.epochs": 5}``) and the method's own fields (``bn_weight=0.2``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dfkd.benchmark.records import RunRecord


def run(
    config: Any = None,
    *,
    method: str | None = None,
    dataset: str | None = None,
    quiet: bool = True,
    force: bool = False,
    **overrides: Any,
) -> RunRecord:
    """Run one benchmark cell (``bench run``) and return its record. ``config``: a resolved ``RunConfig`` (then no
    other argument), or None to resolve ``method`` / ``dataset`` with the presets and ``overrides``."""
    from dfkd.benchmark.assembly import resolve_run_config
    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.runner import run as run_config
    from dfkd.config import merge, nest
    from dfkd.errors import UserError

    if config is not None:
        if method or dataset or overrides:
            raise UserError("dfkd.run: give a RunConfig or method/dataset/overrides, not both")
        return run_config(config, reporter=Reporter(quiet=quiet), force=force)
    flags: dict[str, Any] = {}
    for key, value in overrides.items():
        flags = merge(flags, nest(key.split("."), dict(value) if isinstance(value, Mapping) else value))
    cfg = resolve_run_config(method=method, dataset=dataset, flags=flags)
    return run_config(cfg, reporter=Reporter(quiet=quiet), force=force)


def load_runs(runs_dir: str | Path = "runs", *, extra: bool = True) -> Any:
    """Every ``record.json`` under ``runs_dir`` as a pandas DataFrame, one row per run: the record's fields (not the
    per-epoch history, the config or the diagnostics) and, with ``extra``, its ``extra`` metrics as columns; ``path``
    is the record's file (``RunRecord.read(path).load_student()`` gets the student)."""
    import pandas as pd

    from dfkd.benchmark.records import load_records

    rows = []
    for record in load_records(runs_dir):
        row = {k: v for k, v in record.items() if k not in ("history", "config", "diagnostics", "extra", "env")}
        row["path"] = row.pop("_path")
        if extra:
            row.update(record.get("extra") or {})
        rows.append(row)
    return pd.DataFrame(rows)
