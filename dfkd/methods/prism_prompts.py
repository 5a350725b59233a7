"""PRISM's Diversified Prompt Engineering (DPE): per-class prompt sets for text-to-image synthesis.

He et al., "PRISM: Precision-Recall Informed Data-Free Knowledge Distillation via Generative Diffusion",
arXiv 2509.16897 (2025). A DOCUMENTED RECONSTRUCTION: only the abstract is public (no code, no method
section). The abstract says DPE widens the coverage (recall) of the synthetic set; secondary reports
name three parts — semantic disambiguation, content diversification, style diversification — and a
language model writing prompts. Everything below is this suite's rebuild of that description, and every
choice is a :class:`PromptConfig` field (docs/methods/prism.md)::

    prompt = "<style> <class phrase>, <content>"     e.g. "a sketch of a crane, a large long-necked
                                                            wading bird of marshes and plains, in the snow"

1. **Semantic disambiguation** (:func:`class_phrases`): one unambiguous noun phrase per class. ImageNet:
   the first WordNet lemma and the gloss, shortened to its first clause (≤ 12 words), so "crane" 134 (the
   bird) and "crane" 517 (the machine) differ. CIFAR-10/100 and digits: curated phrases from
   ``dfkd/datasets/data/class_phrases.yaml`` ("mouse" → "a mouse, the small rodent"). Anything else: the
   name with underscores as spaces and an article.
2. **Content diversification**: per-class descriptions of viewpoint, pose, background, context, count and
   lighting, from (``PromptConfig.contents``)

   * ``templates`` — the built-in, class-agnostic :data:`CONTENT_TEMPLATES`;
   * ``file`` — a user prompt file (YAML or JSONL, e.g. written offline by any LLM; see
     :func:`load_prompt_file`) for the classes it names, templates for the others;
   * ``model`` — a local/Hub ``transformers`` text-generation model writes content phrases per class
     (:class:`TextModelContents`, cached under ``<cache>/prompts/<hash>.json``); a prompt file, when
     given too, still wins for the classes it names.
3. **Style diversification**: ``PromptConfig.styles`` (photo, close-up, sketch, painting, cartoon, ...).

Per class, the candidates are the distinct style × content prompts in a seeded random order
(``candidates_per_class`` of them); the set keeps ``prompts_per_class``: the first ones, or with
``coverage_selection`` a maximally spread subset (greedy farthest-point sampling of open_clip text
embeddings, :func:`farthest_point_sampling`). Full prompts from a prompt file are kept as written, all of
them, and the set is filled up to ``prompts_per_class`` from the file's content phrases. The sets depend
on the data set, the config (deterministic for ``seed``) and what a prompt file or text model supplies
(:func:`prompt_sets_digest` hashes the result, for store identities); each trajectory draws its prompt
with :func:`sample_prompt`. ``bench prompts`` (dfkd/cli/prompts.py) prints the sets and saves them as an
editable prompt file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dfkd.errors import ConfigError, UserError, did_you_mean
from dfkd.paths import atomic_write_text

__all__ = [
    "CONTENT_TEMPLATES",
    "DEFAULT_STYLES",
    "PromptBuilder",
    "PromptConfig",
    "PromptEntry",
    "TextModelContents",
    "build_prompt_sets",
    "class_phrases",
    "compose_prompt",
    "farthest_point_sampling",
    "gloss_phrase",
    "load_prompt_file",
    "open_clip_text_encoder",
    "prompt_sets_digest",
    "sample_prompt",
    "save_prompt_file",
    "select_prompts",
]

PHRASES_FILE = Path(__file__).resolve().parents[1] / "datasets" / "data" / "class_phrases.yaml"

DEFAULT_STYLES = (
    "a photo of",
    "a close-up photo of",
    "a low-resolution photo of",
    "a bright photo of",
    "a dark photo of",
    "a black and white photo of",
    "a sketch of",
    "a painting of",
    "a cartoon of",
    "a 3D render of",
    "clip art of",
    "a sculpture of",
)

CONTENT_TEMPLATES: dict[str, tuple[str, ...]] = {
    # class-agnostic descriptions; "<style> <phrase>, <content>"
    "default": (
        # viewpoint and framing
        "seen from the front",
        "seen from the side",
        "seen from behind",
        "seen from above",
        "seen from below",
        "close to the camera",
        "far away in the distance",
        "in the center of the frame",
        "partially hidden behind something",
        "cropped at the edge of the frame",
        "in a wide-angle shot",
        "with a shallow depth of field",
        # pose and state
        "in motion",
        "at rest",
        "in a typical pose",
        "in an unusual position",
        "held in a person's hands",
        "next to a person",
        # background and surroundings
        "on a plain white background",
        "in front of a brick wall",
        "in the grass",
        "in the snow",
        "on a sandy beach",
        "in a forest",
        "on a city street",
        "in a cluttered room",
        "on a wooden table",
        "near the water",
        "against a blue sky",
        "in an open field",
        # context
        "in its natural setting",
        "in everyday use",
        "in a shop window",
        "in a museum",
        "at a market",
        "in a garden",
        # count
        "alone",
        "two of them together",
        "in a group",
        "among other objects",
        # lighting and weather
        "in bright sunlight",
        "at night",
        "at sunset",
        "in fog",
        "in the rain",
        "in soft indoor light",
        "with harsh shadows",
        "in dim light",
    ),
    # handwritten digits (sklearn's digits, MNIST-like sets)
    "digits": (
        "written with a black pen on white paper",
        "written in pencil",
        "written with a thick marker",
        "written in chalk on a blackboard",
        "on lined notebook paper",
        "on graph paper",
        "on a whiteboard",
        "on a sticky note",
        "on an envelope",
        "in white on a dark background",
        "painted on a wall",
        "written neatly",
        "written quickly and messily",
        "written by a child",
        "with thin strokes",
        "with thick strokes",
        "slightly tilted",
        "small in the frame",
        "large and centered",
        "in bright light",
        "in dim light",
        "blurry",
    ),
}

CONTENT_SOURCES = ("templates", "file", "model")
VOCABULARIES = (None, "glyphs")


def glyph_vocabulary(spec: Any) -> tuple[list[str], tuple[str, ...], tuple[str, ...]]:
    """(class phrases, styles, contents) in the caption vocabulary of the shipped glyph generator
    (``dfkd.synthesis.glyphs.render``): "a bold italic handwritten" + "digit seven" + ", white on black".

    Styles combine the weight, slant and family words; contents are one colour pair, position, size, rotation or
    blur phrase each. Every class name must name a character of the generator's set ("seven", "a", "plus sign").
    """
    from dfkd.synthesis.glyphs.render import CHARSET, VOCABULARY

    by_name = {g.name: g for g in CHARSET if g.kind in ("digit", "symbol")} | {g.char: g for g in CHARSET}
    phrases = []
    for name in spec.class_names:
        glyph = by_name.get(str(name).replace("_", " "))
        if glyph is None:
            raise ConfigError(
                f"prompts.vocabulary=glyphs: class {name!r} of {spec.name} is not a character the glyph generator "
                "knows (digits by name, letters, symbols). Fix: set prompts.vocabulary=null"
            )
        phrases.append(glyph.phrases()[0])
    styles = []
    for weight in ("", *VOCABULARY["weight"]):
        for slant in ("", "italic", "upright"):
            for family in ("", *VOCABULARY["family"]):
                words = " ".join(w for w in (weight, slant, family) if w)
                styles.append(f"{'an' if words[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'} {words}".strip())
    contents = (
        *VOCABULARY["colours"],
        *VOCABULARY["position"],
        *VOCABULARY["size"],
        *VOCABULARY["rotation"],
        *VOCABULARY["blur"],
    )
    return phrases, tuple(styles), contents


@dataclass(frozen=True)
class PromptConfig:
    """DPE settings (embedded in ``PRISM.Config`` as ``prompts``). Upstream has no names: all reconstructed."""

    styles: tuple[str, ...] = DEFAULT_STYLES  # style diversification: "<style> <class phrase>, <content>"
    contents: str = "templates"  # content source: templates | file (prompt_file) | model (text_model)
    prompt_file: str | None = None  # YAML/JSONL per-class content phrases or full prompts (e.g. from any LLM)
    text_model: str | None = None  # transformers text-generation model (Hub id or folder); output cached
    prompts_per_class: int = 50  # size of each class's prompt set after selection
    candidates_per_class: int = 200  # style × content candidates per class before selection
    coverage_selection: bool = False  # keep a maximally spread subset: FPS of open_clip text embeddings
    clip_model: str = "ViT-B-32"  # open_clip architecture for the selection ("hf-hub:…", "local-dir:…" too)
    clip_pretrained: str | None = "laion2b_s34b_b79k"  # open_clip tag or checkpoint path; None = random weights
    seed: int = 0  # seed of the candidates' order (prompt sets are deterministic for it)
    # None, or a generator whose caption vocabulary replaces styles, template contents and class phrases:
    # "glyphs" (the shipped glyph generator; data sets whose classes are characters it knows, e.g. digits)
    vocabulary: str | None = None

    def __post_init__(self) -> None:
        if self.vocabulary not in VOCABULARIES:
            raise ConfigError(
                f"prompts.vocabulary must be null or one of {', '.join(v for v in VOCABULARIES if v)}, "
                f"not {self.vocabulary!r}"
            )
        if self.contents not in CONTENT_SOURCES:
            hint = did_you_mean(self.contents, CONTENT_SOURCES)
            raise ConfigError(
                f"prompts.contents must be one of {', '.join(CONTENT_SOURCES)}, not {self.contents!r}.{hint}"
            )
        if self.contents == "file" and not self.prompt_file:
            raise ConfigError("prompts.contents=file needs prompts.prompt_file=PATH (a YAML or JSONL file)")
        if self.contents == "model" and not self.text_model:
            raise ConfigError(
                "prompts.contents=model needs prompts.text_model=MODEL (a transformers text-generation model)"
            )
        if self.prompt_file and self.contents == "templates":
            raise ConfigError(
                "prompts.prompt_file is set but prompts.contents is 'templates'; add prompts.contents=file"
            )
        if not self.styles or any(not isinstance(s, str) for s in self.styles):
            raise ConfigError("prompts.styles must be a non-empty list of strings (use '' for no style)")
        if self.prompts_per_class < 1:
            raise ConfigError(f"prompts.prompts_per_class must be ≥ 1, got {self.prompts_per_class}")
        if self.candidates_per_class < self.prompts_per_class:
            raise ConfigError(
                f"prompts.candidates_per_class ({self.candidates_per_class}) must be ≥ prompts.prompts_per_class "
                f"({self.prompts_per_class})"
            )


@dataclass(frozen=True)
class PromptEntry:
    """One prompt of a class's set, with its parts (recorded per generated image)."""

    prompt: str  # the full text given to the text encoder
    style: str  # the style prefix ("a sketch of"); "" when unknown (full prompts from a file)
    content: str  # the content phrase ("in the snow"); "" when none
    phrase: str  # the disambiguated class phrase ("a crane, a large long-necked wading bird ...")


