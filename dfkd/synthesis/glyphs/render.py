"""Typeset glyphs with attribute captions: the training data of the embedded ``glyphs`` generator.

Nothing here reads a data set. Characters (digits, Latin letters, a few symbols) are rendered from font files
that are available offline — the fonts matplotlib ships (DejaVu, STIX, Computer Modern) and, when installed,
a fixed list of Debian font packages (``DEBIAN_FONT_PACKAGES``: handwriting-style, URW, Free and Liberation
fonts) — into a bank of 64×64 masks, each glyph scaled to fill a 56×56 box. ``augment`` turns bank entries
into 32×32 RGB images with generic augmentations, all drawn from a ``torch.Generator``:

    stroke weight   erode (thin) / dilate (bold, heavy) the 64×64 mask with a 3×3 or 5×5 max-pool
    geometry        one affine map: glyph size f ∈ [0.5, 1] of the frame, rotation ±15°, shear ±0.3 (slant),
                    position anywhere the glyph still fits; bilinear resampling to 32×32
    blur            Gaussian, σ ∈ [0.3, 1.5] px for half of the images
    colours         white on black, black on white, or two named colours with enough contrast

and ``caption`` writes an English caption from those attributes ("a bold italic serif digit seven, white on
black", "the lowercase letter g, small, at the top left"), mentioning each attribute with probability
``mention``, naming the character at category level ("a digit", "a character") some of the time, and
returning "" with probability ``dropout`` (classifier-free guidance). ``VOCABULARY`` lists the words, so a
prompt builder (PRISM's) can draw styles the generator knows.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from dfkd.errors import UserError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SYMBOL_NAMES = {
    "+": "plus sign",
    "-": "minus sign",
    "=": "equals sign",
    "?": "question mark",
    "!": "exclamation mark",
    "#": "hash sign",
    "%": "percent sign",
    "&": "ampersand",
    "@": "at sign",
    "*": "asterisk",
    "/": "slash",
    "<": "less-than sign",
    ">": "greater-than sign",
    "$": "dollar sign",
}


@dataclass(frozen=True)
class Glyph:
    """One character of the set: its text, kind (digit | upper | lower | symbol) and spoken name."""

    char: str
    kind: str
    name: str  # "seven", "a", "plus sign"

    def phrases(self) -> tuple[str, ...]:
        """Noun phrases naming exactly this character ("digit seven", "number 7", "capital letter a")."""
        if self.kind == "digit":
            return (f"digit {self.name}", f"number {self.name}", f"digit {self.char}", f"number {self.char}")
        if self.kind == "upper":
            return (f"capital letter {self.name}", f"uppercase letter {self.name}", f"capital {self.name}")
        if self.kind == "lower":
            return (f"lowercase letter {self.name}", f"lowercase {self.name}")
        return (self.name,)

    def categories(self) -> tuple[str, ...]:
        """Noun phrases naming only its kind ("digit", "letter", "character")."""
        words = {"digit": ("digit", "number"), "upper": ("letter",), "lower": ("letter",), "symbol": ("symbol",)}
        return (*words[self.kind], "character", "glyph")

    def class_prompt(self) -> str:
        """The canonical class prompt: "the digit seven", "the capital letter a", "the plus sign"."""
        return "the " + {"digit": f"digit {self.name}", "upper": f"capital letter {self.name}"}.get(
            self.kind, f"lowercase letter {self.name}" if self.kind == "lower" else self.name
        )


def _charset() -> tuple[Glyph, ...]:
    digits = [Glyph(str(i), "digit", w) for i, w in enumerate(DIGIT_WORDS)]
    upper = [Glyph(c, "upper", c.lower()) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    lower = [Glyph(c, "lower", c) for c in "abcdefghijklmnopqrstuvwxyz"]
    symbols = [Glyph(c, "symbol", n) for c, n in SYMBOL_NAMES.items()]
    return (*digits, *upper, *lower, *symbols)


CHARSET: tuple[Glyph, ...] = _charset()  # 76 characters; a glyph's index here is its class label

# ------------------------------------------------------------------------------------------------ fonts

FAMILIES = ("serif", "sans-serif", "monospace", "handwritten")

# Debian packages the full build installs (``--install-fonts``) and uses when present; each folder → family rule.
DEBIAN_FONT_PACKAGES = (
    "fonts-dkg-handwriting",
    "fonts-breip",
    "fonts-bwht",
    "fonts-femkeklaver",
    "fonts-humor-sans",
    "fonts-comic-neue",
    "fonts-urw-base35",
    "fonts-freefont-ttf",
    "fonts-liberation",
)
_DEBIAN_DIRS = (  # (folder under /usr/share/fonts, family or None = by file name, licence)
    ("truetype/fifthhorseman", "handwritten", "GPL-3+ (fonts-dkg-handwriting)"),
    ("truetype/breip", "handwritten", "OFL-1.0 (fonts-breip)"),
    ("opentype/bwht", "handwritten", "OFL-1.1 (fonts-bwht)"),
    ("truetype/femkeklaver", "handwritten", "CC-BY-SA-3.0 (fonts-femkeklaver)"),
    ("truetype/humor-sans", "handwritten", "OFL-1.1 (fonts-humor-sans)"),
    ("opentype/comic-neue", "handwritten", "OFL-1.1 (fonts-comic-neue)"),
    ("opentype/urw-base35", None, "AGPL-3 with font exception (fonts-urw-base35)"),
    ("truetype/freefont", None, "GPL-3+ with font exception (fonts-freefont-ttf)"),
    ("truetype/liberation", None, "GPL-2 with font exception (fonts-liberation 1.x)"),
)
_BY_NAME = (  # file-name prefix → family, for the folders above whose family is None and for matplotlib's
    ("DejaVuSansMono", "monospace"),
    ("DejaVuSans-", "sans-serif"),
    ("DejaVuSans.", "sans-serif"),
    ("DejaVuSerif-", "serif"),
    ("DejaVuSerif.", "serif"),
    ("STIXGeneral", "serif"),
    ("cmr10", "serif"),
    ("cmb10", "serif"),
    ("cmti10", "serif"),
    ("cmss10", "sans-serif"),
    ("cmtt10", "monospace"),
    ("NimbusSans", "sans-serif"),
    ("URWGothic", "sans-serif"),
    ("NimbusRoman", "serif"),
    ("C059", "serif"),
    ("P052", "serif"),
    ("URWBookman", "serif"),
    ("NimbusMonoPS", "monospace"),
    ("Z003", "handwritten"),
    ("FreeMono", "monospace"),
    ("FreeSans", "sans-serif"),
    ("FreeSerif", "serif"),
    ("LiberationMono", "monospace"),
    ("LiberationSans", "sans-serif"),
    ("LiberationSerif", "serif"),
)
_MATPLOTLIB_LICENCE = {
    "DejaVu": "Bitstream Vera / DejaVu licence",
    "STIX": "OFL-1.1",
    "cm": "BaKoMa Computer Modern licence (free redistribution)",
}


@dataclass(frozen=True)
class FontFile:
    """A font file with the attributes the captions use."""

    path: str
    family: str  # one of FAMILIES
    bold: bool
    italic: bool
    source: str  # "matplotlib" or the Debian package folder
    licence: str

    @property
    def name(self) -> str:
        return Path(self.path).name

    def digest(self) -> str:
        return hashlib.sha256(Path(self.path).read_bytes()).hexdigest()


def _style(filename: str) -> tuple[bool, bool]:
    """(bold, italic) from a font file name."""
    stem = Path(filename).stem
    bold = any(k in stem for k in ("Bold", "Bol", "Bd", "Demi")) or stem in ("cmb10", "dkgBd", "dkgBI")
    italic = any(k in stem for k in ("Italic", "Oblique", "Ita", "It")) or stem in (
        "cmti10",
        "dkgBI",
        "Z003-MediumItalic",
    )
    return bold, italic


def _family_by_name(filename: str) -> str | None:
    return next((family for prefix, family in _BY_NAME if filename.startswith(prefix)), None)


def discover_fonts(system: bool = True, system_root: str = "/usr/share/fonts") -> list[FontFile]:
    """matplotlib's bundled text fonts, plus (``system``) those of ``DEBIAN_FONT_PACKAGES`` that are installed.

    Sorted by (source, file name), so the bank's order does not depend on the file system.
    """
    import matplotlib

    fonts: list[FontFile] = []
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for path in sorted(ttf.glob("*.ttf")):
        family = _family_by_name(path.name)
        if family is None:  # symbol / math / display / size-variant fonts, LastResort
            continue
        licence = next(v for k, v in _MATPLOTLIB_LICENCE.items() if path.name.startswith(k))
        fonts.append(FontFile(str(path), family, *_style(path.name), "matplotlib", licence))
    if system:
        for folder, family, licence in _DEBIAN_DIRS:
            for path in sorted(Path(system_root, folder).glob("*.[ot]tf")):
                fam = family or _family_by_name(path.name)
                if fam is not None:
                    fonts.append(FontFile(str(path), fam, *_style(path.name), folder, licence))
    return fonts


# ------------------------------------------------------------------------------------------------ bank

BANK_SIZE = 64  # side of a bank mask
_BOX = 56  # a glyph's longer side in the bank
IMAGE_SIZE = 32  # side of an augmented image


@dataclass
class GlyphBank:
    """Rendered masks: ``masks`` uint8 (N, 64, 64), ``labels`` int64 (N,) into ``CHARSET``, ``fonts`` int64 (N,)
    into ``font_files``."""

    masks: Tensor
    labels: Tensor
    fonts: Tensor
    font_files: list[FontFile]

    def __len__(self) -> int:
        return int(self.labels.numel())


def render_glyph(font_path: str, char: str, size: int = 96) -> Tensor | None:
    """One character as a (64, 64) uint8 mask, its ink scaled to fill a 56-pixel box, centred; None if the font
    lacks the character or draws nothing."""
    import numpy as np
    from matplotlib import ft2font
    from PIL import Image, ImageDraw, ImageFont

    if ft2font.FT2Font(font_path).get_char_index(ord(char)) == 0:
        return None
    font = ImageFont.truetype(font_path, size)
    canvas = Image.new("L", (size * 3, size * 3), 0)
    ImageDraw.Draw(canvas).text((size, size), char, fill=255, font=font)
    ink = np.asarray(canvas)
    rows, cols = np.nonzero(ink > 16)
    if rows.size == 0:
        return None
    crop = canvas.crop((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    scale = _BOX / max(crop.size)
    w, h = max(1, round(crop.size[0] * scale)), max(1, round(crop.size[1] * scale))
    crop = crop.resize((w, h), Image.LANCZOS)
    out = Image.new("L", (BANK_SIZE, BANK_SIZE), 0)
    out.paste(crop, ((BANK_SIZE - w) // 2, (BANK_SIZE - h) // 2))
    return torch.from_numpy(np.array(out))  # (64, 64) uint8


def build_bank(fonts: Sequence[FontFile], charset: Sequence[Glyph] = CHARSET) -> GlyphBank:
    """Every (font, character) the font covers, rendered once."""
    masks, labels, font_ids = [], [], []
    for f, font in enumerate(fonts):
        for label, glyph in enumerate(charset):
            mask = render_glyph(font.path, glyph.char)
            if mask is not None:
                masks.append(mask)
                labels.append(label)
                font_ids.append(f)
    if not masks:
        raise UserError("no glyph could be rendered. Fix: install matplotlib (its fonts are the minimum)")
    return GlyphBank(torch.stack(masks), torch.tensor(labels), torch.tensor(font_ids), list(fonts))


# ------------------------------------------------------------------------------------------------ augment

COLOURS = {  # name → RGB in [0, 1]
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "gray": (0.5, 0.5, 0.5),
    "red": (0.85, 0.1, 0.1),
    "green": (0.1, 0.65, 0.2),
    "blue": (0.15, 0.25, 0.9),
    "yellow": (0.95, 0.85, 0.1),
    "orange": (0.95, 0.5, 0.05),
    "purple": (0.55, 0.15, 0.7),
    "cyan": (0.1, 0.8, 0.85),
    "pink": (0.95, 0.5, 0.7),
    "brown": (0.5, 0.3, 0.1),
}
_COLOUR_NAMES = tuple(COLOURS)
_LUMA = {n: 0.299 * r + 0.587 * g + 0.114 * b for n, (r, g, b) in COLOURS.items()}


@dataclass(frozen=True)
class AugmentRanges:
    """The ranges ``augment`` draws from (recorded in the generator's recipe.json)."""

    stroke_levels: tuple[int, ...] = (-1, 0, 1, 2)  # erode 3×3, none, dilate 3×3, dilate 5×5 on the 64² mask
    stroke_probs: tuple[float, ...] = (0.2, 0.4, 0.25, 0.15)
    size: tuple[float, float] = (0.5, 1.0)  # glyph's longer side / frame side
    rotation_deg: float = 15.0  # ± uniform
    shear: float = 0.3  # ± uniform (x += shear·y): the slant
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # px at 32²
    white_on_black: float = 0.45  # probability; black on white 0.15; else two named colours
    black_on_white: float = 0.15
    min_contrast: float = 0.3  # |luma(fg) − luma(bg)| of a named-colour pair


@dataclass
class Attributes:
    """What ``augment`` drew for each image (per-image lists), for the captions."""

    label: list[int]
    family: list[str]
    weight: list[int]  # effective stroke weight: ≤ -1 thin, 0 regular, 1 bold, ≥ 2 heavy
    slant: list[float]  # shear + 0.25 for an italic font
    rotation: list[float]  # degrees
    size: list[float]
    offset: list[tuple[float, float]]  # glyph centre in the frame, (x, y) in [-1, 1], y down
    blur: list[float]
    colours: list[tuple[str, str]]  # (foreground, background)


def _gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Per-image Gaussian blur of (B, 1, H, W) with σ (B,) px (σ = 0 → unchanged), 7×7 kernel."""
    b = x.shape[0]
    r = torch.arange(-3, 4, dtype=x.dtype)  # (7,)
    s = sigma.clamp_min(1e-3)[:, None]  # (B, 1)
    k1 = torch.exp(-0.5 * (r[None] / s) ** 2)  # (B, 7)
    k1 = k1 / k1.sum(1, keepdim=True)
    kernel = (k1[:, :, None] * k1[:, None, :])[:, None]  # (B, 1, 7, 7)
    out = F.conv2d(F.pad(x.transpose(0, 1), (3, 3, 3, 3), mode="replicate"), kernel, groups=b)  # (1, B, H, W)
    out = out.transpose(0, 1)  # (B, 1, H, W)
    return torch.where((sigma > 0)[:, None, None, None], out, x)


def augment(
    bank: GlyphBank, index: Tensor, generator: torch.Generator, ranges: AugmentRanges = AugmentRanges()
) -> tuple[Tensor, Attributes]:
    """Bank entries ``index`` (B,) → RGB images (B, 3, 32, 32) in [0, 1] and the attributes drawn."""
    g = generator
    b = index.numel()
    mask = bank.masks[index].float()[:, None] / 255.0  # (B, 1, 64, 64)
    fonts = [bank.font_files[int(i)] for i in bank.fonts[index]]

    # stroke weight: erode / dilate the high-resolution mask
    level_id = torch.multinomial(torch.tensor(ranges.stroke_probs), b, replacement=True, generator=g)  # (B,)
    levels = torch.tensor(ranges.stroke_levels)[level_id]  # (B,)
    variants = {
        -1: -F.max_pool2d(-mask, 3, 1, 1),
        0: mask,
        1: F.max_pool2d(mask, 3, 1, 1),
        2: F.max_pool2d(mask, 5, 1, 2),
    }
    mask = torch.stack([variants[int(v)][i] for i, v in enumerate(levels)])  # (B, 1, 64, 64)

    # geometry: output coords u (in [-1, 1]) sample the bank at A·(u − t), A = zoom · shear · rotation
    u = torch.rand(b, 5, generator=g)  # (B, 5) uniforms
    size = ranges.size[0] + (ranges.size[1] - ranges.size[0]) * u[:, 0]  # (B,)
    rot = (2 * u[:, 1] - 1) * ranges.rotation_deg  # (B,) degrees
    shear = (2 * u[:, 2] - 1) * ranges.shear  # (B,)
    free = (1 - size) * 0.9  # (B,) how far the centre may move
    tx, ty = (2 * u[:, 3] - 1) * free, (2 * u[:, 4] - 1) * free  # (B,)
    zoom = (_BOX / BANK_SIZE) / size  # (B,)
    c, s = torch.cos(torch.deg2rad(rot)), torch.sin(torch.deg2rad(rot))
    rotation = torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)  # (B, 2, 2)
    shear_m = torch.zeros(b, 2, 2)
    shear_m[:, 0, 0] = shear_m[:, 1, 1] = 1
    shear_m[:, 0, 1] = shear  # x_in = x + shear·y: y grows downwards, so positive shear leans the top to the right
    a = zoom[:, None, None] * shear_m @ rotation  # (B, 2, 2)
    theta = torch.cat([a, -(a @ torch.stack([tx, ty], 1)[:, :, None])], 2)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, 1, IMAGE_SIZE, IMAGE_SIZE], align_corners=False)  # (B, 32, 32, 2)
    small = F.avg_pool2d(mask, 2)  # (B, 1, 32, 32): pre-filter before resampling to 32²
    ink = F.grid_sample(small, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, 1, 32, 32)

    # blur
    blurred = torch.rand(b, generator=g) < ranges.blur_prob
    sigma = ranges.blur_sigma[0] + (ranges.blur_sigma[1] - ranges.blur_sigma[0]) * torch.rand(b, generator=g)
    sigma = torch.where(blurred, sigma, torch.zeros(b))  # (B,)
    ink = _gaussian_blur(ink, sigma).clamp(0, 1)

    # colours
    mode = torch.rand(b, generator=g)
    picks = torch.randint(len(_COLOUR_NAMES), (b, 8), generator=g)  # candidate (fg, bg) pairs
    colours: list[tuple[str, str]] = []
    for i in range(b):
        if mode[i] < ranges.white_on_black:
            colours.append(("white", "black"))
        elif mode[i] < ranges.white_on_black + ranges.black_on_white:
            colours.append(("black", "white"))
        else:
            names = [_COLOUR_NAMES[int(j)] for j in picks[i]]
            pairs = [
                (f, bg) for f, bg in zip(names[0::2], names[1::2]) if abs(_LUMA[f] - _LUMA[bg]) >= ranges.min_contrast
            ]
            colours.append(pairs[0] if pairs else ("white", "black"))
    fg = torch.tensor([COLOURS[f] for f, _ in colours])[:, :, None, None]  # (B, 3, 1, 1)
    bg = torch.tensor([COLOURS[k] for _, k in colours])[:, :, None, None]  # (B, 3, 1, 1)
    images = bg + (fg - bg) * ink  # (B, 3, 32, 32)

    attrs = Attributes(
        label=[int(v) for v in bank.labels[index]],
        family=[f.family for f in fonts],
        weight=[int(lv) + int(f.bold) for lv, f in zip(levels, fonts)],
        slant=[float(sh) + (0.25 if f.italic else 0.0) for sh, f in zip(shear, fonts)],
        rotation=rot.tolist(),
        size=size.tolist(),
        offset=list(zip(tx.tolist(), ty.tolist())),
        blur=sigma.tolist(),
        colours=colours,
    )
    return images.clamp(0, 1), attrs


# ------------------------------------------------------------------------------------------------ captions

VOCABULARY: dict[str, tuple[str, ...]] = {  # every style word a caption can hold, by attribute
    "weight": ("thin", "bold", "heavy"),
    "slant": ("italic", "backslanted", "upright"),
    "family": FAMILIES,
    "size": ("small", "large"),
    "position": (
        "at the top",
        "at the bottom",
        "on the left",
        "on the right",
        "at the top left",
        "at the top right",
        "at the bottom left",
        "at the bottom right",
    ),
    "rotation": ("tilted",),
    "blur": ("blurry",),
    "colours": tuple(
        f"{f} on {b}"
        for f in _COLOUR_NAMES
        for b in _COLOUR_NAMES
        if abs(_LUMA[f] - _LUMA[b]) >= AugmentRanges().min_contrast
    ),
}


def _words(attrs: Attributes, i: int) -> dict[str, str]:
    """The caption word of each attribute of image ``i`` ("" where the attribute is unremarkable)."""
    w = attrs.weight[i]
    sl = attrs.slant[i]
    dx, dy = attrs.offset[i]
    vertical = "top" if dy < -0.15 else "bottom" if dy > 0.15 else ""
    horizontal = "left" if dx < -0.15 else "right" if dx > 0.15 else ""
    if vertical and horizontal:
        position = f"at the {vertical} {horizontal}"
    elif vertical:
        position = f"at the {vertical}"
    else:
        position = f"on the {horizontal}" if horizontal else ""
    return {
        "size": "small" if attrs.size[i] < 0.62 else "large" if attrs.size[i] > 0.9 else "",
        "weight": "thin" if w <= -1 else "bold" if w == 1 else "heavy" if w >= 2 else "",
        "slant": "italic" if sl > 0.15 else "backslanted" if sl < -0.15 else "upright" if abs(sl) < 0.05 else "",
        "family": attrs.family[i],
        "colours": "{} on {}".format(*attrs.colours[i]),
        "position": position,
        "rotation": "tilted" if abs(attrs.rotation[i]) > 10 else "",
        "blur": "blurry" if attrs.blur[i] > 0.8 else "",
    }


def caption(
    attrs: Attributes, i: int, rng: random.Random, mention: float = 0.6, category: float = 0.1, dropout: float = 0.1
) -> str:
    """An English caption of image ``i`` built from its attributes (see the module docstring)."""
    if rng.random() < dropout:
        return ""
    glyph = CHARSET[attrs.label[i]]
    words = {k: v for k, v in _words(attrs, i).items() if v and rng.random() < mention}
    noun = rng.choice(glyph.categories() if rng.random() < category else glyph.phrases())
    adjectives = [words.get(k, "") for k in ("size", "weight", "slant")]
    family = words.get("family", "")
    if family and rng.random() < 0.3:
        tail_family = f" in a {family} font"
    else:
        adjectives.append(family)
        tail_family = ""
    head = " ".join(w for w in (*adjectives, noun) if w)
    article = rng.choice(("the", "an" if head[0] in "aeiou" else "a"))
    tails = [words[k] for k in ("colours", "position", "rotation", "blur") if k in words]
    rng.shuffle(tails)
    return ", ".join([f"{article} {head}{tail_family}", *tails])


def sample_batch(
    bank: GlyphBank, batch: int, seed: int, ranges: AugmentRanges = AugmentRanges(), **caption_kwargs: float
) -> tuple[Tensor, Tensor, list[str]]:
    """A batch drawn entirely from ``seed``: images (B, 3, 32, 32) in [0, 1], labels (B,), captions.

    Classes are drawn uniformly, then a font that has the class, so every character is equally frequent.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(CHARSET), (batch,), generator=g)  # (B,)
    index = torch.empty(batch, dtype=torch.long)
    by_class = _entries_by_class(bank)
    pick = torch.rand(batch, generator=g)
    for i, lab in enumerate(labels.tolist()):
        entries = by_class[lab]
        index[i] = entries[min(int(pick[i] * len(entries)), len(entries) - 1)]
    images, attrs = augment(bank, index, g, ranges)
    rng = random.Random(seed)
    captions = [caption(attrs, i, rng, **caption_kwargs) for i in range(batch)]
    return images, bank.labels[index], captions


