"""Run reports: ``bench report RUN_DIR`` and ``bench compare RUN_DIR...`` → one self-contained HTML page.

The page (every image embedded as a data URI, so it can be mailed or attached to an issue) holds:

* the **metrics table** (``<table id="metrics">``): headline accuracies, cost, and what ``diagnose`` measured
  about the synthetic set (precision / recall / density / coverage, Fréchet distance, class balance, teacher
  agreement, confidence, energy), plus shifted-test-set columns, one column per run;
* a **per-class image grid**: real test images beside each run's kept synthetic images, for up to
  ``grid_classes`` classes evenly spaced over the labels;
* **training curves** (train loss and test top-1 per epoch, with the teacher's and chance's lines),
  **histograms** of teacher confidence and free energy over the kept synthetic images (shared bins across runs),
  and **per-class top-1** as grouped bars (one per run) with the teacher's per-class top-1 and chance;
* each run's resolved config and environment.

The charts are drawn with matplotlib (``dfkd.benchmark.plots``, imported only when a report is written) and
written beside the page as PNG and SVG (``<stem>-curves.png`` / ``.svg``, …); the image grid as PNG
(``<stem>-grid.png``).
Everything is read from the run folder (``record.json``) and its synthetic store; the real test images come
from the data set the run used, when it is present (the page says so when it is not).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from dfkd.benchmark import figures
from dfkd.benchmark.records import RunRecord
from dfkd.datasets.base import DatasetSpec
from dfkd.errors import UserError
from dfkd.synthesis.store import TEACHER_CONFIDENCE, TEACHER_ENERGY, SyntheticStore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# (record key or extra key, label shown, kind) — kind: "pct", "num", "int", "sec", "text"
_HEADLINE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("method", "method", "text"),
    ("dataset", "data set", "text"),
    ("pair", "teacher → student", "text"),
    ("protocol", "protocol", "text"),
    ("seed", "seed", "int"),
    ("epochs", "distillation epochs", "int"),
    ("student_top1", "student top-1 % (last epoch)", "pct"),
    ("student_top1_best", "student top-1 % (best epoch)", "pct"),
    ("student_top1_best_epoch", "best epoch", "int"),
    ("student_top5", "student top-5 % (last epoch)", "pct"),
    ("teacher_top1", "teacher top-1 %", "pct"),
    ("teacher_student_agreement", "student–teacher agreement on the test set %", "pct"),
    ("student/worst_class_top1", "student top-1 % of its worst class", "pct"),
    ("num_synthetic_images", "synthetic images used", "int"),
    ("in_loop/images_seen", "fresh images seen (generator in the loop)", "int"),
    ("synthesis/generator_steps", "generator steps", "int"),
    ("synthesis_seconds", "synthesis seconds", "sec"),
    ("distill_seconds", "distillation seconds", "sec"),
)
_SYNTHETIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("synthetic/precision", "precision (teacher features, k-NN)", "num"),
    ("synthetic/recall", "recall (teacher features, k-NN)", "num"),
    ("synthetic/density", "density (teacher features)", "num"),
    ("synthetic/coverage", "coverage (teacher features)", "num"),
    ("synthetic/teacher_fd", "Fréchet distance, teacher features", "num"),
    ("synthetic/clip_precision", "precision (CLIP features)", "num"),
    ("synthetic/clip_recall", "recall (CLIP features)", "num"),
    ("synthetic/clip_density", "density (CLIP features)", "num"),
    ("synthetic/clip_coverage", "coverage (CLIP features)", "num"),
    ("synthetic/clip_fd", "Fréchet distance, CLIP features", "num"),
    ("synthetic/class_balance", "class balance (normalised entropy, 1 = even)", "num"),
    ("synthetic/teacher_target_top1", "teacher predicts the target class %", "pct"),
    ("synthetic/teacher_confidence_mean", "mean teacher confidence", "num"),
    ("synthetic/teacher_energy_mean", "mean teacher free energy (lower = more in-distribution)", "num"),
    ("synthetic/student_teacher_agreement", "student–teacher agreement on synthetic images %", "pct"),
    ("synthetic/generated", "images generated", "int"),
    ("synthetic/kept", "images kept", "int"),
)

# the rows where a comparison marks its best run: +1 higher is better, −1 lower is better
_BETTER: dict[str, int] = {
    **dict.fromkeys(
        (
            "student_top1",
            "student_top1_best",
            "student_top5",
            "teacher_student_agreement",
            "student/worst_class_top1",
            "synthetic/precision",
            "synthetic/recall",
            "synthetic/density",
            "synthetic/coverage",
            "synthetic/clip_precision",
            "synthetic/clip_recall",
            "synthetic/clip_density",
            "synthetic/clip_coverage",
            "synthetic/class_balance",
            "synthetic/teacher_target_top1",
        ),
        1,
    ),
    **dict.fromkeys(
        (
            "synthesis_seconds",
            "distill_seconds",
            "synthetic/teacher_fd",
            "synthetic/clip_fd",
            "synthesis/generator_steps",
        ),
        -1,
    ),
}
# what must be equal for runs to compare as they stand (a comparison that differs says so above the table)
_SAME: tuple[tuple[str, str], ...] = (
    ("epochs", "distillation epochs"),
    ("num_synthetic_images", "synthetic images"),
    ("protocol", "protocol"),
    ("pair", "teacher → student"),
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:.92em}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}tr.section td{background:#fafafa;font-weight:600}
img.figure{max-width:100%;border:1px solid #eee;margin:4px 0}.note{color:#666;font-size:.9em}
td.best{font-weight:700;background:#eaf4ea}.warn{color:#8a4b00}
.row{display:flex;flex-wrap:wrap;gap:12px}pre{background:#f7f7f7;padding:8px;font-size:.8em;overflow:auto}
"""
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.images = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
});
"""


@dataclass
class RunView:
    """One run folder as the report sees it."""

    path: Path
    record: dict[str, Any]
    store: SyntheticStore | None
    store_note: str = ""  # why there are no synthetic images, when there are none
    label: str = ""

    @property
    def diagnostics(self) -> dict[str, Any]:
        return self.record.get("diagnostics") or {}

    def value(self, key: str) -> Any:
        if key == "pair":
            return f"{self.record['teacher']} → {self.record['student']}"
        if key in self.record:
            return self.record[key]
        return (self.record.get("extra") or {}).get(key)


def load_run(path: str | Path) -> RunView:
    """A run folder (or its ``record.json``) with its synthetic store when it still exists."""
    path = Path(path).expanduser()
    if path.name == "record.json":
        path = path.parent
    record_path = path / "record.json"
    if not record_path.is_file():
        raise UserError(
            f"{path} has no record.json: give a run folder written by `bench run` "
            "(runs/<dataset>/<teacher>-<student>/<method>/<run-id>/)"
        )
    record = RunRecord.read(record_path).to_dict()
    store, note = None, ""
    if record.get("store"):
        root = Path(record["store"])
        if (root / "manifest.json").is_file():
            store = SyntheticStore.open_existing(root)
        else:
            note = f"synthetic store {root} not found (moved or deleted): no synthetic images or histograms"
    else:
        note = f"{record['method']} trains on real data: no synthetic set"
    return RunView(path, record, store, note)


def _labels(runs: list[RunView]) -> None:
    methods = [r.record["method"] for r in runs]
    for r in runs:
        rec = r.record
        r.label = rec["method"] if len(set(methods)) == len(methods) else f"{rec['method']} {rec['run_id']}"


def _grid_classes(num_classes: int, n: int) -> list[int]:
    if n <= 0 or num_classes <= n:
        return list(range(num_classes))
    return sorted({round(i * (num_classes - 1) / (n - 1)) for i in range(n)}) if n > 1 else [0]


def _spread(indices: list[int], n: int) -> list[int]:
    """``n`` evenly spaced items of ``indices`` (all of them when there are at most ``n``)."""
    if len(indices) <= n:
        return indices
    return [indices[round(i * (len(indices) - 1) / max(1, n - 1))] for i in range(n)]


def _real_images(spec: DatasetSpec, data_root: str | None, classes: list[int], n: int) -> tuple[dict[int, list], str]:
    """First ``n`` test images of each class as uint8 (C, S, S), exactly as the teacher sees them."""
    try:
        test = spec.load("test", data_root, download=False)
    except UserError as e:
        return {}, f"real test images not shown: {e}"
    targets = getattr(test, "targets", None)
    if targets is None:
        targets = [int(test[i][1]) for i in range(len(test))]
    by_class: dict[int, list[int]] = {c: [] for c in classes}
    for i, y in enumerate(targets):
        y = int(y)
        if y in by_class and len(by_class[y]) < n:
            by_class[y].append(i)
    out = {}
    for c, idx in by_class.items():
        out[c] = [(spec.denormalize(test[i][0]).clamp(0, 1) * 255).round().to(torch.uint8) for i in idx]
    return out, ""


def _synthetic_images(store: SyntheticStore, classes: list[int], n: int) -> dict[int, list]:
    """``n`` kept synthetic images per class, evenly spread over the class's images in store order."""
    labels = store.read_table(kept_only=True)["label"].tolist()
    data = store.dataset(transform=None, kept_only=True)
    out = {}
    for c in classes:
        idx = [i for i, y in enumerate(labels) if y == c]
        out[c] = [data[i][0] for i in _spread(idx, n)]
    return out