def compose_prompt(style: str, phrase: str, content: str = "") -> str:
    """``"<style> <phrase>, <content>"`` (parts left out when empty)."""
    text = f"{style.strip()} {phrase.strip()}".strip()
    return f"{text}, {content.strip()}" if content.strip() else text


# =============================================================================================
# 1. Semantic disambiguation
# =============================================================================================
@functools.cache
def curated_phrases() -> dict[str, dict[Any, str]]:
    """``class_phrases.yaml``: {data set name: {class name or index: phrase}} (read once)."""
    import yaml

    data = yaml.safe_load(PHRASES_FILE.read_text(encoding="utf-8")) or {}
    return {name: dict(table or {}) for name, table in data.items()}


# Lemmas that read wrong with "a"/"an" (plurals and mass nouns among ImageNet's first lemmas).
_NO_ARTICLE = frozenset(
    {
        "binoculars", "parallel bars", "sunglasses", "swimming trunks", "hay", "guacamole", "consomme", "carbonara",
        "chocolate sauce", "dough", "mashed potato", "ice cream", "red wine", "espresso", "eggnog", "toilet tissue",
        "rapeseed", "corn", "broccoli", "cauliflower", "zucchini", "spaghetti squash",
    }
)  # fmt: skip
_ARTICLES = ("a", "an", "the", "any", "one", "some", "either", "each", "several", "two")
# Gloss words before which a long gloss may be cut (keeps "large long-necked wading bird of marshes and plains").
_BREAKS = frozenset(
    {
        "in", "on", "at", "with", "without", "that", "which", "who", "whose", "having", "used", "usually", "often",
        "especially", "typically", "noted", "found", "native", "characterized", "resembling", "from", "by", "when",
        "where", "as", "for", "formerly", "sometimes", "related", "similar", "consisting", "made", "worn", "but",
        "under", "through", "into", "between", "during", "after", "before", "because", "while", "like",
    }
)  # fmt: skip
_TRAILING = frozenset(
    {
        "of", "and", "or", "the", "a", "an", "to", "with", "for", "in", "on", "by", "that", "as", "is", "are", "be",
        "can", "was", "were", "has", "have", "its", "their", "very", "so",
    }
)  # fmt: skip
_VERB_STARTS = frozenset({"holds", "lifts", "makes", "moves", "carries", "measures", "produces", "keeps"})


