"""Leaderboards: run records → one row per (dataset, teacher, student, method), beside published numbers.

Usage::

    records = load_records("runs")                       # every runs/**/record.json, validated (records.py)
    df = build_leaderboard(records, dataset="cifar10", reference=load_reference())
    write_leaderboard(df, "results/")                    # results/leaderboard-cifar10.csv + .md

Two kinds of row, never mixed (the ``kind`` column says which):

- ``measured``: the runs in ``records``, grouped by (dataset, teacher, student, method) and averaged
  over seeds. The headline is ``student_top1_mean``: the student's top-1 at the **last** epoch.
  ``student_top1_best_mean`` (best epoch, picked on the test set) is kept for comparison with papers.
- ``reference``: published numbers from ``reference.csv`` (with their ``source``). The authors
  report the best test accuracy over epochs, so their number goes in ``student_top1_best_mean``
  and ``student_top1_mean`` stays empty.

The CSV holds raw numbers only; the Markdown beside it rounds to two decimals for reading.
The canonical ``reference.csv`` ships inside the package (``dfkd/benchmark/reference.csv``) so it is
there for an installed ``bench``; ``results/reference.csv`` is a byte-identical copy for readers
of the repository, and a test keeps the two equal.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from dfkd.benchmark.records import SCHEMA_MAJOR, RecordError, load_records
from dfkd.errors import UserError
from dfkd.paths import atomic_write_text, safe_name

__all__ = [
    "LEADERBOARD_COLUMNS",
    "REFERENCE_COLUMNS",
    "REFERENCE_CSV",
    "SCHEMA_MAJOR",
    "RecordError",
    "build_leaderboard",
    "load_records",
    "load_reference",
    "paper_view",
    "write_leaderboard",
]

REFERENCE_CSV = Path(__file__).with_name("reference.csv")  # packaged copy of results/reference.csv

REFERENCE_COLUMNS: tuple[str, ...] = (
    "dataset",  # registry name: cifar10, cifar100, imagenet
    "teacher",  # models registry name, e.g. resnet34, torchvision/resnet50
    "student",  # models registry name
    "method",  # registry-style lower case; "teacher", "scratch", "real_kd" are real-data rows
    "student_top1_best",  # published top-1 %, best over epochs as the authors report it
    "images",  # number of (synthetic, or for scratch real) training images when the source gives it
    "source",  # the README the number comes from; several joined with "; "
    "note",  # label in the source, caveats (e.g. sources that disagree)
)

# The fixed column order of every leaderboard (CSV and Markdown). Columns for ``extra`` metrics
# (one per key, mean over seeds, sorted by key) follow these.
LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "dataset",
    "teacher",
    "student",
    "method",
    "kind",  # "measured" (our runs) or "reference" (published number)
    "protocol",  # matched | published | custom (never averaged across); reference rows are "published"
    "n_seeds",  # number of runs averaged (measured only)
    "seeds",  # their seeds, sorted, comma separated: "0,1,2"
    "student_top1_mean",  # HEADLINE: student top-1 % at the last epoch, mean over seeds (measured only)
    "student_top1_std",  # sample standard deviation (ddof=1) of the above; empty for one seed
    "student_top1_best_mean",  # best-over-epochs top-1 %, mean over seeds; the published number for reference rows
    "student_top5_mean",  # last-epoch top-5 %, mean over seeds
    "teacher_top1_mean",  # teacher top-1 % on the same test set
    "top1_ratio",  # student_top1_mean / teacher_top1_mean
    "teacher_student_agreement_mean",  # % of test images where student and teacher agree (runs that report it)
    "num_synthetic_images",  # synthetic images used for distillation, mean over seeds (reference: as published)
    "synthesis_seconds_mean",  # wall-clock seconds spent synthesising, mean over seeds
    "distill_seconds_mean",  # wall-clock seconds spent distilling, mean over seeds
    "precision_mean",  # synthetic-set precision (k-NN manifolds, teacher features; Kynkäänniemi et al. 2019)
    "recall_mean",  # synthetic-set recall, same space
    "density_mean",  # synthetic-set density (Naeem et al. 2020), same space
    "coverage_mean",  # synthetic-set coverage (Naeem et al. 2020), same space
    "teacher_fd_mean",  # Fréchet distance synthetic vs real test, teacher penultimate features (not FID)
    "epochs",  # distillation epochs of the runs (measured only)
    "config_id",  # the runs' config hash without the seed (RunRecord.config_id): one row per configuration
    "run_ids",  # the run ids averaged, comma separated (their folders: runs/<dataset>/<pair>/<method>/<run id>)
    "generator",  # the method's generator: a diffusers folder or Hub id, or the in-loop network's name
    "teacher_digest",  # the first 16 hex digits of the teacher file's sha256 (which weights were distilled)
    "reconstructed",  # "yes": no released code, written from the paper alone (MethodCard.paper_only); "no"
    "source",  # where a reference number comes from; empty for measured rows
    "note",  # reference-row caveats; empty for measured rows
)

# leaderboard column → the ``extra`` key of the run record it averages (written by the diagnose stage)
_SYNTHETIC_COLUMNS = {
    "precision_mean": "synthetic/precision",
    "recall_mean": "synthetic/recall",
    "density_mean": "synthetic/density",
    "coverage_mean": "synthetic/coverage",
    "teacher_fd_mean": "synthetic/teacher_fd",
}
_KEY = ("dataset", "teacher", "student", "method")
_STRING_COLUMNS = (
    "dataset",
    "teacher",
    "student",
    "method",
    "kind",
    "protocol",
    "seeds",
    "config_id",
    "run_ids",
    "generator",
    "teacher_digest",
    "reconstructed",
    "source",
    "note",
)
# order of the protocol sections; records written before protocols existed say "unstated"
_PROTOCOL_ORDER = {"matched": 0, "published": 1, "custom": 2, "unstated": 3}
_INTEGER_COLUMNS = ("n_seeds", "epochs")
_REAL_DATA_METHODS = frozenset({"teacher", "scratch", "real_kd"})  # reference rows whose images are not synthetic

_MARKDOWN_NOTE = (
    "> Rows are grouped by protocol and never averaged across protocols: `matched` gives every method the data "
    "set's one KD recipe and the same budget of synthetic images and student steps; `published` runs each method "
    "with its own released recipe and budget, beside the published reference rows; `custom` is anything else. "
    "Reference rows (`kind` = reference) are published numbers as the authors report them: the best test "
    "accuracy over epochs, shown in `student_top1_best_mean`, with their `source`. The measured headline "
    "`student_top1_mean` is the student's top-1 at the last epoch (mean over seeds). Generated from run records "
    "by `dfkd.benchmark.leaderboard`; do not edit by hand."
)


# -- reference -----------------------------------------------------------------------------------


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """The published numbers (``REFERENCE_COLUMNS``); default: the copy shipped in the package."""
    path = Path(path) if path is not None else REFERENCE_CSV
    if not path.is_file():
        raise UserError(f"reference table {str(path)!r} not found")
    df = pd.read_csv(path, dtype={"images": "Int64", "student_top1_best": "float64"}, keep_default_na=False,
                     na_values={"images": [""], "student_top1_best": [""]})  # fmt: skip
    missing = [c for c in REFERENCE_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: reference table lacks column(s) {', '.join(missing)}")
    df = df[list(REFERENCE_COLUMNS)].copy()
    for column in ("dataset", "teacher", "student", "method", "source", "note"):
        df[column] = df[column].astype(str)
    return df


# -- leaderboard ---------------------------------------------------------------------------------


def _mean(values: Iterable[float | None]) -> float:
    """Mean of the values that are present (None and NaN are missing); NaN when none is."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _sample_std(values: list[float]) -> float:
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _extra_column(key: str) -> str:
    return f"extra/{key}" if key in LEADERBOARD_COLUMNS else key


