"""Domain generalisation: top-1 of a distilled student on the shifted test sets a run's ``dg`` names.

PRISM claims students distilled from its synthetic data generalise better under distribution shift;
the suite measures that for every method by also evaluating the student on the shifted sets the user
has (``dg: {key: path}`` in the run config; keys and layouts in ``dfkd.datasets.shifted``)::

    dg:
      imagenet-r: /data/imagenet-r          # kind inferred from the name
      imagenet-sketch: /data/sketch
      imagenet-v2: /data/imagenetv2-matched-frequency-format-val
      cifar10-c: /data/CIFAR-10-C
      cifar10-c@5: /data/CIFAR-10-C         # severity 5 only → columns dg/cifar10-c-s5/...
      folder:my-photos: /data/photos         # explicit kind

Metrics (flat, for the run record's ``extra``; they become leaderboard columns; values in %):

* ``dg/<name>/top1`` for every entry. ImageNet-R/-A: argmax over their 200 classes only (the standard
  protocol, see ``ShiftedSet.class_subset``). Corruption sets: the mean over corruptions of the
  per-corruption top-1, leaving out the 4 held-out extras (speckle_noise, gaussian_blur, spatter,
  saturate) when others are present (Hendrycks & Dietterich, 2019: 15 benchmark corruptions);
* corruption sets also ``dg/<name>/<corruption>/top1`` (every corruption, all its evaluated severities
  pooled) and, when more than one severity is evaluated, ``dg/<name>/s<k>/top1`` (severity k, pooled
  over the corruptions in the mean).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from dfkd.datasets.base import DatasetSpec
from dfkd.datasets.shifted import ShiftedSet, benchmark_corruptions, load_shifted, parse_key
from dfkd.errors import UserError
from dfkd.metrics.predict import predict


@torch.no_grad()
def _top1(correct: Tensor) -> float:
    return 100.0 * correct.float().mean().item() if correct.numel() else 0.0


def _corruption_metrics(group: str, scored: list[tuple[ShiftedSet, Tensor]]) -> dict[str, float]:
    out: dict[str, float] = {}
    per = {}
    for s, correct in scored:
        per[s.corruption] = _top1(correct)
        out[f"dg/{group}/{s.corruption}/top1"] = per[s.corruption]
    in_mean = set(benchmark_corruptions(list(per)))
    out[f"dg/{group}/top1"] = sum(per[c] for c in in_mean) / len(in_mean)
    levels = sorted({v for s, _ in scored for v in (s.severities or [])})
    if len(levels) > 1:
        for level in levels:
            hits = [c[torch.as_tensor(s.severities) == level] for s, c in scored if s.corruption in in_mean]
            out[f"dg/{group}/s{level}/top1"] = _top1(torch.cat(hits))
    return out


def load_dg_sets(spec: DatasetSpec, dg: Mapping[str, str | Path]) -> dict[str, dict[str, ShiftedSet]]:
    """``{metric name: load_shifted(key, path, spec)}`` for every ``dg`` entry, in order.

    Cheap (folders are listed, arrays memory-mapped): call it before a long distillation to fail early
    on a wrong key, a missing path or a layout that does not fit the data set (one-line errors).
    """
    keys: dict[str, str] = {}
    for key in dg:
        name = parse_key(key).name
        if name in keys:
            raise UserError(f"dg keys {keys[name]!r} and {key!r} both give the columns dg/{name}/...; rename one")
        keys[name] = key
    return {name: load_shifted(key, dg[key], spec) for name, key in keys.items()}


def evaluate_shifted(
    model: nn.Module,
    spec: DatasetSpec,
    dg: Mapping[str, str | Path],
    device: torch.device | str,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
) -> dict[str, float]:
    """Top-1 (%) of ``model`` on every shifted set in ``dg`` (``{key: path}``); keys as in the module docstring.

    All sets are loaded first (:func:`load_dg_sets`), so missing data fails before any evaluation; the
    model stays on its device and in its train/eval mode.
    """
    device = torch.device(device)
    out: dict[str, float] = {}
    for group, sets in load_dg_sets(spec, dg).items():
        scored = []
        for s in sets.values():
            loader = DataLoader(
                s.dataset,
                batch_size=batch_size,
                shuffle=False,
                num_workers=num_workers,
                pin_memory=device.type == "cuda",
            )
            found = predict(model, loader, device, class_subset=s.class_subset)
            pred, target = found.pred, found.targets
            scored.append((s, pred == target))
        if all(s.corruption is not None for s, _ in scored):
            out.update(_corruption_metrics(group, scored))
        else:
            (_, correct), *_ = scored
            out[f"dg/{group}/top1"] = _top1(correct)
    return out
