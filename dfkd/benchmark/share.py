"""Export and share: a run's student as a Hugging Face model folder, a synthetic set as a Hugging Face dataset, and
either pushed to the Hub.

* :func:`export_student` → ``model.safetensors`` (weights, with the architecture, data set and class count in the
  file's metadata, so ``bench run --teacher model.safetensors`` needs nothing else), ``config.json`` (architecture,
  classes, input size, normalisation), ``record.json`` (the run's record) and ``README.md``, a model card made from
  the record (what was distilled from what, by which method and protocol, at what accuracy and cost).
* :func:`synthetic_dataset` → a ``datasets.Dataset`` with one row per image: ``image``, ``label`` (a ``ClassLabel``
  with the data set's class names), ``unit``, ``kept`` and every per-image column of the store (seed, prompt, the
  teacher's logits, prediction, confidence and energy, …); :func:`export_synthetic_hf` saves it with
  ``save_to_disk``. ``datasets`` is optional (``pip install "dfkd-bench[hf]"``).
* :func:`push_folder` / :func:`push_dataset` upload to the Hub (``huggingface_hub``; login with ``hf auth login``
  or ``$HF_TOKEN``); without a network or a token the error is one line that says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from dfkd.benchmark.records import RunRecord
from dfkd.errors import UserError, one_line
from dfkd.paths import atomic_write_text

STUDENT_FILES = ("model.safetensors", "config.json", "record.json", "README.md")


def _record(run_folder: Path) -> RunRecord:
    path = run_folder / "record.json"
    if not path.is_file():
        raise UserError(f"{run_folder} has no record.json: give a finished run folder (runs/<dataset>/<pair>/…)")
    return RunRecord.read(path)


def export_student(run_folder: str | Path, out: str | Path) -> Path:
    """Write the run's trained student into ``out`` (created) as ``STUDENT_FILES``; returns ``out``."""
    from safetensors.torch import save_file

    from dfkd.datasets import get_dataset

    run_folder, out = Path(run_folder).expanduser(), Path(out).expanduser()
    record = _record(run_folder)
    student = record.load_student(run_folder)
    spec = get_dataset(record.dataset)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    metadata = {
        "arch": record.student,
        "dataset": record.dataset,
        "num_classes": str(spec.num_classes),
        "run_id": record.run_id,
        "format": "dfkd-bench student",
    }
    save_file(tensors, str(out / "model.safetensors"), metadata=metadata)
    config = {
        "arch": record.student,
        "dataset": record.dataset,
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names),
        "input_size": spec.input_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "library": "dfkd-bench",
    }
    atomic_write_text(out / "config.json", json.dumps(config, indent=1) + "\n")
    atomic_write_text(out / "record.json", (run_folder / "record.json").read_text(encoding="utf-8"))
    atomic_write_text(out / "README.md", model_card(record))
    return out


def model_card(record: RunRecord) -> str:
    """A Hugging Face model card (YAML front matter + Markdown) of the run's student, from its record."""
    card = record.method_card or {}
    paper = f"[{card.get('title')}](https://arxiv.org/abs/{card['arxiv']})" if card.get("arxiv") else card.get("title")
    cost = f"{record.synthesis_seconds:.0f} s of synthesis, {record.distill_seconds:.0f} s of distillation"
    lines = [
        "---",
        "library_name: dfkd-bench",
        "tags: [data-free-knowledge-distillation, knowledge-distillation, image-classification, dfkd-bench]",
        "---",
        "",
        f"# {record.student} distilled from {record.teacher} on {record.dataset} by {record.method}",
        "",
        f"Data-free knowledge distillation with dfkd-bench (`bench run --method "
        f"{record.method} --dataset {record.dataset} --seed {record.seed}`): the student never saw the teacher's "
        f"training data, only {record.num_synthetic_images:,} synthetic images"
        + (f" made by {paper}" if paper else "")
        + ".",
        "",
        "| | |",
        "|---|---|",
        f"| student top-1, last epoch (headline) | {record.student_top1:.2f} % |",
        f"| student top-1, best epoch ({record.student_top1_best_epoch}; chosen on the test set) | "
        f"{record.student_top1_best:.2f} % |",
        f"| teacher top-1 | {record.teacher_top1:.2f} % |",
        f"| protocol | {record.protocol or 'unstated'} |",
        f"| epochs | {record.epochs} |",
        f"| cost | {cost} |",
        f"| run id / config id | {record.run_id} / {record.config_id} |",
        "",
        "Accuracies are on the real test set of the data set. `record.json` beside this card is the whole run record "
        "(config, environment, per-epoch history, synthetic-set diagnostics).",
        "",
        "## Use",
        "",
        "```python",
        "from safetensors.torch import load_file",
        "from dfkd.models import create_model",
        "",
        f'model = create_model("{record.student}", num_classes={_num_classes(record)})',
        'model.load_state_dict(load_file("model.safetensors"))',
        "```",
        "",
        "or as a teacher of another run: `bench run --teacher model.safetensors --dataset " + record.dataset + "`.",
        "",
    ]
    if record.protocol_deviations:
        lines += ["Deviations from the protocol: " + "; ".join(record.protocol_deviations), ""]
    return "\n".join(lines)


