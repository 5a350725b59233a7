"""Teacher-side energy scores: how in-distribution an image looks to a classifier.

Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020. For a classifier
with logits f(x) ∈ R^K the free energy at temperature T is

    E_T(x) = −T · log Σ_k exp(f_k(x) / T)          (the energy score of Liu et al. 2020, with E(x, k) = −f_k(x))

and the class-conditional energy of label y is E(x, y) = −f_y(x). Low energy = in-distribution for the
teacher. PRISM's energy guidance and filter (dfkd/methods/prism.py) and the runner's per-image scores
use these functions. All are differentiable and numerically stable (``torch.logsumexp``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["class_energy", "free_energy", "teacher_scores"]


def free_energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Free energy E_T(x) = −T·logsumexp(f(x)/T) per sample (Liu et al. 2020).

    ``logits``: (B, K) → (B,). As T → 0 it tends to −max_k f_k; for large T to −T·log K − mean_k f_k.
    Stable for large logits (logsumexp subtracts the maximum); the gradient w.r.t. the logits is
    −softmax(f/T).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, K), got shape {tuple(logits.shape)}")
    return -temperature * torch.logsumexp(logits / temperature, dim=1)  # (B,)


def class_energy(logits: Tensor, labels: Tensor) -> Tensor:
    """Class-conditional energy E(x, y) = −f_y(x) per sample (Liu et al. 2020).

    ``logits``: (B, K), ``labels``: (B,) int → (B,).
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"need logits (B, K) and labels (B,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    return -logits.gather(1, labels.long().view(-1, 1)).squeeze(1)  # (B, 1) → (B,)


def teacher_scores(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> dict[str, Tensor]:
    """Per-sample scores of the teacher's logits against target labels, all (B,).

    * ``energy``: free energy E_T (``temperature`` applies to this score only);
    * ``class_energy``: −f_y;
    * ``pred``: argmax class (int64);
    * ``confidence``: max softmax probability (T = 1);
    * ``target_prob``: softmax probability of the label (T = 1).

    ``logits``: (B, K), ``labels``: (B,). Computed with gradients where the inputs have them; wrap the call
    in ``torch.no_grad()`` for scoring only.
    """
    probs = logits.softmax(dim=1)  # (B, K)
    labels = labels.long()
    return {
        "energy": free_energy(logits, temperature),  # (B,)
        "class_energy": class_energy(logits, labels),  # (B,)
        "pred": logits.argmax(dim=1),  # (B,)
        "confidence": probs.max(dim=1).values,  # (B,)
        "target_prob": probs.gather(1, labels.view(-1, 1)).squeeze(1),  # (B,)
    }
