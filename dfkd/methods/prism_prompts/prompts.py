"""PRISM DPE's prompt sets: the config, one prompt's parts, the builder, sampling and the digest.

Per class, the candidates are the distinct style × content prompts in a seeded random order; the set keeps the
first ``prompts_per_class`` or, with ``coverage_selection``, a maximally spread subset (farthest-point sampling of
open_clip text embeddings, :func:`select_prompts`). Full prompts from a prompt file come first, all of them. See the
package docstring for the reconstruction (He et al., 2025, arXiv 2509.16897).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dfkd.errors import ConfigError, UserError, did_you_mean
from dfkd.methods.prism_prompts.files import FileClass, load_prompt_file
from dfkd.methods.prism_prompts.phrases import DEFAULT_STYLES, class_phrases, glyph_vocabulary, template_contents
from dfkd.methods.prism_prompts.text_model import TextModelContents
from dfkd.metrics.features import open_clip_text_encoder
from dfkd.metrics.manifold import farthest_point_sampling

CONTENT_SOURCES = ("templates", "file", "model")
VOCABULARIES = (None, "glyphs")


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
            self._encoder = open_clip_text_encoder(
                c.clip_model,
                c.clip_pretrained,
                self.device or "cpu",
                fix="give a checkpoint path as prompts.clip_pretrained, or set prompts.coverage_selection=false",
            )
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