def _measured_row(group: list[Mapping[str, Any]]) -> dict[str, Any]:
    first = group[0]
    where = f"{first['dataset']} {first['teacher']}→{first['student']} {first['method']}"
    seeds = sorted(int(r["seed"]) for r in group)
    if len(set(seeds)) != len(seeds):
        warnings.warn(f"{where}: several runs share a seed ({seeds}); all are averaged", stacklevel=3)
    epochs = sorted({r.get("epochs") for r in group}, key=str)
    if len(epochs) > 1:
        warnings.warn(f"{where}: runs with different epochs {epochs} are averaged together", stacklevel=3)
    top1 = [float(r["student_top1"]) for r in group]
    student_top1_mean = _mean(top1)
    teacher_top1_mean = _mean(r["teacher_top1"] for r in group)
    row: dict[str, Any] = {
        **{k: first[k] for k in _KEY},
        "kind": "measured",
        "protocol": _protocol(first),
        "n_seeds": len(group),
        "seeds": ",".join(str(s) for s in seeds),
        "student_top1_mean": student_top1_mean,
        "student_top1_std": _sample_std(top1),
        "student_top1_best_mean": _mean(r["student_top1_best"] for r in group),
        "student_top5_mean": _mean(r["student_top5"] for r in group),
        "teacher_top1_mean": teacher_top1_mean,
        "top1_ratio": student_top1_mean / teacher_top1_mean if teacher_top1_mean else math.nan,
        "teacher_student_agreement_mean": _mean(r.get("teacher_student_agreement") for r in group),
        "num_synthetic_images": _mean(r["num_synthetic_images"] for r in group),
        "synthesis_seconds_mean": _mean(r["synthesis_seconds"] for r in group),
        "distill_seconds_mean": _mean(r["distill_seconds"] for r in group),
        "epochs": epochs[0] if len(epochs) == 1 else None,
        "config_id": first.get("config_id") or "",
        "run_ids": ",".join(sorted(str(r.get("run_id", "")) for r in group)),
        "generator": _joined(_generator(r) for r in group),
        "teacher_digest": _joined(str((r.get("teacher_file") or {}).get("digest") or "")[:16] for r in group),
        "reconstructed": _joined(_reconstructed(r) for r in group),
        "source": "",
        "note": "",
    }
    for column, key in _SYNTHETIC_COLUMNS.items():
        row[column] = _mean((r.get("extra") or {}).get(key) for r in group)
    for key in sorted({k for r in group for k in (r.get("extra") or {})} - set(_SYNTHETIC_COLUMNS.values())):
        row[_extra_column(key)] = _mean((r.get("extra") or {}).get(key) for r in group)
    return row