def with_article(noun: str) -> str:
    """``"a crane"``, ``"an ice bear"``, ``"a European fire salamander"``; kept as is when it has one."""
    noun = noun.strip()
    low = noun.lower()
    if not noun or low.split()[0] in _ARTICLES:
        return noun
    if re.match(r"(uni|use|usu|eu|one\b|once|u[bcfhjkqrst][aeiou])", low):
        return f"a {noun}"  # "a unicycle", "a European ..."
    if re.match(r"(hour|honest|honor|heir)", low) or low[0] in "aeiou":
        return f"an {noun}"
    return f"a {noun}"


def _shorten(text: str, max_words: int) -> str:
    """A gloss's first clause, without parentheses, cut to ≤ ``max_words`` words at a natural break.

    Cuts, best first (the longest prefix of ≥ 3 words of the best kind wins): (0) before a break word ("in",
    "with", "that", "used", ...) or a participle that opens a phrase ("living in") or after a comma, where the
    prefix does not end in a participle ("noted") or a function word ("is", "of"); (1) before "and"/"or" under
    the same condition; (2) kind 0 after a participle or function word; else after ``max_words`` words, trailing
    function words dropped.
    """
    text = re.sub(r"\s*\([^)]*\)", "", text)  # "(usually plush ...)" → ""
    text = text.split(";")[0].strip().rstrip(".").strip()
    words = text.split()
    if len(words) <= max_words:
        return " ".join(words)
    best: dict[int, int] = {}  # kind → longest prefix length of that kind
    for i in range(3, max_words + 1):  # prefix words[:i]; words[i] exists since len(words) > max_words
        last, nxt = words[i - 1].lower().rstrip(","), words[i].lower()
        clean_end = not last.endswith(("ed", "ing")) and last not in _BREAKS and last not in _TRAILING
        after = words[i + 1].lower() if i + 1 < len(words) else ""
        # a participle that opens a phrase: "turtles | living in ...", "coffee | brewed by ..." (not "coded card")
        participle = len(nxt) >= 5 and nxt.endswith(("ed", "ing")) and (after in _BREAKS or after in ("to", "of"))
        if words[i - 1].endswith(",") or nxt in _BREAKS or participle:
            best[0 if clean_end else 2] = i
        elif nxt in ("and", "or") and clean_end:
            best[1] = i
    if best:
        cut = best[min(best)]
    else:
        cut = max_words
        while cut > 1 and words[cut - 1].lower() in _TRAILING:
            cut -= 1
    return " ".join(words[:cut]).rstrip(",")


