"""Prompt files: per-class content phrases or full prompts in YAML or JSONL, read and written.

A user's prompt file (e.g. written offline by any LLM, or by ``bench prompts --out``) is PRISM DPE's ``file``
content source; classes are keyed by name, index or (ImageNet) wnid, resolved by ``DatasetSpec.class_index``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfkd.errors import UserError

if TYPE_CHECKING:
    from dfkd.methods.prism_prompts.prompts import PromptEntry


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
            label = spec.class_index(key, where=str(path))
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
            label = spec.class_index(obj.pop("class"), where=where)
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
