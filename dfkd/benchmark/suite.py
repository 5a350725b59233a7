"""Suites: a grid of benchmark cells (methods × data sets × teacher/student pairs × seeds) in one YAML file.

A suite file::

    name: cifar-table
    description: the classic CIFAR-10/100 DFKD table
    output_dir: runs/cifar-table            # records go here (default runs/<name>); --output-dir overrides
    grid:
      dataset: [cifar10, cifar100]
      pair:                                 # teacher/student pairs (or separate `teacher:` / `student:` lists)
        - {teacher: resnet34, student: resnet18}
        - {teacher: wrn40_2, student: wrn16_1}
      protocol: matched                     # matched | published | custom, or a list (a grid axis like any other)
      method: [diffdfkd, prism, deepinversion]
      seed: [0, 1, 2]
    set:                                    # every cell (dotted keys like --set: distill.epochs: 5)
      device: cuda
    cells:                                  # per-cell overrides: each `where` that matches adds its `set`
      - where: {method: deepinversion, dataset: cifar100}
        set: {bn_weight: 10.0}
    exclude:                                # cells to leave out (every given axis must match)
      - {method: real_kd, seed: 2}

Cells are expanded in a fixed order (data set, pair, protocol, method, seed), so ``--shard i/n`` (cells i, i+n,
i+2n, …; i from 0, as ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``) gives each job of an array a
deterministic, balanced slice. A cell whose ``record.json`` exists is skipped, so a suite (or one shard)
run again does only what is missing, and ``bench leaderboard --runs OUTPUT_DIR`` merges every record.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dfkd.benchmark.assembly import resolve_run_config
from dfkd.config import RunConfig, merge, nest
from dfkd.errors import ConfigError, UserError, did_you_mean

AXES = ("dataset", "pair", "teacher", "student", "protocol", "method", "seed")
TOP_KEYS = ("name", "description", "output_dir", "grid", "set", "cells", "exclude")
MATCH_KEYS = ("dataset", "teacher", "student", "protocol", "method", "seed")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the suite: its coordinates and the resolved config."""

    index: int
    dataset: str
    teacher: str | None  # as in the grid (what `where` matches); None: the preset's default
    student: str | None
    protocol: str
    method: str
    seed: int
    config: RunConfig

    @property
    def label(self) -> str:
        from dfkd.datasets import get_dataset

        spec = get_dataset(self.dataset)
        teacher, student = self.config.teacher or spec.default_teacher, self.config.student or spec.default_student
        return f"{self.dataset}/{teacher}-{student}/{self.protocol}/{self.method}/seed{self.seed}"

    def budget(self) -> dict[str, Any]:
        """What the cell spends and how it trains the student: the columns of ``bench suite run --dry-run``."""
        from dfkd.datasets import get_dataset
        from dfkd.methods import get_method_class

        cfg, d = self.config, self.config.distill
        spent = get_method_class(self.method).budget(cfg.method_config, get_dataset(self.dataset).num_classes, d)
        return {
            "images": spent.images,
            "kd_steps": spent.kd_steps,
            "T": d.temperature,
            "lr": d.lr,
            "epochs": d.epochs,
            "batch": d.batch_size,
            "schedule": d.schedule,
        }

    def coords(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in MATCH_KEYS}


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    output_dir: str
    cells: tuple[Cell, ...]

    def shard(self, index: int, count: int) -> list[Cell]:
        """Cells ``index, index + count, …`` (0 ≤ index < count)."""
        return list(self.cells[index::count])


# --------------------------------------------------------------------------------------------- loading