def gloss_phrase(gloss: str, max_words: int = 12) -> str:
    """A WordNet-style gloss "lemma, synonym: definition" → "<a lemma>, <short definition>".

    ``"crane: large long-necked wading bird of marshes and plains in many parts of the world"`` →
    ``"a crane, a large long-necked wading bird of marshes and plains"``; ``"crane: lifts and moves heavy
    objects; ..."`` → ``"a crane, which lifts and moves heavy objects"``.
    """
    lemmas, _, definition = gloss.partition(": ")
    lemma = lemmas.split(",")[0].strip()
    head = lemma if lemma.lower() in _NO_ARTICLE else with_article(lemma)
    short = _shorten(definition, max_words)
    if not short:
        return head
    first = short.split()[0].lower()
    if first in _ARTICLES:
        pass
    elif first in _VERB_STARTS:
        short = f"which {short}"
    elif not (first.endswith("s") and not first.endswith(("ss", "us", "is", "ous"))):
        short = with_article(short)  # singular noun phrase; plural ones ("tights for dancers") stay bare
    return f"{head}, {short}"


def _plain_phrase(name: str) -> str:
    """Fallback: name with underscores as spaces, with an article unless it looks plural."""
    name = name.replace("_", " ").strip()
    last = name.split()[-1].lower() if name else ""
    if last.endswith("s") and not last.endswith(("ss", "us", "is")):
        return name
    return with_article(name)


def class_phrases(spec: Any) -> list[str]:
    """One unambiguous noun phrase per class, index = label (semantic disambiguation).

    Curated phrases (``class_phrases.yaml``) first; otherwise a gloss "lemma: definition" (ImageNet's
    WordNet glosses, or any data set whose ``class_glosses()`` has that form) gives :func:`gloss_phrase`,
    anything else the name with underscores as spaces and an article.
    """
    curated = curated_phrases().get(spec.name, {})
    names = tuple(spec.class_names)
    glosses = tuple(spec.class_glosses())
    by_index: dict[int, str] = {}
    for key, phrase in curated.items():
        label = resolve_class(key, spec, where=f"{PHRASES_FILE.name} ({spec.name})")
        by_index[label] = str(phrase).strip()
    out = []
    for i in range(len(names)):
        if i in by_index:
            out.append(by_index[i])
        elif ": " in glosses[i]:
            out.append(gloss_phrase(glosses[i]))
        else:
            out.append(_plain_phrase(glosses[i]))
    return out


def resolve_class(key: Any, spec: Any, where: str = "") -> int:
    """A class given as index (``134``, ``"134"``), name (``"maple_tree"``, ``"maple tree"``) or wnid → label.

    Unknown names raise ``UserError`` with suggestions; names shared by several classes ("crane") ask for
    the index.
    """
    names = tuple(spec.class_names)
    k = len(names)
    prefix = f"{where}: " if where else ""
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise UserError(f"{prefix}a class must be a name or an index, not {key!r}")
    text = str(key).strip()
    if isinstance(key, int) or text.isdigit():
        index = int(text)
        if not 0 <= index < k:
            raise UserError(f"{prefix}class index {index} is out of range for {spec.name} (0..{k - 1})")
        return index

    def norm(s: str) -> str:
        return " ".join(s.lower().replace("_", " ").split())

    matches = [i for i, n in enumerate(names) if n == text]
    if not matches:
        matches = [i for i, n in enumerate(names) if norm(n) == norm(text)]
    if not matches and hasattr(spec, "wnids") and re.fullmatch(r"n\d{8}", text):
        matches = [i for i, w in enumerate(spec.wnids) if w == text]
    if len(matches) == 1:
        return matches[0]
    if matches:
        listed = " and ".join(str(i) for i in matches)
        raise UserError(f"{prefix}class name {text!r} is ambiguous in {spec.name} (classes {listed}); use the index")
    normed = {norm(n): n for n in names}
    hint = did_you_mean(norm(text), normed, n=3, show=normed.__getitem__)
    raise UserError(
        f"{prefix}unknown class {text!r} for {spec.name}.{hint} Use a class name or an index 0..{k - 1} "
        f"(`bench prompts --dataset {spec.name}` lists them)"
    )


