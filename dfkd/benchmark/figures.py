"""Figures for run reports, drawn with Pillow (already a dependency through torchvision): line charts,
histograms and image grids as ``PIL.Image`` objects, written as PNG and embedded in the HTML report.

Deliberately small: axes with a handful of ticks, one colour per series, a legend. No plotting library is
needed, so ``bench run`` can write its report on any machine the suite installs on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
_MARGIN = (62, 34, 16, 44)  # left, top, right, bottom (pixels)


def _font(size: int = 13) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (whole numbers only when ``integer``)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1, math.ceil(step))
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.3g}"


class _Axes:
    """A plotting area with data → pixel transforms, grid, tick labels, title and legend."""

    def __init__(
        self, size: tuple[int, int], x_range, y_range, title: str, xlabel: str, ylabel: str, x_integer: bool = False
    ):
        self.img = Image.new("RGB", size, "white")
        self.draw = ImageDraw.Draw(self.img)
        self.font, self.small = _font(14), _font(11)
        left, top, right, bottom = _MARGIN
        self.box = (left, top, size[0] - right, size[1] - bottom)
        (self.x0, self.x1), (self.y0, self.y1) = _padded(x_range), _padded(y_range)
        d, (bl, _, br, bb) = self.draw, self.box
        for ty in _ticks(self.y0, self.y1):
            py = self.py(ty)
            d.line([(bl, py), (br, py)], fill="#e6e6e6")
            d.text((bl - 6, py), _fmt(ty), fill="#333", font=self.small, anchor="rm")
        for tx in _ticks(self.x0, self.x1, 6, integer=x_integer):
            px = self.px(tx)
            d.line([(px, bb), (px, bb + 4)], fill="#333")
            d.text((px, bb + 6), _fmt(tx), fill="#333", font=self.small, anchor="mt")
        d.rectangle(self.box, outline="#333")
        d.text((size[0] / 2, 8), title, fill="black", font=self.font, anchor="mt")
        d.text(((bl + br) / 2, size[1] - 6), xlabel, fill="#333", font=self.small, anchor="mb")
        d.text((4, 8), ylabel, fill="#333", font=self.small, anchor="lt")

    def px(self, x: float) -> float:
        bl, _, br, _ = self.box
        return bl + (x - self.x0) / (self.x1 - self.x0) * (br - bl)

    def py(self, y: float) -> float:
        _, bt, _, bb = self.box
        return bb - (y - self.y0) / (self.y1 - self.y0) * (bb - bt)

    def legend(self, labels: Sequence[str]) -> None:
        if len(labels) < 2 and not (labels and labels[0]):
            return
        _, bt, br, _ = self.box
        y = bt + 6
        for i, label in enumerate(labels):
            w = self.draw.textlength(label, font=self.small)
            self.draw.rectangle([br - w - 26, y + 1, br - w - 14, y + 11], fill=PALETTE[i % len(PALETTE)])
            self.draw.text((br - w - 8, y), label, fill="#222", font=self.small)
            y += 15


def _padded(r: tuple[float, float]) -> tuple[float, float]:
    lo, hi = r
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi <= lo:
        return lo - 0.5, hi + 0.5
    return lo, hi


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def line_chart(
    series: dict[str, tuple[Sequence[float], Sequence[float | None]]],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (560, 320),
    y_range: tuple[float, float] | None = None,
) -> Image.Image:
    """One line (with point markers) per series ``label → (xs, ys)``; ``None``/NaN ys break the line."""
    xs = _finite([x for s in series.values() for x in s[0]])
    ys = _finite([y for s in series.values() for y in s[1]])
    axes = _Axes(
        size,
        (min(xs, default=0.0), max(xs, default=1.0)),
        y_range or (min(ys, default=0.0), max(ys, default=1.0)),
        title,
        xlabel,
        ylabel,
        x_integer=all(float(x).is_integer() for x in xs),
    )
    for i, (xv, yv) in enumerate(series.values()):
        colour = PALETTE[i % len(PALETTE)]
        points: list[tuple[float, float]] = []
        for x, y in zip(xv, yv):
            if y is None or not math.isfinite(float(y)):
                if len(points) > 1:
                    axes.draw.line(points, fill=colour, width=2)
                points = []
                continue
            points.append((axes.px(float(x)), axes.py(float(y))))
        if len(points) > 1:
            axes.draw.line(points, fill=colour, width=2)
        if len(xv) <= 60:
            for x, y in zip(xv, yv):
                if y is not None and math.isfinite(float(y)):
                    px, py = axes.px(float(x)), axes.py(float(y))
                    axes.draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=colour)
    axes.legend(list(series))
    return axes.img


def histogram_chart(
    edges: Sequence[float],
    series: dict[str, Sequence[float]],
    title: str,
    xlabel: str,
    size: tuple[int, int] = (560, 320),
    density: bool = True,
) -> Image.Image:
    """Step histograms over shared ``edges`` (one outline per series, the first also filled).

    ``density``: each series is shown as the fraction of its images per bin, so sets of different sizes compare.
    """
    shown = {}
    for label, counts in series.items():
        total = sum(counts) or 1
        shown[label] = [c / total if density else c for c in counts]
    top = max((v for vals in shown.values() for v in vals), default=1.0)
    axes = _Axes(
        size, (edges[0], edges[-1]), (0.0, top * 1.05 or 1.0), title, xlabel, "fraction" if density else "count"
    )
    for i, vals in enumerate(shown.values()):
        colour = PALETTE[i % len(PALETTE)]
        base = axes.py(0.0)
        if i == 0:
            for j, v in enumerate(vals):
                if v > 0:
                    axes.draw.rectangle([axes.px(edges[j]), axes.py(v), axes.px(edges[j + 1]), base], fill="#cfe0f1")
        outline = [(axes.px(edges[0]), base)]
        for j, v in enumerate(vals):
            outline += [(axes.px(edges[j]), axes.py(v)), (axes.px(edges[j + 1]), axes.py(v))]
        outline.append((axes.px(edges[-1]), base))
        axes.draw.line(outline, fill=colour, width=2)
    axes.legend(list(series))
    return axes.img


def image_grid(
    rows: Sequence[tuple[str, Sequence[Sequence[Tensor]]]],
    headers: Sequence[str],
    cell: int = 64,
    label_width: int = 150,
) -> Image.Image:
    """Rows of image strips: ``rows = [(row label, [group of uint8 (C, H, W) images, …])]``, one group per
    header (e.g. real test | synthetic of run 1 | …). Images are resized to ``cell`` pixels (nearest for small
    images, so pixels stay visible); groups are separated by a gap; an empty group leaves its cells blank."""
    per_group = max((len(g) for _, groups in rows for g in groups), default=1) or 1
    gap, head_h, pad = 14, 26, 2
    group_w = per_group * (cell + pad)
    width = label_width + len(headers) * (group_w + gap)
    height = head_h + len(rows) * (cell + pad) + 4
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(13), _font(12)
    for g, header in enumerate(headers):
        x = label_width + g * (group_w + gap)
        draw.text((x + group_w / 2, 6), header, fill="black", font=font, anchor="mt")
    for r, (label, groups) in enumerate(rows):
        y = head_h + r * (cell + pad)
        draw.text((label_width - 8, y + cell / 2), _shorten(label, 22), fill="#222", font=small, anchor="rm")
        for g, group in enumerate(groups):
            x0 = label_width + g * (group_w + gap)
            for i, image in enumerate(group):
                img.paste(to_pil(image, cell), (x0 + i * (cell + pad), y))
    return img


def to_pil(image: Tensor, size: int | None = None) -> Image.Image:
    """uint8 (C, H, W) tensor (C = 1 or 3) → RGB PIL image, optionally resized to ``size`` × ``size``."""
    arr = image.detach().cpu()
    if arr.dtype != torch.uint8:
        arr = (arr.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if arr.shape[0] == 1:
        arr = arr.expand(3, -1, -1)
    pil = Image.fromarray(arr.permute(1, 2, 0).contiguous().numpy())  # (H, W, 3) → RGB
    if size is not None and pil.size != (size, size):
        small = max(pil.size) < size
        pil = pil.resize((size, size), Image.Resampling.NEAREST if small else Image.Resampling.BILINEAR)
    return pil


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
