"""The ``diagnose`` stage: what a method synthesized, measured against the real test set, after distillation.

For every run with a synthetic store (every method but ``real_kd``):

* precision, recall, density, coverage (k-NN manifolds, ``dfkd.metrics.manifold``) and the Fréchet distance
  between the kept synthetic images and the real test images, in the teacher's penultimate feature space
  (``synthetic/precision`` … ``synthetic/teacher_fd``) and, when a CLIP model with weights is configured, in
  open_clip image-feature space (``synthetic/clip_precision`` … ``synthetic/clip_fd``);
* class balance (normalised entropy of the kept class counts), teacher confidence and free-energy histograms
  (from the per-image scores the store already holds), and how often the distilled student agrees with the
  teacher on the synthetic images;

and for every run, the per-class top-1 of student and teacher on the real test set.

Scalars go into the record's ``extra`` (and so become leaderboard columns); histograms, class counts and
per-class arrays go into its ``diagnostics``. Feature sets are capped at ``max_images`` per side by a seeded
random subset, so the numbers are reproducible and the cost is bounded on ImageNet-sized sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from dfkd.config import DiagnoseConfig
from dfkd.datasets.base import DatasetSpec
from dfkd.metrics.features import Extractor, clip_extractor, teacher_extractor
from dfkd.metrics.manifold import FeatureStats, frechet_distance, prdc
from dfkd.metrics.predict import predict
from dfkd.synthesis.store import TEACHER_CONFIDENCE, TEACHER_ENERGY, TEACHER_PRED, SyntheticStore


@dataclass
class Diagnosis:
    scalars: dict[str, float] = field(default_factory=dict)  # → record.extra (leaderboard columns)
    details: dict[str, Any] = field(default_factory=dict)  # → record.diagnostics (histograms, per-class arrays)


def subset_indices(n: int, max_images: int, seed: int) -> Tensor:
    """Sorted indices of a seeded random subset of ``range(n)`` of size ``min(n, max_images)`` (0 = all)."""
    if max_images <= 0 or n <= max_images:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_images].sort().values


def histogram(values: Tensor, edges: Tensor) -> list[int]:
    """Counts of ``values`` in the bins ``[e_i, e_{i+1})`` (the last bin closed), as plain ints."""
    if values.numel() == 0:
        return [0] * (len(edges) - 1)
    idx = torch.bucketize(values.double().clamp(edges[0], edges[-1]), edges.double(), right=True) - 1
    return torch.bincount(idx.clamp(0, len(edges) - 2), minlength=len(edges) - 1).tolist()


def class_balance(counts: Tensor) -> float:
    """Normalised entropy H(p)/log K of the class distribution (1 = perfectly balanced, 0 = one class)."""
    k = counts.numel()
    p = counts.double() / max(1, int(counts.sum()))
    h = -(p[p > 0] * p[p > 0].log()).sum().item()
    return h / math.log(k) if k > 1 else 1.0


def per_class_top1(pred: Tensor, labels: Tensor, num_classes: int) -> list[float | None]:
    """Top-1 % per class (None for a class without test images)."""
    total = torch.bincount(labels, minlength=num_classes)
    correct = torch.bincount(labels[pred == labels], minlength=num_classes)
    return [100.0 * c / t if t else None for c, t in zip(correct.tolist(), total.tolist())]


def _space_metrics(real: Tensor, fake: Tensor, cfg: DiagnoseConfig) -> dict[str, float]:
    if min(real.shape[0], fake.shape[0]) <= cfg.k:
        return {}
    out = prdc(real, fake, k=cfg.k, chunk=cfg.chunk)
    out["fd"] = frechet_distance(FeatureStats().update(real), FeatureStats().update(fake))
    return out


def _real_pass(
    test_set: Dataset,
    spec: DatasetSpec,
    student: nn.Module,
    extractors: dict[str, Extractor],
    chosen: Tensor,
    device: torch.device,
    batch_size: int,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Student predictions and labels on the whole test set; features of the ``chosen`` images only."""
    mask = torch.zeros(len(test_set), dtype=torch.bool)  # type: ignore[arg-type]
    mask[chosen] = True
    feats: dict[str, list[Tensor]] = {name: [] for name in extractors}

    def features(x: Tensor, start: int) -> None:
        keep = mask[start : start + x.shape[0]]
        if keep.any():
            images = spec.denormalize(x[keep]).clamp(0, 1)  # (b, C, S, S) as the teacher sees them, in [0, 1]
            for name, extract in extractors.items():
                feats[name].append(extract(images))

    found = predict(student, DataLoader(test_set, batch_size=batch_size, shuffle=False), device, on_batch=features)
    return found.pred, found.targets, {k: torch.cat(v) for k, v in feats.items()}