def _num_classes(record: RunRecord) -> int:
    from dfkd.datasets import get_dataset

    return get_dataset(record.dataset).num_classes


# -- synthetic sets as Hugging Face datasets --------------------------------------------------------------------
def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise UserError(
            'this needs the Hugging Face datasets package: pip install "dfkd-bench[hf]" (or pip install datasets)'
        ) from e
    return datasets


def synthetic_dataset(store: Any, class_names: Sequence[str], kept_only: bool = True):
    """The store as a ``datasets.Dataset``: one row per image (see the module docstring), in unit order."""
    datasets = _datasets()
    from PIL import Image

    first = next(store.iter_units(kept_only=False), None)
    if first is None:
        raise UserError(f"{store.root} holds no images yet: run the synthesis first")
    _, _, table = first
    features: dict[str, Any] = {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(class_names)),
        "unit": datasets.Value("string"),
    }
    for name, column in table.items():
        if name == "label":
            continue
        if isinstance(column, torch.Tensor) and column.ndim == 2:
            features[name] = getattr(datasets, "List", datasets.Sequence)(datasets.Value(_dtype(column)))
        elif isinstance(column, torch.Tensor):
            features[name] = datasets.Value(_dtype(column))
        else:
            features[name] = datasets.Value("string")

    def rows() -> Iterator[dict[str, Any]]:
        for unit, images, tbl in store.iter_units(kept_only=kept_only):
            for i in range(images.shape[0]):
                arr = images[i].permute(1, 2, 0).numpy()  # (H, W, C) uint8
                row = {"image": Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr), "unit": unit}
                for name, column in tbl.items():
                    value = column[i]
                    row[name] = value.tolist() if isinstance(value, torch.Tensor) else value
                yield row

    return datasets.Dataset.from_generator(rows, features=datasets.Features(features))


def _dtype(column: torch.Tensor) -> str:
    if column.dtype == torch.bool:
        return "bool"
    return "float32" if column.dtype.is_floating_point else "int64"


def export_synthetic_hf(store: Any, out: str | Path, class_names: Sequence[str], kept_only: bool = True) -> int:
    """Save the store as a Hugging Face dataset folder (``datasets.load_from_disk(out)``); returns the rows."""
    ds = synthetic_dataset(store, class_names, kept_only)
    ds.save_to_disk(str(Path(out).expanduser()))
    return len(ds)


# -- the Hub ----------------------------------------------------------------------------------------------------
def _hub_error(e: Exception, repo_id: str) -> UserError:
    return UserError(
        f"Could not push to the Hugging Face Hub repository {repo_id!r} ({one_line(e, with_type=True)}): check "
        "the network (HF_HUB_OFFLINE must be unset) and log in with `hf auth login` or set HF_TOKEN; the files "
        "written locally are kept"
    )


def push_folder(folder: str | Path, repo_id: str, *, repo_type: str = "model") -> str:
    """Upload ``folder`` to ``repo_id`` (created if missing, private unless it exists); returns its URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type=repo_type, exist_ok=True, private=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type)
    except Exception as e:  # offline, no token, no permission: one line, not a traceback
        raise _hub_error(e, repo_id) from e
    return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def push_dataset(dataset: Any, repo_id: str) -> str:
    """``dataset.push_to_hub(repo_id)`` (a private dataset repository unless it exists); returns its URL."""
    try:
        dataset.push_to_hub(repo_id, private=True)
    except Exception as e:
        raise _hub_error(e, repo_id) from e
    return f"https://huggingface.co/datasets/{repo_id}"