# =============================================================================================
# 2. Content diversification: templates, prompt files, a text-generation model
# =============================================================================================
def template_contents(spec: Any) -> tuple[str, ...]:
    """The built-in content templates for ``spec`` (``CONTENT_TEMPLATES[spec.name]`` or the default)."""
    return CONTENT_TEMPLATES.get(spec.name, CONTENT_TEMPLATES["default"])


@dataclass
class FileClass:
    """What a prompt file says about one class."""

    prompts: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (prompt, style, content)
    contents: list[str] = dataclasses.field(default_factory=list)  # content phrases, combined with the styles


_ENTRY_KEYS = ("prompt", "content", "style", "phrase", "name")


def _add_item(item: Any, fc: FileClass, where: str) -> None:
    if isinstance(item, str):
        if item.strip():
            fc.contents.append(item.strip())
        return
    if not isinstance(item, Mapping):
        raise UserError(f"{where}: an entry must be a content phrase (text) or a mapping with prompt: or content:")
    unknown = [k for k in item if k not in _ENTRY_KEYS]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; entries take {', '.join(_ENTRY_KEYS)}")
    values = {}
    for k in ("prompt", "content", "style"):
        v = item.get(k)
        if v is not None and not isinstance(v, str):
            raise UserError(f"{where}: {k} must be text, got {v!r}")
        values[k] = (v or "").strip()
    if values["prompt"]:
        fc.prompts.append((values["prompt"], values["style"], values["content"]))
    elif values["content"]:
        fc.contents.append(values["content"])
    else:
        raise UserError(f"{where}: an entry needs a non-empty prompt: (a full prompt) or content: (a phrase)")


def load_prompt_file(path: str | os.PathLike[str], spec: Any) -> dict[int, FileClass]:
    """Read a user prompt file: {label: FileClass}. Classes are names, indices or (ImageNet) wnids.

    YAML — a mapping class → list; a text item is a content phrase (combined with every style), a mapping
    item ``{prompt: ..., style: ..., content: ...}`` a full prompt used as written (style/content are
    recorded only)::

        crane:                      # ambiguous in ImageNet: use 134 / 517
        134:
          - standing in shallow water
          - prompt: a photo of a grey crane flying over a marsh at dawn
        maple_tree: [in autumn colours, in a park]

    JSONL — one object a line: ``{"class": "maple_tree", "content": "in autumn colours"}`` or
    ``{"class": 134, "prompt": "a photo of ...", "style": "a photo of"}``. ``bench prompts --out`` writes
    either format.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"Prompt file {path} does not exist (prompts.prompt_file)")
    suffix = path.suffix.lower()
    out: dict[int, FileClass] = {}
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise UserError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise UserError(f"{path} must map classes to lists of content phrases or prompts")
        for key, items in data.items():
            label = resolve_class(key, spec, where=str(path))
            fc = out.setdefault(label, FileClass())
            for j, item in enumerate(items if isinstance(items, list) else [items]):
                _add_item(item, fc, f"{path}: class {key!r}, entry {j + 1}")
    elif suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or "class" not in obj:
                raise UserError(f'{where}: each line must be an object with "class" and "prompt" or "content"')
            label = resolve_class(obj.pop("class"), spec, where=where)
            _add_item(obj, out.setdefault(label, FileClass()), where)
    else:
        raise UserError(f"Prompt file {path} must end in .yaml, .yml or .jsonl")
    return out


def save_prompt_file(path: str | os.PathLike[str], spec: Any, prompt_sets: Mapping[int, Sequence[PromptEntry]]) -> Path:
    """Write prompt sets ({label: entries}) as YAML or JSONL (by suffix) that :func:`load_prompt_file` reads.

    Every entry is a full prompt with its style and content, so feeding the file back
    (``--set prompts.contents=file --set prompts.prompt_file=PATH``) reproduces these sets; edit it first.
    Classes are keyed by name, or by index where the name is shared (ImageNet's "crane").
    """
    path = Path(path).expanduser()
    names = tuple(spec.class_names)
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1

    def key(label: int) -> Any:
        return names[label] if counts[names[label]] == 1 and not names[label].isdigit() else label

    def row(e: PromptEntry) -> dict[str, str]:
        return {"prompt": e.prompt, "style": e.style, "content": e.content}

    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        header = (
            f"# Prompt sets for {spec.name} written by `bench prompts`: class → full prompts (style and content are "
            "recorded only).\n# Edit, then use with --set prompts.contents=file --set prompts.prompt_file=THIS_FILE; "
            "a plain text item is a content phrase combined with every style.\n"
        )
        body = {key(label): [row(e) for e in entries] for label, entries in prompt_sets.items()}
        text = header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=1000)
    elif suffix == ".jsonl":
        lines = [
            json.dumps({"class": key(label), **row(e)}, ensure_ascii=False)
            for label, entries in prompt_sets.items()
            for e in entries
        ]
        text = "\n".join(lines) + "\n"
    else:
        raise UserError(f"--out {path}: the prompt file must end in .yaml, .yml or .jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


MODEL_INSTRUCTION = (
    "Write {n} short, different descriptions of a photo of {phrase}. Vary the viewpoint, the pose, the background, "
    "the surroundings, the number of objects and the lighting. Each description is a phrase of at most ten words "
    "that could follow the object's name, such as 'in the snow at night' or 'seen from above on a wooden table'. "
    "Write one per line.\n1."
)
MODEL_PHRASES = 30  # content phrases asked of the model per class
MODEL_GENERATION = {"max_new_tokens": 400, "do_sample": False, "return_full_text": False}  # greedy: reproducible


def parse_generated(text: str, n: int = MODEL_PHRASES) -> list[str]:
    """Content phrases from a model's completion: one per line, numbering/bullets/quotes stripped, ≤ 15 words."""
    out: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:(?:\d+\s*[.)]|[-*•])\s*)+", "", line).strip().strip("\"'`").strip().rstrip(".").strip()
        if not line or line.endswith(":") or len(line.split()) > 15:
            continue
        if line.lower() in seen:
            continue
        seen.add(line.lower())
        out.append(line)
        if len(out) >= n:
            break
    return out