def builtin_suites() -> dict[str, Path]:
    """Suites shipped with the package: ``{name: path}``."""
    folder = resources.files("dfkd.benchmark") / "suites"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def find_suite(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = builtin_suites()
    if name_or_path in shipped:
        return shipped[name_or_path]
    hint = did_you_mean(name_or_path, shipped, n=3)
    raise UserError(
        f"No suite file {name_or_path!r}.{hint} Pass a YAML path or a shipped suite ({', '.join(sorted(shipped))}; "
        "`bench suite ls`)"
    )


def load_suite(name_or_path: str, *, output_dir: str | None = None) -> Suite:
    """Read a suite file and resolve every cell's config (errors name the cell and the key)."""
    path = find_suite(name_or_path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: a suite is a mapping with keys {', '.join(TOP_KEYS)}")
    _check_keys(doc, TOP_KEYS, f"{path}")
    name = str(doc.get("name") or path.stem)
    out = output_dir or doc.get("output_dir") or f"runs/{name}"
    grid = doc.get("grid") or {}
    _check_keys(grid, AXES, f"{path}: grid")
    common = _dotted(doc.get("set") or {}, f"{path}: set")
    rules = [_rule(r, f"{path}: cells[{i}]") for i, r in enumerate(doc.get("cells") or [])]
    excludes = [_where(e, f"{path}: exclude[{i}]") for i, e in enumerate(doc.get("exclude") or [])]

    cells: list[Cell] = []
    for dataset, (teacher, student), protocol, method, seed in itertools.product(
        _axis(grid, "dataset", [None]),
        _pairs(grid, path),
        _axis(grid, "protocol", [common.get("protocol")]),
        _axis(grid, "method", [None]),
        _axis(grid, "seed", [0]),
    ):
        coords = {
            "dataset": dataset,
            "teacher": teacher,
            "student": student,
            "protocol": protocol,
            "method": method,
            "seed": seed,
        }
        if any(_matches(coords, e) for e in excludes):
            continue
        overrides = common
        for where, sets in rules:
            if _matches(coords, where):
                overrides = merge(overrides, sets)
        flags = {"teacher": teacher, "student": student, "protocol": protocol, "seed": seed, "output_dir": out}
        try:
            cfg = resolve_run_config(method=method, dataset=dataset, flags=merge(overrides, flags))
        except UserError as e:
            raise type(e)(f"{path}: cell {dataset}/{teacher}-{student}/{protocol}/{method}/seed{seed}: {e}") from None
        cells.append(Cell(len(cells), cfg.dataset, teacher, student, cfg.protocol, cfg.method, cfg.seed, cfg))
    if not cells:
        raise ConfigError(f"{path}: the grid has no cells (check grid and exclude)")
    return Suite(name, str(doc.get("description") or ""), str(out), tuple(cells))


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n; None → (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard takes i/n with integers, e.g. --shard 0/4, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text}: need 0 <= i < n (shards are numbered from 0, like SLURM_ARRAY_TASK_ID)")
    return i, n


def record_path(cell: Cell) -> Path:
    """Where ``bench run`` writes this cell's record (the same path the runner uses)."""
    from dfkd.benchmark.records import run_dir
    from dfkd.benchmark.runner import run_id_for
    from dfkd.benchmark.teachers import resolve_teacher
    from dfkd.datasets import get_dataset

    cfg = cell.config
    spec = get_dataset(cfg.dataset)
    teacher = resolve_teacher(cfg.teacher, cfg.teacher_arch, spec).name
    student = cfg.student or spec.default_student
    return run_dir(cfg.output_dir, cfg.dataset, teacher, student, cfg.method, run_id_for(cfg)) / "record.json"


# --------------------------------------------------------------------------------------------- helpers


def _check_keys(doc: Any, allowed: Iterable[str], where: str) -> None:
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; valid: {', '.join(allowed)}")


def _axis(grid: Mapping, key: str, default: list) -> list:
    values = grid.get(key, default)
    values = values if isinstance(values, list) else [values]
    if not values:
        raise ConfigError(f"grid.{key} is empty")
    return values


def _pairs(grid: Mapping, path: Path) -> list[tuple[str | None, str | None]]:
    if "pair" in grid:
        if "teacher" in grid or "student" in grid:
            raise ConfigError(f"{path}: grid has both `pair` and `teacher`/`student`; use one")
        pairs = []
        for i, p in enumerate(_axis(grid, "pair", [])):
            _check_keys(p, ("teacher", "student"), f"{path}: grid.pair[{i}]")
            pairs.append((p.get("teacher"), p.get("student")))
        return pairs
    return list(itertools.product(_axis(grid, "teacher", [None]), _axis(grid, "student", [None])))


def _dotted(tree: Any, where: str) -> dict:
    """``{"distill.epochs": 5, "generator": {"dtype": "bfloat16"}}`` → nested dict."""
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys to values (like --set)")
    out: dict = {}
    for key, value in tree.items():
        out = merge(out, nest(str(key).split("."), value))
    return out


def _where(where: Any, label: str) -> dict:
    _check_keys(where, MATCH_KEYS, label)
    return dict(where)


def _rule(rule: Any, label: str) -> tuple[dict, dict]:
    _check_keys(rule, ("where", "set"), label)
    return _where(rule.get("where") or {}, f"{label}.where"), _dotted(rule.get("set") or {}, f"{label}.set")


def _matches(coords: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    def one(want: Any, have: Any) -> bool:
        return have in want if isinstance(want, list) else have == want

    return all(one(want, coords[key]) for key, want in where.items())
