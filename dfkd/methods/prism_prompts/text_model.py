"""PRISM DPE's ``model`` content source: a ``transformers`` text-generation model writes content phrases per class,
cached on disk (``<cache>/prompts/<hash>.json``), so a second run, or an interrupted one, reads instead of generating.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from dfkd.errors import UserError
from dfkd.paths import atomic_write_text

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
