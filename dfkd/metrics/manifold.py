"""How a synthetic set covers the real one, in a feature space: precision, recall, density, coverage, Fréchet distance.

With real features R = {r_i} (N) and synthetic features F = {f_j} (M), NND_k(x) the distance from x to its
k-th nearest neighbour in its own set (itself excluded) and B(x, ρ) the closed ball of radius ρ:

* improved precision and recall (Kynkäänniemi et al., 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models", arXiv:1904.06991, Eq. 1-2), the k-NN manifolds of both sets::

      precision = 1/M Σ_j 1[∃ i: f_j ∈ B(r_i, NND_k(r_i))]      (synthetic images that look real)
      recall    = 1/N Σ_i 1[∃ j: r_i ∈ B(f_j, NND_k(f_j))]      (real images the synthetic set reaches)

* density and coverage (Naeem et al., 2020, "Reliable Fidelity and Diversity Metrics for Generative
  Models", arXiv:2002.09797, Eq. 3-4), from the real manifold only, robust to synthetic outliers::

      density  = 1/(kM) Σ_j Σ_i 1[f_j ∈ B(r_i, NND_k(r_i))]     (can exceed 1)
      coverage = 1/N Σ_i 1[∃ j: f_j ∈ B(r_i, NND_k(r_i))]       (real neighbourhoods hit by a synthetic sample)

* Fréchet distance between Gaussians fitted to both sets (Heusel et al., 2017)::

      FD = ‖μ_R − μ_F‖² + Tr(Σ_R + Σ_F − 2 (Σ_R Σ_F)^{1/2})

  In the Inception-v3 pool space this is FID; here it is computed in whatever space the features come
  from and named after it (``teacher_fd``, ``clip_fd``), never "FID".

* farthest-point sampling (greedy max-min, Gonzalez, 1985, "Clustering to minimize the maximum intercluster
  distance"): the ``k`` rows of a set that spread over it most, under cosine distance (PRISM's prompt selection).

Every pairwise quantity is computed block by block (``chunk`` × ``chunk`` distances at a time), so memory
stays bounded for ImageNet-sized sets; the result equals the unblocked computation (tested).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FeatureStats", "farthest_point_sampling", "frechet_distance", "knn_radii", "prdc"]


def _blocks(a: Tensor, b: Tensor, chunk: int) -> Iterator[tuple[int, int, Tensor]]:
    """Euclidean distances between row blocks of ``a`` (N, D) and ``b`` (M, D): (i0, j0, (n, m) block)."""
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    for i0 in range(0, a.shape[0], chunk):
        ai = a[i0 : i0 + chunk]  # (n, D)
        for j0 in range(0, b.shape[0], chunk):
            yield i0, j0, torch.cdist(ai, b[j0 : j0 + chunk], compute_mode="donot_use_mm_for_euclid_dist")


def knn_radii(x: Tensor, k: int = 3, chunk: int = 2048) -> Tensor:
    """NND_k: distance from each row of ``x`` (N, D) to its k-th nearest other row, (N,); needs N > k."""
    n = x.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k-NN radii need 0 < k < number of samples, got k={k} for {n} samples")
    best = torch.full((n, k), float("inf"), dtype=x.dtype, device=x.device)  # running k smallest per row
    for i0, j0, d in _blocks(x, x, chunk):  # d: (n_i, n_j)
        rows = torch.arange(i0, i0 + d.shape[0], device=x.device)
        cols = rows - j0
        inside = (cols >= 0) & (cols < d.shape[1])
        d[(rows - i0)[inside], cols[inside]] = float("inf")  # a point is not its own neighbour
        block = best[i0 : i0 + d.shape[0]]  # (n_i, k)
        merged = torch.cat([block, d], dim=1)  # (n_i, k + n_j)
        best[i0 : i0 + d.shape[0]] = merged.topk(k, dim=1, largest=False).values
    return best.max(dim=1).values  # (N,): the k-th smallest


def prdc(real: Tensor, fake: Tensor, k: int = 3, chunk: int = 2048) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` (M, D) against ``real`` (N, D) (module docstring)."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"features must be (N, D) and (M, D) with the same D, got {tuple(real.shape)}, {tuple(fake.shape)}"
        )
    fake = fake.to(real.dtype)
    r_real = knn_radii(real, k, chunk)  # (N,)
    r_fake = knn_radii(fake, k, chunk)  # (M,)
    fake_in_real = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)  # precision
    fake_ball_count = torch.zeros(fake.shape[0], dtype=torch.long, device=real.device)  # density
    real_covered = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)  # coverage
    real_in_fake = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)  # recall
    for i0, j0, d in _blocks(real, fake, chunk):  # d: (n, m), rows real, columns fake
        n, m = d.shape
        in_real_ball = d <= r_real[i0 : i0 + n, None]  # f_j ∈ B(r_i, NND_k(r_i))
        fake_in_real[j0 : j0 + m] |= in_real_ball.any(dim=0)
        fake_ball_count[j0 : j0 + m] += in_real_ball.sum(dim=0)
        real_covered[i0 : i0 + n] |= in_real_ball.any(dim=1)
        real_in_fake[i0 : i0 + n] |= (d <= r_fake[None, j0 : j0 + m]).any(dim=1)  # r_i ∈ B(f_j, NND_k(f_j))
    return {
        "precision": fake_in_real.float().mean().item(),
        "recall": real_in_fake.float().mean().item(),
        "density": fake_ball_count.double().sum().item() / (k * fake.shape[0]),
        "coverage": real_covered.float().mean().item(),
    }


class FeatureStats:
    """Mean and covariance of features accumulated batch by batch in float64 (``update`` (B, D) at a time)."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: Tensor | None = None  # (D,)
        self.outer: Tensor | None = None  # (D, D)

    def update(self, feats: Tensor) -> FeatureStats:
        f = feats.detach().double().cpu()  # (B, D)
        if self.sum is None:
            self.sum, self.outer = f.new_zeros(f.shape[1]), f.new_zeros(f.shape[1], f.shape[1])
        self.n += f.shape[0]
        self.sum += f.sum(dim=0)
        self.outer += f.T @ f  # (D, D)
        return self

    def mean_cov(self) -> tuple[Tensor, Tensor]:
        if self.n < 2 or self.sum is None or self.outer is None:
            raise ValueError("the Fréchet distance needs at least 2 feature vectors per set")
        mu = self.sum / self.n  # (D,)
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)  # (D, D), unbiased
        return mu, cov