def _joined(values: Iterable[str]) -> str:
    """The distinct non-empty values, in order, joined by " | " (one value when the seeds agree, as they should)."""
    return " | ".join(dict.fromkeys(v for v in values if v))


def _generator(record: Mapping[str, Any]) -> str:
    """The generator a run used, from its config: ``<method>.generator`` (``path`` of a diffusers generator, or an
    in-loop network's name); "" for methods without one."""
    section = (record.get("config") or {}).get(record["method"]) or {}
    generator = section.get("generator") if isinstance(section, Mapping) else None
    if isinstance(generator, Mapping):
        generator = generator.get("path")
    return str(generator) if generator else ""


def _reconstructed(record: Mapping[str, Any]) -> str:
    card = record.get("method_card")
    return "" if not isinstance(card, Mapping) else ("yes" if card.get("paper_only") else "no")


def _protocol(record: Mapping[str, Any]) -> str:
    return str(record.get("protocol") or "unstated")


def _reference_rows(reference: pd.DataFrame, datasets: set[str] | None) -> list[dict[str, Any]]:
    missing = [c for c in REFERENCE_COLUMNS if c not in reference.columns]
    if missing:
        raise UserError(f"reference table lacks column(s) {', '.join(missing)}; load it with load_reference()")
    rows = []
    for ref in reference.to_dict("records"):
        if datasets is not None and ref["dataset"] not in datasets:
            continue
        images = ref["images"]
        synthetic = ref["method"] not in _REAL_DATA_METHODS and not pd.isna(images)
        rows.append(
            {
                **{k: str(ref[k]) for k in _KEY},
                "kind": "reference",
                "protocol": "published",
                "student_top1_best_mean": float(ref["student_top1_best"]),
                "num_synthetic_images": float(images) if synthetic else math.nan,
                "source": "" if pd.isna(ref["source"]) else str(ref["source"]),
                "note": "" if pd.isna(ref["note"]) else str(ref["note"]),
            }
        )
    return rows