def _entries_by_class(bank: GlyphBank) -> list[Tensor]:
    cached = getattr(bank, "_by_class", None)
    if cached is None:
        cached = [torch.nonzero(bank.labels == c).flatten() for c in range(len(CHARSET))]
        bank._by_class = cached  # type: ignore[attr-defined]
    return cached


def caption_corpus() -> list[str]:
    """Every word and phrase a caption can contain (the generator's tokenizer keeps exactly what these need)."""
    corpus = ["a", "an", "the", "in a", "font", "on", ",", *FAMILIES]
    for glyph in CHARSET:
        corpus += [*glyph.phrases(), *glyph.categories(), glyph.class_prompt(), glyph.char]
    for words in VOCABULARY.values():
        corpus += list(words)
    return corpus


def font_licences(fonts: Sequence[FontFile]) -> dict[str, str]:
    """Licence per font source (for recipe.json and the docs)."""
    return {f.source if f.source != "matplotlib" else f.name.split("-")[0].split(".")[0]: f.licence for f in fonts}


def seed_for(*parts: int | str) -> int:
    """A 63-bit seed from any parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


__all__ = [
    "CHARSET",
    "COLOURS",
    "DEBIAN_FONT_PACKAGES",
    "FAMILIES",
    "VOCABULARY",
    "AugmentRanges",
    "FontFile",
    "Glyph",
    "GlyphBank",
    "augment",
    "build_bank",
    "caption",
    "caption_corpus",
    "discover_fonts",
    "sample_batch",
    "seed_for",
]