def _format(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if kind == "text":
        return html.escape(str(value))
    if kind == "int":
        return f"{round(float(value)):,}"
    if kind == "pct":
        return f"{float(value):.2f}"
    if kind == "sec":
        return f"{float(value):.1f}"
    v = float(value)
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def _metrics_table(runs: list[RunView]) -> str:
    known = {k for k, _, _ in _HEADLINE_ROWS + _SYNTHETIC_ROWS}
    extras = sorted({k for r in runs for k in (r.record.get("extra") or {})} - known)
    head = "".join(f"<th>{html.escape(r.label)}</th>" for r in runs)
    lines = [f'<table id="metrics"><thead><tr><th>metric</th>{head}</tr></thead><tbody>']

    def section(title: str, rows: Sequence[tuple[str, str, str]]) -> None:
        present = [row for row in rows if any(r.value(row[0]) is not None for r in runs)]
        if not present:
            return
        lines.append(f'<tr class="section"><td colspan="{len(runs) + 1}">{html.escape(title)}</td></tr>')
        for key, label, kind in present:
            best = _best(runs, key)
            cells = "".join(
                ('<td class="best">' if i in best else "<td>") + f"{_format(r.value(key), kind)}</td>"
                for i, r in enumerate(runs)
            )
            lines.append(f'<tr data-key="{html.escape(key)}"><td>{html.escape(label)}</td>{cells}</tr>')

    section("run", _HEADLINE_ROWS)
    section("synthetic set (kept images vs the real test set)", _SYNTHETIC_ROWS)
    section("other measurements", [(k, k, "num") for k in extras])
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _best(runs: list[RunView], key: str) -> set[int]:
    """The runs holding the best value of ``key`` (``_BETTER``), when there are several runs and they differ."""
    direction = _BETTER.get(key)
    values = [r.value(key) for r in runs]
    numbers = {i: float(v) for i, v in enumerate(values) if isinstance(v, (int, float)) and math.isfinite(float(v))}
    if direction is None or len(runs) < 2 or len(set(numbers.values())) < 2:
        return set()
    top = max(direction * v for v in numbers.values())
    return {i for i, v in numbers.items() if direction * v == top}


def _differences(runs: list[RunView]) -> list[str]:
    """What the compared runs do not share (epochs, budget, protocol, pair), one phrase each."""
    out = []
    for key, label in _SAME:
        values = [r.value(key) for r in runs]
        if len({str(v) for v in values}) > 1:
            out.append(f"{label}: " + " vs ".join(f"{v} ({r.label})" for v, r in zip(values, runs)))
    return out


def _curves(runs: list[RunView], chance: float) -> Figure:
    from dfkd.benchmark import plots

    loss, top1 = {}, {}
    for r in runs:
        hist = r.record.get("history") or []
        epochs = [h["epoch"] for h in hist]
        loss[r.label] = (epochs, [h.get("loss") for h in hist])
        top1[r.label] = (epochs, [h.get("top1") for h in hist])
    teachers = {r.record.get("teacher_top1") for r in runs}
    teacher = teachers.pop() if len(teachers) == 1 else None  # one teacher line only when the runs share it
    return plots.curves(loss, top1, chance=chance, teacher=teacher)


def _histograms(runs: list[RunView], bins: int) -> dict[str, Figure]:
    """Confidence and energy of the kept synthetic images, shared bins across runs (from the stores)."""
    values: dict[str, dict[str, torch.Tensor]] = {"confidence": {}, "energy": {}}
    for r in runs:
        if r.store is None:
            continue
        table = r.store.read_table(kept_only=True)
        values["confidence"][r.label] = table[TEACHER_CONFIDENCE].double()
        values["energy"][r.label] = table[TEACHER_ENERGY].double()
    if not values["confidence"]:
        return {}
    from dfkd.benchmark import plots
    from dfkd.benchmark.diagnose import histogram

    energy = torch.cat(list(values["energy"].values()))
    lo, hi = (energy.min().item(), energy.max().item()) if energy.numel() else (0.0, 1.0)
    edges = {
        "confidence": torch.linspace(0, 1, bins + 1, dtype=torch.float64),
        "energy": torch.linspace(lo, hi if hi > lo else lo + 1, bins + 1, dtype=torch.float64),
    }
    titles = {
        "confidence": ("teacher confidence (max softmax) of kept synthetic images", "confidence"),
        "energy": ("teacher free energy −logsumexp f(x) of kept synthetic images", "energy"),
    }
    out = {}
    for name, per_run in values.items():
        series = {label: histogram(v, edges[name]) for label, v in per_run.items()}
        out[name] = plots.histograms(edges[name].tolist(), series, *titles[name])
    return out


def _per_class(runs: list[RunView], chance: float, class_names: Sequence[str]) -> Figure | None:
    from dfkd.benchmark import plots

    students = {}
    for r in runs:
        pc = r.diagnostics.get("per_class")
        if pc:
            students[f"student {r.label}" if len(runs) > 1 else "student"] = pc["student_top1"]
    if not students:
        return None
    teacher = next(r.diagnostics["per_class"]["teacher_top1"] for r in runs if r.diagnostics.get("per_class"))
    return plots.per_class(students, teacher, chance=chance, class_names=class_names)


def _embed(png: bytes, alt: str, element_id: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="figure" id="{element_id}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    grid_classes: int | None = None,
    grid_images: int | None = None,
) -> Path:
    """Write the HTML report of one run (or the side-by-side comparison of several) to ``out``; PNGs beside it."""
    from dfkd.config import DiagnoseConfig, from_dict
    from dfkd.datasets import get_dataset

    if not run_dirs:
        raise UserError("give at least one run folder")
    runs = [load_run(p) for p in run_dirs]
    datasets = sorted({r.record["dataset"] for r in runs})
    if len(datasets) > 1:
        raise UserError(f"compare runs of one data set; these are on {', '.join(datasets)}")
    _labels(runs)
    first = runs[0].record
    cfg = from_dict(DiagnoseConfig, (first.get("config") or {}).get("diagnose") or {}, prefix="diagnose.")
    n_classes = grid_classes if grid_classes is not None else cfg.grid_classes
    n_images = grid_images if grid_images is not None else cfg.grid_images
    spec = get_dataset(first["dataset"])
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.stem

    notes = [f"{r.label}: {r.store_note}" for r in runs if r.store_note]
    classes = _grid_classes(spec.num_classes, n_classes)
    real, real_note = _real_images(spec, (first.get("config") or {}).get("data_root"), classes, n_images)
    if real_note:
        notes.append(real_note)
    synthetic = {r.label: _synthetic_images(r.store, classes, n_images) for r in runs if r.store is not None}
    headers = (["real test"] if real else []) + [f"synthetic: {label}" for label in synthetic]
    names = spec.class_glosses(detailed=False)
    rows = []
    for c in classes:
        groups = ([real.get(c, [])] if real else []) + [imgs[c] for imgs in synthetic.values()]
        rows.append((f"{c}: {names[c]}", groups))

    from dfkd.benchmark import plots

    figs: dict[str, tuple[bytes, str]] = {}  # name → (PNG bytes, alt text); charts also as SVG beside the page
    if headers:
        grid = out.with_name(f"{stem}-grid.png")
        figures.image_grid(rows, headers).save(grid)
        figs["grid"] = (grid.read_bytes(), "per-class image grid: real test vs synthetic")
    chance = 100.0 / spec.num_classes
    charts = {"curves": (_curves(runs, chance), "training curves: train loss and test top-1 per epoch")}
    for name, fig in _histograms(runs, cfg.histogram_bins).items():
        charts[name] = (fig, f"histogram of teacher {name} on kept synthetic images")
    per_class = _per_class(runs, chance, spec.class_glosses(detailed=False))
    if per_class is not None:
        charts["per-class"] = (per_class, "per-class top-1 of student and teacher on the real test set")
    for name, (fig, alt) in charts.items():
        figs[name] = (plots.save(fig, out.with_name(f"{stem}-{name}.png")), alt)

    title = (
        f"{first['method']} on {first['dataset']}: {first['teacher']} → {first['student']}"
        if len(runs) == 1
        else f"{len(runs)} runs on {first['dataset']}: " + ", ".join(r.label for r in runs)
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>dfkd-bench report: {html.escape(title)}</title><style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script></head><body>",
        f"<h1>dfkd-bench report: {html.escape(title)}</h1>",
        '<p class="note">Headline: the student\'s top-1 on the real test set at the last epoch. Synthetic-set '
        "metrics compare the kept synthetic images with the real test images (k-NN manifolds, k = "
        f"{cfg.k}; at most {cfg.max_images or 'all'} images a side).</p>",
        "<h2>Metrics</h2>",
        _metrics_table(runs),
    ]
    if len(runs) > 1:
        differ = _differences(runs)
        if differ:
            parts.insert(
                -1,
                '<p class="warn" id="differences">These runs differ in more than the method — compare with care: '
                + html.escape("; ".join(differ))
                + ".</p>",
            )
        parts.insert(-1, '<p class="note">Best value of each row in bold (higher or lower, as the row reads).</p>')
    if notes:
        parts.append("<ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in notes) + "</ul>")
    sections = [
        ("grid", "Per-class images: real test vs synthetic"),
        ("curves", "Training curves"),
        ("confidence", "Teacher confidence"),
        ("energy", "Teacher free energy"),
        ("per-class", "Per-class top-1"),
    ]
    for key, heading in sections:
        if key in figs:
            png, alt = figs[key]
            parts += [f"<h2>{heading}</h2>", _embed(png, alt, f"fig-{key}")]
    parts.append("<h2>Runs</h2>")
    for r in runs:
        env = r.record.get("env") or {}
        parts.append(
            f"<details><summary>{html.escape(r.label)} — {html.escape(str(r.path))} "
            f"(git {html.escape(str(env.get('git')))}, {html.escape(str(env.get('device_name')))})</summary>"
            f"<pre>{html.escape(yaml.safe_dump(r.record.get('config') or {}, sort_keys=False))}</pre></details>"
        )
    parts.append("</body></html>")
    out.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return out
