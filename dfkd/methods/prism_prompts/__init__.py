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

   * ``templates`` — the built-in, class-agnostic :data:`CONTENT_TEMPLATES`
     (``dfkd/datasets/data/prompt_templates.yaml``);
   * ``file`` — a user prompt file (YAML or JSONL, e.g. written offline by any LLM; see
     :func:`load_prompt_file`) for the classes it names, templates for the others;
   * ``model`` — a local/Hub ``transformers`` text-generation model writes content phrases per class
     (:class:`TextModelContents`, cached under ``<cache>/prompts/<hash>.json``); a prompt file, when
     given too, still wins for the classes it names.
3. **Style diversification**: ``PromptConfig.styles`` (photo, close-up, sketch, painting, cartoon, ...; default
   :data:`DEFAULT_STYLES`, from the same data file).

Per class, the candidates are the distinct style × content prompts in a seeded random order
(``candidates_per_class`` of them); the set keeps ``prompts_per_class``: the first ones, or with
``coverage_selection`` a maximally spread subset (greedy farthest-point sampling of open_clip text
embeddings: ``dfkd.metrics.manifold.farthest_point_sampling`` of ``dfkd.metrics.features.open_clip_text_encoder``).
Full prompts from a prompt file are kept as written, all of them, and the set is filled up to
``prompts_per_class`` from the file's content phrases. The sets depend
on the data set, the config (deterministic for ``seed``) and what a prompt file or text model supplies
(:func:`prompt_sets_digest` hashes the result, for store identities); each trajectory draws its prompt
with :func:`sample_prompt`. ``bench prompts`` (dfkd/cli/prompts.py) prints the sets and saves them as an
editable prompt file.

Modules: ``prompts`` (:class:`PromptConfig`, :class:`PromptEntry`, :class:`PromptBuilder`, building, sampling and
hashing the sets), ``phrases`` (the English: class phrases, glosses, articles, templates, the glyph vocabulary),
``files`` (prompt files, read and written), ``text_model`` (the text-generation model and its cache). Class keys
(names, indices, wnids) are resolved by ``DatasetSpec.class_index``.
"""

from __future__ import annotations

from dfkd.methods.prism_prompts.files import FileClass, load_prompt_file, save_prompt_file
from dfkd.methods.prism_prompts.phrases import (
    CONTENT_TEMPLATES,
    DEFAULT_STYLES,
    PHRASES_FILE,
    TEMPLATES_FILE,
    class_phrases,
    curated_phrases,
    gloss_phrase,
    glyph_vocabulary,
    template_contents,
    with_article,
)
from dfkd.methods.prism_prompts.prompts import (
    CONTENT_SOURCES,
    VOCABULARIES,
    PromptBuilder,
    PromptConfig,
    PromptEntry,
    build_prompt_sets,
    compose_prompt,
    prompt_sets_digest,
    sample_prompt,
    select_prompts,
)
from dfkd.methods.prism_prompts.text_model import (
    MODEL_GENERATION,
    MODEL_INSTRUCTION,
    MODEL_PHRASES,
    TextModelContents,
    parse_generated,
)

__all__ = [
    "CONTENT_SOURCES",
    "CONTENT_TEMPLATES",
    "DEFAULT_STYLES",
    "MODEL_GENERATION",
    "MODEL_INSTRUCTION",
    "MODEL_PHRASES",
    "PHRASES_FILE",
    "TEMPLATES_FILE",
    "VOCABULARIES",
    "FileClass",
    "PromptBuilder",
    "PromptConfig",
    "PromptEntry",
    "TextModelContents",
    "build_prompt_sets",
    "class_phrases",
    "compose_prompt",
    "curated_phrases",
    "gloss_phrase",
    "glyph_vocabulary",
    "load_prompt_file",
    "parse_generated",
    "prompt_sets_digest",
    "sample_prompt",
    "save_prompt_file",
    "select_prompts",
    "template_contents",
    "with_article",
]
