"""PRISM DPE's English: disambiguated class phrases, the template styles and contents, the glyph vocabulary.

Semantic disambiguation (He et al., 2025, arXiv 2509.16897; reconstructed, see the package docstring): one
unambiguous noun phrase per class (:func:`class_phrases`): curated phrases from
``dfkd/datasets/data/class_phrases.yaml``, else a WordNet gloss shortened to its first clause (:func:`gloss_phrase`,
ImageNet), else the name with an article. The default styles and the class-agnostic content templates are data,
``dfkd/datasets/data/prompt_templates.yaml``, read once (:data:`DEFAULT_STYLES`, :data:`CONTENT_TEMPLATES`).
:func:`glyph_vocabulary` swaps all three for the caption words of the shipped glyph generator.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from dfkd.errors import ConfigError

_DATA = Path(__file__).resolve().parents[2] / "datasets" / "data"
PHRASES_FILE = _DATA / "class_phrases.yaml"
TEMPLATES_FILE = _DATA / "prompt_templates.yaml"


@functools.cache
def prompt_templates() -> dict[str, Any]:
    """``prompt_templates.yaml``: {"styles": (...), "contents": {data set name or "default": (...)}} (read once)."""
    import yaml

    data = yaml.safe_load(TEMPLATES_FILE.read_text(encoding="utf-8")) or {}
    contents = {name: tuple(str(t) for t in table) for name, table in (data.get("contents") or {}).items()}
    return {"styles": tuple(str(s) for s in data.get("styles") or ()), "contents": contents}


DEFAULT_STYLES: tuple[str, ...] = prompt_templates()["styles"]  # "a photo of", "a sketch of", ...
# class-agnostic descriptions per data set ("default": any other); "<style> <phrase>, <content>"
CONTENT_TEMPLATES: dict[str, tuple[str, ...]] = prompt_templates()["contents"]


def template_contents(spec: Any) -> tuple[str, ...]:
    """The built-in content templates for ``spec`` (``CONTENT_TEMPLATES[spec.name]`` or the default)."""
    return CONTENT_TEMPLATES.get(spec.name, CONTENT_TEMPLATES["default"])


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
        label = spec.class_index(key, where=f"{PHRASES_FILE.name} ({spec.name})")
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