def build_leaderboard(
    records: Iterable[Mapping[str, Any]],
    dataset: str | None = None,
    reference: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (dataset, teacher, student, method) of ``records``, then the reference rows.

    ``dataset`` keeps only that data set (measured and reference). ``reference`` (from
    :func:`load_reference`) adds the published rows for ``dataset``, or, when it is None, for the
    data sets present in ``records`` (all of them when there are no records); pass None for no
    reference rows. Columns: ``LEADERBOARD_COLUMNS``, then one per ``extra`` key in sorted order.
    Measured rows come first, sorted by (dataset, teacher, student, student_top1_mean descending),
    then reference rows by (dataset, teacher, student) in the order of the reference table.
    """
    records = [r for r in records if dataset is None or r["dataset"] == dataset]
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for record in records:  # seeds of one configuration are averaged; different configurations get own rows
        key = (*(record[k] for k in _KEY), _protocol(record), record.get("config_id") or "")
        groups.setdefault(key, []).append(record)
    configs_per_cell: dict[tuple, int] = {}
    for key in groups:
        configs_per_cell[key[:-1]] = configs_per_cell.get(key[:-1], 0) + 1
    measured = []
    for key, group in groups.items():
        row = _measured_row(group)
        if configs_per_cell[key[:-1]] > 1:
            row["note"] = f"config {key[-1] or 'unknown'}"
        measured.append(row)
    measured.sort(key=lambda r: (r["dataset"], r["teacher"], r["student"], r["method"]))
    measured.sort(key=lambda r: -r["student_top1_mean"] if not math.isnan(r["student_top1_mean"]) else math.inf)
    measured.sort(key=lambda r: (r["dataset"], _PROTOCOL_ORDER.get(r["protocol"], 9), r["teacher"], r["student"]))

    published: list[dict[str, Any]] = []
    if reference is not None:
        datasets = {dataset} if dataset is not None else ({r["dataset"] for r in records} or None)
        published = _reference_rows(reference, datasets)
        published.sort(key=lambda r: (r["dataset"], r["teacher"], r["student"]))  # stable: table order inside

    extras = sorted({c for row in measured for c in row} - set(LEADERBOARD_COLUMNS))
    columns = [*LEADERBOARD_COLUMNS, *extras]
    rows = sorted(
        [*measured, *published], key=lambda r: (r["dataset"], _PROTOCOL_ORDER.get(r["protocol"], 9))
    )  # stable: within a data set, matched rows, then published measured rows and the reference rows beside them
    return _typed(pd.DataFrame(rows, columns=columns))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard's column types: text columns as str ("" when empty), ``n_seeds`` Int64, the rest float64."""
    df = df.copy()
    for column in df.columns:
        if column in _STRING_COLUMNS:
            df[column] = df[column].astype(object).where(df[column].notna(), "").astype(str)
        elif column in _INTEGER_COLUMNS:
            df[column] = pd.to_numeric(df[column].replace("", None)).astype("Int64")
        else:
            df[column] = pd.to_numeric(df[column].replace("", None)).astype("float64")
    return df


def read_leaderboard(path: str | Path) -> pd.DataFrame:
    """A leaderboard CSV written by :func:`write_leaderboard`, with the types :func:`build_leaderboard` gives."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise UserError(f"Cannot read the leaderboard {path} ({e}): write it with `bench leaderboard`") from e
    if missing := [c for c in (*_KEY, "kind", "protocol", "student_top1_mean") if c not in df.columns]:
        raise UserError(f"{path} is not a leaderboard CSV (no column {missing[0]!r}): use `bench leaderboard`")
    return _typed(df)


def combine_leaderboards(kept: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``new``, plus the measured rows of ``kept`` for the cells (data set, teacher, student, method, protocol) that
    ``new`` does not measure, sorted as :func:`build_leaderboard` sorts; reference rows come from ``new`` only.

    For adding methods to a committed table without the earlier runs' records (``benchmarks/digits_table.py
    --keep``): the carried rows are the earlier records' means, unchanged."""
    cell = [*_KEY, "protocol"]
    measured_new = new[new["kind"] == "measured"]
    done = set(measured_new[cell].itertuples(index=False, name=None))
    new_cell = pd.Series([c not in done for c in kept[cell].itertuples(index=False, name=None)], index=kept.index)
    carried = kept[(kept["kind"] == "measured") & new_cell]
    rows = pd.concat([measured_new, carried], ignore_index=True)
    rows["_order"] = rows["protocol"].map(lambda p: _PROTOCOL_ORDER.get(p, 9))
    rows = rows.sort_values(
        ["dataset", "_order", "teacher", "student", "student_top1_mean"], ascending=[True, True, True, True, False]
    )
    rows = rows.drop(columns="_order")
    reference = new[new["kind"] != "measured"]
    out = pd.concat([rows, reference], ignore_index=True)
    order = out["protocol"].map(lambda p: _PROTOCOL_ORDER.get(p, 9))
    out = out.iloc[sorted(range(len(out)), key=lambda i: (out["dataset"].iat[i], order.iat[i]))]
    extras = sorted(set(out.columns) - set(LEADERBOARD_COLUMNS))
    return _typed(out[[*LEADERBOARD_COLUMNS, *extras]].reset_index(drop=True))


# -- writing -------------------------------------------------------------------------------------


def _markdown_cell(column: str, value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, str):
        return value.replace("|", "\\|")
    if column in _INTEGER_COLUMNS or column == "num_synthetic_images":
        return str(int(value)) if float(value).is_integer() else f"{float(value):.2f}"
    return f"{float(value):.2f}"


def _markdown(df: pd.DataFrame) -> str:
    """A heading per protocol (in ``_PROTOCOL_ORDER``), each with its own table."""
    from dfkd.config import PROTOCOLS

    datasets = ", ".join(dict.fromkeys(df["dataset"])) or "(no rows)"
    lines = [f"# Leaderboard: {datasets}", "", _MARKDOWN_NOTE, ""]
    header = "| " + " | ".join(c.replace("|", "\\|") for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    for protocol in dict.fromkeys(df["protocol"]):
        part = df[df["protocol"] == protocol]
        about = PROTOCOLS.get(protocol, "records written before protocols were recorded")
        lines += [f"## Protocol: {protocol}", "", f"{about}.", "", header, rule]
        for row in part.itertuples(index=False):
            lines.append("| " + " | ".join(_markdown_cell(c, v) for c, v in zip(df.columns, row)) + " |")
        lines.append("")
    return "\n".join(lines)


def _write_pair(df: pd.DataFrame, csv_path: Path) -> list[Path]:
    """Both files atomically: two runs finishing at once each leave a whole table, never a torn one."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(csv_path, df.to_csv(index=False, na_rep="", lineterminator="\n"))
    md_path = csv_path.with_suffix(".md")
    atomic_write_text(md_path, _markdown(df))
    return [csv_path, md_path]


def write_leaderboard(df: pd.DataFrame, out: str | Path) -> list[Path]:
    """Write ``df`` as CSV (raw numbers) and Markdown (two decimals) and return the paths written.

    ``out`` ending in ``.csv`` writes that file and the ``.md`` of the same stem beside it. Any other
    ``out`` is a directory (created if needed) that gets ``leaderboard-<dataset>.csv`` and ``.md``
    for each data set in ``df``; columns that are empty for every row of a data set (``extra``
    metrics measured on another one) are dropped from that data set's files.
    """
    out = Path(out)
    if out.suffix.lower() == ".csv" and not out.is_dir():
        return _write_pair(df, out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} must be a directory or a path ending in .csv")
    written: list[Path] = []
    for name in dict.fromkeys(df["dataset"]):
        part = df[df["dataset"] == name].reset_index(drop=True)
        empty_extras = [c for c in part.columns[len(LEADERBOARD_COLUMNS) :] if part[c].isna().all()]
        written += _write_pair(part.drop(columns=empty_extras), out / f"leaderboard-{safe_name(name)}.csv")
    return written


# -- paper view ----------------------------------------------------------------------------------


def _cell(mean: float, std: float, seeds: int) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.2f}" if seeds < 2 or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def paper_view(df: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """The leaderboard shaped like the papers' tables (CMI / Fast / DM-KD READMEs): one table per (data set,
    protocol), methods as rows, teacher→student pairs as columns; a cell is our last-epoch top-1, mean ± std over
    seeds, with the published number (best over epochs, as the authors report it) beside it in brackets where the
    reference table has one. Reference-only methods appear as rows of brackets, so the table lists what was not run."""
    tables: dict[tuple[str, str], pd.DataFrame] = {}
    measured = df[df["kind"] == "measured"]
    reference = df[df["kind"] == "reference"]
    for (dataset, protocol), part in measured.groupby(["dataset", "protocol"], sort=False):
        published = reference[reference["dataset"] == dataset] if protocol == "published" else reference.iloc[0:0]
        pairs = list(dict.fromkeys(f"{t}→{s}" for t, s in zip(part["teacher"], part["student"], strict=True)))
        if protocol == "published":
            pairs += [
                p
                for p in dict.fromkeys(
                    f"{t}→{s}" for t, s in zip(published["teacher"], published["student"], strict=True)
                )
                if p not in pairs
            ]
        methods = list(dict.fromkeys([*part["method"], *published["method"]]))
        rows = []
        for method in methods:
            row = {"method": method}
            for pair in pairs:
                teacher, student = pair.split("→")
                ours = part[(part["method"] == method) & (part["teacher"] == teacher) & (part["student"] == student)]
                theirs = published[
                    (published["method"] == method)
                    & (published["teacher"] == teacher)
                    & (published["student"] == student)
                ]
                text = ""
                if len(ours):
                    r = ours.iloc[0]
                    text = _cell(float(r["student_top1_mean"]), float(r["student_top1_std"]), int(r["n_seeds"]))
                if len(theirs):
                    text = f"{text} [{float(theirs.iloc[0]['student_top1_best_mean']):.2f}]".strip()
                row[pair] = text
            rows.append(row)
        tables[(str(dataset), str(protocol))] = pd.DataFrame(rows, columns=["method", *pairs])
    return tables


def paper_markdown(tables: Mapping[tuple[str, str], pd.DataFrame]) -> str:
    """The paper view as Markdown, one section per (data set, protocol)."""
    out = []
    for (dataset, protocol), table in tables.items():
        out.append(f"## {dataset} — {protocol}\n")
        out.append(
            "Student top-1 (%) at the last epoch, mean ± std over seeds; [published number, best over epochs].\n"
        )
        header = "| " + " | ".join(table.columns) + " |"
        out += [header, "|" + "---|" * len(table.columns)]
        out += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
        out.append("")
    return "\n".join(out)


def write_paper_view(df: pd.DataFrame, folder: str | Path) -> list[Path]:
    """``leaderboard-<dataset>-paper.md`` per data set in ``df`` (every protocol of it), in ``folder``."""
    tables = paper_view(df)
    written = []
    for dataset in dict.fromkeys(d for d, _ in tables):
        path = Path(folder) / f"leaderboard-{safe_name(dataset)}-paper.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, paper_markdown({k: v for k, v in tables.items() if k[0] == dataset}))
        written.append(path)
    return written
