"""The report's charts, drawn with matplotlib: training curves, histograms of the teacher's scores on the kept
synthetic images, and per-class top-1 as grouped bars with the teacher's and chance's lines.

matplotlib is imported only here, and this module only when a report is written (``dfkd.benchmark.report``). The
figures are built with the object-oriented API (``matplotlib.figure.Figure``, no pyplot, no global backend state),
saved as PNG (embedded in the page) and SVG (for papers) beside it by :func:`save`. Series are ``label → values``
dicts in the order given; colours follow matplotlib's default cycle, so a run keeps its colour across the charts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100


def _finite(y: float | None) -> float:
    return float(y) if y is not None and math.isfinite(float(y)) else math.nan


def curves(
    loss: Mapping[str, tuple[Sequence[float], Sequence[float | None]]],
    top1: Mapping[str, tuple[Sequence[float], Sequence[float | None]]],
    *,
    chance: float | None = None,
    teacher: float | None = None,
) -> Figure:
    """Train loss and test top-1 per epoch, side by side; ``None`` values (epochs not evaluated) are skipped, so a
    top-1 evaluated every k epochs is a line through its points. Chance and the teacher as dashed lines."""
    fig = Figure(figsize=(11.4, 3.4), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, series, title, ylabel in ((left, loss, "train loss", "loss"), (right, top1, "test top-1", "top-1 %")):
        for label, (xs, ys) in series.items():
            points = [(x, _finite(y)) for x, y in zip(xs, ys) if not math.isnan(_finite(y))]
            if points:
                ax.plot(*zip(*points), marker="o" if len(points) <= 60 else None, markersize=3, label=label)
        ax.set(title=f"{title} per epoch", xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    right.set_ylim(0, 102)
    if teacher is not None:
        right.axhline(teacher, color="black", linestyle="--", linewidth=1, label=f"teacher {teacher:.1f} %")
    if chance is not None:
        right.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance {chance:.1f} %")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return fig


def histograms(edges: Sequence[float], series: Mapping[str, Sequence[float]], title: str, xlabel: str) -> Figure:
    """Step histograms over shared ``edges``, each series as the fraction of its images per bin (sets of different
    sizes compare); the first series also filled."""
    fig = Figure(figsize=(5.6, 3.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for i, (label, counts) in enumerate(series.items()):
        total = sum(counts) or 1
        ax.stairs([c / total for c in counts], edges, fill=i == 0, alpha=0.35 if i == 0 else 1.0, label=label)
        if i == 0:
            ax.stairs([c / total for c in counts], edges, color=ax.patches[-1].get_facecolor()[:3], linewidth=1.5)
    ax.set(title=title, xlabel=xlabel, ylabel="fraction of images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def per_class(
    students: Mapping[str, Sequence[float]],
    teacher: Sequence[float],
    *,
    chance: float,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Per-class top-1 on the real test set: one bar per run in each class's group, the teacher's per-class top-1 as
    a black step over the groups, chance as a dotted line. Class names label the groups up to 40 classes."""
    k = len(teacher)
    fig = Figure(figsize=(max(11.4, min(0.35 * k, 40.0)), 3.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    n = max(1, len(students))
    width = 0.8 / n
    for i, (label, values) in enumerate(students.items()):
        xs = [c - 0.4 + width * (i + 0.5) for c in range(k)]
        ax.bar(xs, [_finite(v) for v in values], width=width, label=label)
    ax.stairs(list(teacher), [c - 0.5 for c in range(k + 1)], color="black", linewidth=1.2, label="teacher")
    ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance {chance:.1f} %")
    ax.set(title="top-1 per class on the real test set", xlabel="class", ylabel="top-1 %", ylim=(0, 102))
    ax.set_xlim(-0.6, k - 0.4)
    if class_names is not None and k <= 40:
        ax.set_xticks(range(k), [f"{c}: {name}" if len(name) > 2 else name for c, name in enumerate(class_names)])
        ax.tick_params(axis="x", labelrotation=60 if k > 12 else 0, labelsize="small")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the axes, off the bars
    return fig


def save(fig: Figure, png: Path) -> bytes:
    """Write ``fig`` as ``png`` and as the ``.svg`` beside it; return the PNG's bytes (for embedding)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    data = buf.getvalue()
    Path(png).write_bytes(data)
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: editable and searchable in the SVG
        fig.savefig(Path(png).with_suffix(".svg"), format="svg")
    return data
