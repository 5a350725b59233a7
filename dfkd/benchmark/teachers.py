"""Teachers: a checkpoint path, a community bundle file found under the cache, a zoo model, or trained here.

Resolution of ``teacher`` (``bench run --teacher T``):

* ``timm/<name>`` / ``torchvision/<name>`` → the zoo's pretrained weights (fetched by that library);
* a path to a ``.pth`` / ``.pt`` file → its architecture from ``teacher_arch``, the checkpoint's
  ``arch`` entry or a ``<dataset>_<arch>.pth`` file name;
* ``<arch>`` or ``<dataset>_<arch>`` (the community bundle's names, ``cifar10_resnet34``) →
  ``<cache>/teachers/<dataset>_<arch>.pth``; when missing it is trained with the documented recipe
  if allowed (``train_teacher``; on by default only for the cheap ``digits``), else a one-line
  error says where to put the bundle or how to train it.

Teacher accuracy on the real test set is measured once per checkpoint (keyed by its digest) and
cached beside it in ``<checkpoint>.eval.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from dfkd.config import DistillConfig, to_plain
from dfkd.datasets.base import DatasetSpec
from dfkd.errors import UserError
from dfkd.paths import atomic_write_text, safe_name, teachers_dir

BUNDLE_HELP = (
    "get the community teacher bundle (CMI / Fast-Datafree 'pretrained' checkpoints, e.g. cifar10_resnet34.pth) "
    "into {dir}, pass --teacher PATH.pth, or train one with `bench teacher train --dataset {dataset} --arch {arch}`"
)
CHEAP_TO_TRAIN = {"digits"}  # data sets whose teacher trains in seconds on a CPU


@dataclass(frozen=True)
class TeacherRef:
    """Where a teacher comes from, before anything is loaded."""

    name: str  # what records call it: the architecture (resnet34) or zoo name (torchvision/resnet50)
    arch: str  # model registry name to build
    path: Path | None  # checkpoint file; None for zoo-pretrained weights
    zoo: bool = False


@dataclass
class TeacherInfo:
    name: str
    checkpoint: str | None
    digest: str | None
    top1: float
    top5: float


def _is_zoo(name: str) -> bool:
    return name.startswith(("timm/", "torchvision/"))


def resolve_teacher(teacher: str | None, teacher_arch: str | None, spec: DatasetSpec) -> TeacherRef:
    """Turn the user's ``--teacher`` into a :class:`TeacherRef` (nothing loaded yet)."""
    teacher = teacher or spec.default_teacher
    if _is_zoo(teacher):
        return TeacherRef(name=teacher, arch=teacher, path=None, zoo=True)
    as_path = Path(teacher).expanduser()
    if (as_path / "record.json").is_file():  # a run folder of this suite: its student, as a teacher
        return _teacher_from_run(as_path)
    if teacher.endswith((".pth", ".pt", ".safetensors")) or as_path.is_file():
        if not as_path.is_file():
            raise UserError(f"Teacher checkpoint {as_path} does not exist; check --teacher")
        arch = teacher_arch or _arch_from_checkpoint(as_path) or _arch_from_filename(as_path, spec.name)
        if arch is None:
            raise UserError(
                f"Cannot tell the architecture of {as_path.name}; pass --set teacher_arch=NAME (`bench ls models`)"
            )
        return TeacherRef(name=arch, arch=arch, path=as_path)
    arch = teacher.removeprefix(f"{spec.name}_")
    return TeacherRef(name=arch, arch=arch, path=teachers_dir() / f"{safe_name(spec.name)}_{arch}.pth")


def _teacher_from_run(folder: Path) -> TeacherRef:
    """``--teacher RUN_FOLDER``: the student a run trained (``checkpoints/last.pt``), with the architecture its record
    names (``runs/<dataset>/<teacher>-<student>/<method>/<run-id>``)."""
    from dfkd.benchmark.records import RunRecord

    record = RunRecord.read(folder / "record.json")
    path = folder / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(f"--teacher {folder}: the run's checkpoint {path} is gone; point to a weights file instead")
    return TeacherRef(name=f"{record.student}@{record.method}-{record.run_id}", arch=record.student, path=path)


def _arch_from_filename(path: Path, dataset: str) -> str | None:
    stem = path.stem
    return stem.removeprefix(f"{dataset}_") if stem.startswith(f"{dataset}_") else None


