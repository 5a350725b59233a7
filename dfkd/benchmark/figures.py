"""Image grids for run reports, drawn with Pillow (already a dependency through torchvision): rows of real and
synthetic images as one ``PIL.Image``, written as PNG and embedded in the HTML report. The report's charts are
matplotlib figures (``dfkd.benchmark.plots``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor


def _font(size: int = 13) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


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