def _load_text_pipeline(model: str, device: Any = None) -> Callable[..., Any]:
    import transformers

    try:
        return transformers.pipeline("text-generation", model=model, device=device)
    except Exception as e:  # not found, no network, bad folder: one line for the user
        from dfkd.errors import one_line

        raise UserError(
            f"Cannot load the text-generation model {model!r} ({one_line(e)}); give a local folder or a Hub id in "
            "the Hugging Face cache as prompts.text_model, or use prompts.contents=templates"
        ) from e


class TextModelContents:
    """Content phrases per class written by a ``transformers`` text-generation model, cached on disk.

    Greedy decoding of :data:`MODEL_INSTRUCTION` per class; the parsed phrases go to
    ``<cache>/prompts/<hash>.json`` (hash of model, instruction, generation settings, data set and class
    phrases), written after every class, so a second run — or an interrupted one — loads instead of
    generating. The pipeline is created only when a class is missing from the cache.
    """

    def __init__(self, model: str, spec: Any, phrases: Sequence[str], device: Any = None, n: int = MODEL_PHRASES):
        from dfkd.hashing import stable_hash
        from dfkd.paths import cache_dir

        self.model, self.phrases, self.device, self.n = model, list(phrases), device, n
        key = {
            "what": "prism-dpe-contents",
            "version": 1,
            "model": model,
            "instruction": MODEL_INSTRUCTION,
            "generation": MODEL_GENERATION,
            "n": n,
            "dataset": spec.name,
            "phrases": self.phrases,
        }
        self.path = cache_dir() / "prompts" / f"{stable_hash(key)}.json"
        self._data: dict[str, Any] = {"model": model, "dataset": spec.name, "classes": {}}
        self._merge_from_disk()
        self._pipe: Callable[..., Any] | None = None

    def __call__(self, label: int) -> list[str]:
        key = str(label)
        if key not in self._data["classes"]:
            self._merge_from_disk()  # another process sharing the cache may have made it meanwhile
        if key not in self._data["classes"]:
            generated = parse_generated(self._generate(self.phrases[label]), self.n)
            from dfkd.paths import file_lock

            with file_lock(self.path.with_suffix(".lock"), "writing this prompt cache"):
                self._merge_from_disk()  # re-read under the lock: never drop a class another process wrote
                self._data["classes"].setdefault(key, generated)  # the first written wins: every run agrees
                self._save()
        return list(self._data["classes"][key])

    def _merge_from_disk(self) -> None:
        if not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            warnings.warn(f"ignoring unreadable prompt cache {self.path}", stacklevel=2)
            return
        if isinstance(data.get("classes"), dict):
            self._data["classes"] = {**data["classes"], **self._data["classes"]}

    def _generate(self, phrase: str) -> str:
        if self._pipe is None:
            self._pipe = _load_text_pipeline(self.model, self.device)
        out = self._pipe(MODEL_INSTRUCTION.format(n=self.n, phrase=phrase), **MODEL_GENERATION)
        while isinstance(out, list) and out:  # [{"generated_text": ...}] or [[{...}]]
            out = out[0]
        return out.get("generated_text", "") if isinstance(out, dict) else str(out)

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps(self._data, indent=1, ensure_ascii=False))