def _checkpoint_meta(path: Path) -> dict[str, Any]:
    """The metadata beside the weights in a checkpoint this suite wrote (arch, dataset, recipe, …; a safetensors
    file: its header's metadata, e.g. a student exported by ``bench student export``); {} otherwise."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return dict(f.metadata() or {})
        except Exception:
            return {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return {}
    return {k: v for k, v in obj.items() if k != "state_dict"} if isinstance(obj, dict) else {}


def _arch_from_checkpoint(path: Path) -> str | None:
    arch = _checkpoint_meta(path).get("arch")
    return arch if isinstance(arch, str) else None


def teacher_provenance(ref: TeacherRef, recipe: DistillConfig | None) -> tuple[dict[str, Any], str | None]:
    """(what the record states about the teacher file, a warning or None). The file's sha256 digest, and for a
    teacher this suite trained the recipe that actually made it, which may differ from ``recipe`` (the run's
    ``teacher_train``) when an earlier run trained the cached file: the warning says so and how to retrain."""
    from dfkd.config import semantic
    from dfkd.hashing import file_digest

    if ref.path is None:
        return {"source": ref.name, "digest": None, "recipe": None}, None
    meta = _checkpoint_meta(ref.path)
    made_by = meta.get("recipe")
    info = {"source": str(ref.path), "digest": file_digest(ref.path, 64), "recipe": made_by}
    if made_by is None or recipe is None:
        return info, None
    wanted = semantic(recipe)
    differs = sorted(k for k in wanted if k in made_by and made_by[k] != wanted[k])
    if not differs:
        return info, None
    shown = ", ".join(f"{k} {made_by[k]!r} (config {wanted[k]!r})" for k in differs[:4])
    return info, (
        f"the cached teacher {ref.path} was trained with another recipe: {shown}; this run uses it as it is and "
        f"records the recipe that made it. To train one with this recipe: delete the file, or "
        f"`bench teacher train --dataset {meta.get('dataset', '…')} --out PATH` and pass --teacher PATH"
    )


def build_teacher(
    ref: TeacherRef,
    spec: DatasetSpec,
    device: torch.device,
    *,
    train_if_missing: bool | None = None,
    recipe: DistillConfig | None = None,
    data_root: str | None = None,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> nn.Module:
    """Build and load the teacher (training it first if allowed and missing); frozen, eval mode."""
    from dfkd.models import create_model
    from dfkd.models.checkpoint import load_weights

    if ref.zoo:
        model = create_model(ref.arch, spec.num_classes, pretrained=True)
    else:
        assert ref.path is not None
        if not ref.path.is_file():
            allowed = spec.name in CHEAP_TO_TRAIN if train_if_missing is None else train_if_missing
            if not allowed:
                help_ = BUNDLE_HELP.format(dir=ref.path.parent, dataset=spec.name, arch=ref.arch)
                raise UserError(f"No teacher checkpoint at {ref.path}: {help_}")
            from dfkd.paths import file_lock

            with file_lock(ref.path.with_name(ref.path.name + ".lock"), f"training the teacher {ref.path.name}"):
                if not ref.path.is_file():  # the process we waited for may have trained it
                    train_teacher(
                        spec, ref.arch, recipe or DistillConfig(), ref.path, device, data_root, seed, progress
                    )
        model = create_model(ref.arch, spec.num_classes)
        load_weights(model, ref.path, source=str(ref.path))
    model.to(device).eval().requires_grad_(False)
    return model


def train_teacher(
    spec: DatasetSpec,
    arch: str,
    recipe: DistillConfig,
    out_path: str | Path,
    device: torch.device,
    data_root: str | None = None,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train ``arch`` on the real training split with cross-entropy (the one use of training data)."""
    from dfkd.distill.trainer import Trainer, seed_everything
    from dfkd.methods.base import KDDistiller
    from dfkd.models import create_model
    from dfkd.models.checkpoint import save_weights

    if recipe.kd_weight > 0 or recipe.ce_weight <= 0:
        raise UserError("A teacher recipe trains with cross-entropy only: set kd_weight=0 and ce_weight>0")
    out_path = Path(out_path)
    seed_everything(seed)
    model = create_model(arch, spec.num_classes)
    train = spec.load("train", data_root)
    test_loader = DataLoader(spec.load("test", data_root), batch_size=256, num_workers=recipe.num_workers)
    ckpt_dir = out_path.parent / f".{out_path.stem}-training"
    trainer = Trainer(
        model,
        KDDistiller(None, recipe),
        recipe,
        device=device,
        seed=seed,
        test_loader=test_loader,
        checkpoint_dir=ckpt_dir,
        progress=progress,
    )
    result = trainer.fit(train)
    save_weights(
        model.cpu(),
        out_path,
        arch=arch,
        dataset=spec.name,
        epochs=recipe.epochs,
        top1_last=result.top1,
        recipe=to_plain(recipe),
    )
    for f in ckpt_dir.glob("*"):
        f.unlink()
    ckpt_dir.rmdir()
    return out_path


def test_loader(spec: DatasetSpec, data_root: str | None, batch_size: int = 256, num_workers: int = 0) -> DataLoader:
    return DataLoader(spec.load("test", data_root), batch_size=batch_size, shuffle=False, num_workers=num_workers)


def teacher_accuracy(
    model: nn.Module, ref: TeacherRef, spec: DatasetSpec, loader: DataLoader, device: torch.device
) -> tuple[dict[str, Any], torch.Tensor]:
    """Top-1/top-5 of the teacher on the real test set and its predictions, cached per checkpoint digest."""
    from dfkd.distill.trainer import evaluate
    from dfkd.hashing import file_digest

    digest = file_digest(ref.path) if ref.path else ref.name
    cache = ref.path.with_name(ref.path.name + ".eval.json") if ref.path else None
    key = f"{spec.name}:{digest}:{len(loader.dataset)}"
    if cache and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return data, torch.tensor(data["pred"], dtype=torch.long)
        except (json.JSONDecodeError, KeyError):
            pass
    ev = evaluate(model, loader, device)
    data = {"key": key, "digest": digest, "top1": ev["top1"], "top5": ev["top5"], "pred": ev["pred"].tolist()}
    if cache:
        atomic_write_text(cache, json.dumps(data))
    return data, ev["pred"]