def _synthetic_pass(
    store: SyntheticStore,
    spec: DatasetSpec,
    student: nn.Module,
    extractors: dict[str, Extractor],
    chosen: Tensor,
    device: torch.device,
    batch_size: int,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Student predictions and features of the ``chosen`` kept synthetic images (store order)."""
    data = Subset(store.dataset(transform=None, kept_only=True), chosen.tolist())
    preds, feats = [], {name: [] for name in extractors}
    for x, _, _ in DataLoader(data, batch_size=batch_size, shuffle=False):
        images = x.float() / 255.0  # (B, C, S, S) in [0, 1], exactly as stored
        with torch.no_grad():
            preds.append(student(spec.normalize(images.to(device))).argmax(1).cpu())
        for name, extract in extractors.items():
            feats[name].append(extract(images))
    empty = torch.empty(0, dtype=torch.long)
    return (torch.cat(preds) if preds else empty), {k: torch.cat(v) if v else torch.empty(0) for k, v in feats.items()}


def diagnose(
    cfg: DiagnoseConfig,
    *,
    spec: DatasetSpec,
    teacher: nn.Module,
    student: nn.Module,
    device: torch.device,
    test_set: Dataset,
    teacher_pred: Tensor,
    store: SyntheticStore | None = None,
    seed: int = 0,
) -> Diagnosis:
    """Measure the synthetic set (``store``, kept images) and the student per class (see the module docstring)."""
    extractors: dict[str, Extractor] = {}
    if store is not None:
        extractors["teacher"] = teacher_extractor(teacher, spec, device)
        if cfg.clip_model:
            extractors["clip"] = clip_extractor(cfg.clip_model, cfg.clip_pretrained, device)
    was_training = student.training
    student.eval()
    try:
        real_chosen = subset_indices(len(test_set), cfg.max_images, seed)  # type: ignore[arg-type]
        s_pred, labels, real_feats = _real_pass(
            test_set, spec, student, extractors, real_chosen, device, cfg.batch_size
        )
        out = Diagnosis()
        k = spec.num_classes
        student_pc = per_class_top1(s_pred, labels, k)
        out.details["per_class"] = {
            "student_top1": student_pc,
            "teacher_top1": per_class_top1(teacher_pred.cpu(), labels, k),
            "test_images": torch.bincount(labels, minlength=k).tolist(),
        }
        present = [v for v in student_pc if v is not None]
        if present:
            out.scalars["student/worst_class_top1"] = min(present)
        if store is None:
            return out

        table = store.read_table(kept_only=False)
        kept = table["kept"]
        fake_chosen = subset_indices(int(kept.sum()), cfg.max_images, seed + 1)
        fake_pred, fake_feats = _synthetic_pass(store, spec, student, extractors, fake_chosen, device, cfg.batch_size)
        t_pred_kept = table[TEACHER_PRED][kept][fake_chosen]
        if fake_pred.numel():
            agree = 100.0 * (fake_pred == t_pred_kept).float().mean().item()
            out.scalars["synthetic/student_teacher_agreement"] = agree
        spaces: dict[str, Any] = {}
        for name in extractors:
            metrics = _space_metrics(real_feats[name], fake_feats[name], cfg)
            spaces[name] = {
                "dim": int(real_feats[name].shape[1]) if real_feats[name].ndim == 2 else 0,
                "real_images": int(real_feats[name].shape[0]),
                "synthetic_images": int(fake_feats[name].shape[0]),
                "k": cfg.k,
                **metrics,
            }
            prefix = "synthetic/" if name == "teacher" else f"synthetic/{name}_"
            for key in ("precision", "recall", "density", "coverage"):
                if key in metrics:
                    out.scalars[prefix + key] = metrics[key]
            if "fd" in metrics:
                out.scalars[f"synthetic/{name}_fd"] = metrics["fd"]
        out.details["feature_spaces"] = spaces

        labels_all = table["label"].long()
        generated = torch.bincount(labels_all, minlength=k)
        kept_counts = torch.bincount(labels_all[kept], minlength=k)
        out.details["class_counts"] = {"generated": generated.tolist(), "kept": kept_counts.tolist()}
        out.scalars["synthetic/class_balance"] = class_balance(kept_counts)
        bins = cfg.histogram_bins
        conf_edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
        energy = table[TEACHER_ENERGY].double()
        lo, hi = (energy.min().item(), energy.max().item()) if energy.numel() else (0.0, 1.0)
        energy_edges = torch.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1, dtype=torch.float64)
        for name, values, edges in (
            ("confidence", table[TEACHER_CONFIDENCE], conf_edges),
            ("energy", energy, energy_edges),
        ):
            out.details[f"{name}_histogram"] = {
                "edges": edges.tolist(),
                "kept": histogram(values[kept], edges),
                "all": histogram(values, edges),
            }
        return out
    finally:
        student.train(was_training)