# =============================================================================================
# Coverage selection
# =============================================================================================
def farthest_point_sampling(
    embeddings: Tensor, k: int, first: int = 0, *, selected: Sequence[int] | None = None
) -> list[int]:
    """Greedy max-min (farthest-point) selection of ``k`` rows under cosine distance 1 − cos.

    ``embeddings``: (N, D). Starts from ``selected`` (kept, in order) or from row ``first``; each step adds
    the row whose distance to its nearest selected row is largest (ties: the lowest index). Deterministic;
    returns ``k`` distinct indices in selection order.
    """
    x = F.normalize(embeddings.detach().float(), dim=1)  # (N, D), rows of norm 1 (0 for zero rows)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"farthest_point_sampling: k must be in 1..{n}, got {k}")
    chosen = list(dict.fromkeys(selected)) if selected else [first]
    if any(not 0 <= i < n for i in chosen):
        raise ValueError(f"farthest_point_sampling: start indices must be in 0..{n - 1}")
    if len(chosen) >= k:
        return chosen[:k]
    dist = (1 - x @ x[chosen].T).min(dim=1).values  # (N,) distance to the nearest chosen row
    dist[chosen] = -torch.inf
    while len(chosen) < k:
        i = int(torch.argmax(dist))  # first maximal index
        chosen.append(i)
        dist = torch.minimum(dist, 1 - x @ x[i])  # (N,)
        dist[i] = -torch.inf
    return chosen


def select_prompts(
    entries: Sequence[PromptEntry], k: int, encoder: Callable[[list[str]], Tensor], *, keep: int = 0
) -> list[PromptEntry]:
    """The ``k`` most spread entries by FPS of ``encoder([prompts])`` (N, D); the first ``keep`` always stay."""
    if not entries:
        return []
    k = min(k, len(entries))
    emb = encoder([e.prompt for e in entries])  # (N, D)
    if emb.shape[0] != len(entries):
        raise ValueError(f"the encoder returned {emb.shape[0]} embeddings for {len(entries)} prompts")
    idx = farthest_point_sampling(emb, k, selected=list(range(min(keep, k))) or None)
    return [entries[i] for i in idx]