def _psd_sqrt(m: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(real: Tensor | FeatureStats, fake: Tensor | FeatureStats) -> float:
    """FD between Gaussian fits of two feature sets (module docstring); tensors (N, D) or accumulated stats.

    Tr((Σ_R Σ_F)^{1/2}) is computed as Σ sqrt(eig(Σ_R^{1/2} Σ_F Σ_R^{1/2})), which is symmetric PSD, in float64.
    """
    mu1, s1 = (real if isinstance(real, FeatureStats) else FeatureStats().update(real)).mean_cov()
    mu2, s2 = (fake if isinstance(fake, FeatureStats) else FeatureStats().update(fake)).mean_cov()
    root1 = _psd_sqrt(s1)  # (D, D)
    middle = root1 @ s2 @ root1
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    fd = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt
    return max(fd.item(), 0.0)


def farthest_point_sampling(
    embeddings: Tensor, k: int, first: int = 0, *, selected: Sequence[int] | None = None
) -> list[int]:
    """Greedy max-min (farthest-point) selection of ``k`` rows under cosine distance 1 − cos.

    ``embeddings``: (N, D). Starts from ``selected`` (kept, in order) or from row ``first``; each step adds
    the row whose distance to its nearest selected row is largest (ties: the lowest index). Deterministic;
    returns ``k`` distinct indices in selection order.
    """
    x = F.normalize(embeddings.detach().float(), dim=1)  # (N, D), rows of norm 1 (0 for zero rows)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"farthest_point_sampling: k must be in 1..{n}, got {k}")
    chosen = list(dict.fromkeys(selected)) if selected else [first]
    if any(not 0 <= i < n for i in chosen):
        raise ValueError(f"farthest_point_sampling: start indices must be in 0..{n - 1}")
    if len(chosen) >= k:
        return chosen[:k]
    dist = (1 - x @ x[chosen].T).min(dim=1).values  # (N,) distance to the nearest chosen row
    dist[chosen] = -torch.inf
    while len(chosen) < k:
        i = int(torch.argmax(dist))  # first maximal index
        chosen.append(i)
        dist = torch.minimum(dist, 1 - x @ x[i])  # (N,)
        dist[i] = -torch.inf
    return chosen