def open_clip_text_encoder(
    model_name: str = "ViT-B-32",
    pretrained: str | None = "laion2b_s34b_b79k",
    device: str | torch.device = "cpu",
    *,
    cache_dir: str | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> Callable[[list[str]], Tensor]:
    """An open_clip text tower as ``encoder(texts) → (N, D)`` L2-normalised float32 CPU embeddings (no grad).

    ``model_name``: an open_clip architecture ("ViT-B-32"), "hf-hub:org/repo" or "local-dir:/folder";
    ``pretrained``: a tag ("laion2b_s34b_b79k", from the Hub or open_clip's cache), a checkpoint path, or
    None for random weights (initialised from ``seed``, so reproducible). Weights that cannot be loaded (no
    network, unknown tag) raise ``UserError``.
    """
    import open_clip

    from dfkd.errors import one_line

    schema = model_name.startswith(("hf-hub:", "local-dir:"))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random weights (pretrained=None) are the same every time
            model = open_clip.create_model(
                model_name,
                pretrained=None if schema else pretrained,
                device=device,
                cache_dir=cache_dir,
                require_pretrained=bool(pretrained) and not schema,
            )
        tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
    except Exception as e:
        raise UserError(
            f"Cannot load open_clip {model_name} (pretrained={pretrained!r}): {one_line(e)}; connect once to fetch "
            "the weights, give a checkpoint path as prompts.clip_pretrained, or set prompts.coverage_selection=false"
        ) from e
    if isinstance(getattr(model, "visual", None), torch.nn.Module):
        model.visual = torch.nn.Identity()  # text tower only: free the image tower
    model.eval().requires_grad_(False)

    def encode(texts: list[str]) -> Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                tokens = tokenizer(list(texts[i : i + batch_size])).to(device)  # (b, context_length)
                feats = model.encode_text(tokens).float()  # (b, D)
                out.append(F.normalize(feats, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)  # (N, D)

    return encode


# =============================================================================================
# Prompt sets
# =============================================================================================
class PromptBuilder:
    """Builds class prompt sets for one data set and config; sources are loaded once, lazily.

    ``encoder`` (texts → (N, D)) replaces the open_clip encoder of the coverage selection (tests, other
    encoders); ``device`` is where open_clip and the text-generation model run.
    """

    def __init__(
        self,
        spec: Any,
        config: PromptConfig,
        *,
        encoder: Callable[[list[str]], Tensor] | None = None,
        device: Any = None,
    ):
        self.spec, self.config, self.device = spec, config, device
        self._encoder = encoder
        if config.vocabulary == "glyphs":
            self.phrases, self.styles, self.templates = glyph_vocabulary(spec)
        else:
            self.phrases, self.styles, self.templates = class_phrases(spec), config.styles, template_contents(spec)
        self.file: dict[int, FileClass] = load_prompt_file(config.prompt_file, spec) if config.prompt_file else {}
        self.model = (
            TextModelContents(config.text_model, spec, self.phrases, device)
            if config.contents == "model" and config.text_model
            else None
        )

    @property
    def encoder(self) -> Callable[[list[str]], Tensor]:
        if self._encoder is None:
            c = self.config
            self._encoder = open_clip_text_encoder(c.clip_model, c.clip_pretrained, self.device or "cpu")
        return self._encoder

    def sources(self, label: int) -> tuple[list[tuple[str, str, str]], list[str], str]:
        """(full prompts, content phrases, source name) of class ``label``."""
        if label in self.file:
            fc = self.file[label]
            return list(fc.prompts), list(fc.contents), "file"
        if self.model is not None:
            contents = self.model(label)
            if contents:
                return [], contents, "model"
            warnings.warn(
                f"{self.config.text_model} wrote no usable content phrases for class {label} "
                f"({self.phrases[label]!r}); using the templates",
                stacklevel=2,
            )
        return [], list(self.templates), "templates"

    def candidates(self, label: int) -> tuple[list[PromptEntry], list[PromptEntry]]:
        """(fixed full prompts, style × content candidates in seeded random order), all distinct."""
        c, phrase = self.config, self.phrases[label]
        prompts, contents, _ = self.sources(label)
        seen: set[str] = set()
        fixed = []
        for prompt, style, content in prompts:
            if prompt not in seen:
                seen.add(prompt)
                fixed.append(PromptEntry(prompt, style, content, phrase))
        combos = [PromptEntry(compose_prompt(s, phrase, t), s, t, phrase) for s in self.styles for t in contents]
        random.Random(f"prism-dpe:{c.seed}:{label}").shuffle(combos)
        cands = []
        for e in combos:
            if len(cands) >= c.candidates_per_class:
                break
            if e.prompt not in seen:
                seen.add(e.prompt)
                cands.append(e)
        return fixed, cands

    def build(self, label: int) -> list[PromptEntry]:
        """Class ``label``'s prompt set: the file's full prompts, filled to ``prompts_per_class``."""
        if not 0 <= label < len(self.phrases):
            raise UserError(f"class {label} is out of range for {self.spec.name} (0..{len(self.phrases) - 1})")
        fixed, cands = self.candidates(label)
        need = self.config.prompts_per_class - len(fixed)
        if need <= 0 or not cands:
            return fixed
        if self.config.coverage_selection:
            return select_prompts(fixed + cands, len(fixed) + need, self.encoder, keep=len(fixed))
        return fixed + cands[:need]


def build_prompt_sets(
    spec: Any,
    config: PromptConfig | None = None,
    *,
    encoder: Callable[[list[str]], Tensor] | None = None,
    device: Any = None,
) -> list[list[PromptEntry]]:
    """Every class's prompt set, index = label (see :class:`PromptBuilder`)."""
    builder = PromptBuilder(spec, config or PromptConfig(), encoder=encoder, device=device)
    return [builder.build(label) for label in range(spec.num_classes)]


def sample_prompt(
    prompt_sets: Sequence[Sequence[PromptEntry]], label: int, rng_or_seed: random.Random | torch.Generator | int
) -> PromptEntry:
    """One entry of class ``label``'s set, uniformly: a ``random.Random``, a ``torch.Generator`` or a seed."""
    entries = prompt_sets[label]
    if not entries:
        raise UserError(f"class {label} has an empty prompt set; give it prompts or content phrases")
    if isinstance(rng_or_seed, random.Random):
        i = rng_or_seed.randrange(len(entries))
    elif isinstance(rng_or_seed, torch.Generator):
        i = int(torch.randint(len(entries), (1,), generator=rng_or_seed))
    else:
        i = random.Random(int(rng_or_seed)).randrange(len(entries))
    return entries[i]


def prompt_sets_digest(prompt_sets: Sequence[Sequence[PromptEntry]]) -> str:
    """A stable hash of the built sets (prompts, styles, contents): for store identities, since a prompt file's
    or a text model's output can change while the config (which names only the file or model) does not."""
    from dfkd.hashing import stable_hash

    return stable_hash([[[e.prompt, e.style, e.content] for e in entries] for entries in prompt_sets])
