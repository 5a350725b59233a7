"""Precision / recall / density / coverage and the Fréchet distance: golden values, limits, chunking."""

from __future__ import annotations

import math

import pytest
import torch

from dfkd.metrics import manifold
from dfkd.metrics.manifold import FeatureStats, frechet_distance, knn_radii, prdc

# A 2-D example worked by hand (k = 1). Real points on the x axis, synthetic points near and far:
#   NND_1(real) = [1, 1, 2, 5]; NND_1(fake) = [√8.5, √8.5, √51.25]
#   f0 = (0.5, 0) lies in the balls of r0 and r1; f1 = (3, 1.5) in the ball of r2 (1.5 ≤ 2); f2 = (10, 0) in none
#   → precision 2/3, density (2 + 1 + 0) / (1·3) = 1; r0, r1, r2 are hit, r3 = (−5, 0) is not → coverage 3/4;
#   r0, r1, r2 lie in f0's ball (radius √8.5 ≈ 2.92 around 0.5), r3 in no fake ball → recall 3/4.
REAL = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [-5.0, 0.0]], dtype=torch.float64)
FAKE = torch.tensor([[0.5, 0.0], [3.0, 1.5], [10.0, 0.0]], dtype=torch.float64)


def test_knn_radii_by_hand():
    assert knn_radii(REAL, k=1).tolist() == pytest.approx([1, 1, 2, 5])
    assert knn_radii(REAL, k=2).tolist() == pytest.approx([3, 2, 3, 6])  # second-nearest other point
    assert knn_radii(FAKE, k=1).tolist() == pytest.approx([math.sqrt(8.5), math.sqrt(8.5), math.sqrt(51.25)])


def test_hand_worked_2d_example():
    got = prdc(REAL, FAKE, k=1)
    assert got == pytest.approx({"precision": 2 / 3, "recall": 3 / 4, "density": 1.0, "coverage": 3 / 4})


def test_identical_sets_score_one_and_far_disjoint_sets_zero():
    x = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
    same = prdc(x, x.clone(), k=3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = prdc(x, x + 1e3, k=3)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_a_collapsed_synthetic_set_has_precision_but_no_recall():
    real = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    collapsed = real[:1].repeat(50, 1) + 1e-3 * torch.randn(50, 2, generator=torch.Generator().manual_seed(2))
    got = prdc(real, collapsed, k=3)
    assert got["precision"] == 1.0  # every sample sits on the real manifold …
    assert got["recall"] < 0.1 and got["coverage"] < 0.1  # … but reaches almost none of it


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_equals_unchunked_and_blocks_stay_bounded(chunk, monkeypatch):
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(150, 5, generator=g), torch.randn(90, 5, generator=g) * 1.3 + 0.2
    whole = prdc(real, fake, k=3, chunk=10_000)
    whole_radii = knn_radii(real, k=3, chunk=10_000)
    shapes = []
    cdist = torch.cdist

    def spy(a, b, **kw):
        shapes.append((a.shape[0], b.shape[0]))
        return cdist(a, b, **kw)

    monkeypatch.setattr(manifold.torch, "cdist", spy)
    assert prdc(real, fake, k=3, chunk=chunk) == pytest.approx(whole, abs=1e-12)
    assert torch.allclose(knn_radii(real, k=3, chunk=chunk), whole_radii)
    assert max(max(s) for s in shapes) <= chunk  # never more than chunk × chunk distances at once


def test_prdc_rejects_mismatched_features_and_too_few_samples():
    with pytest.raises(ValueError, match="same D"):
        prdc(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="0 < k"):
        prdc(torch.randn(3, 2), torch.randn(10, 2), k=3)


def test_frechet_distance_golden_values():
    # 1-D: real {0, 2}: μ 1, σ² 2; fake {1, 5}: μ 3, σ² 8 → (1−3)² + 2 + 8 − 2·√(2·8) = 6
    assert frechet_distance(torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [5.0]])) == pytest.approx(6.0)
    # independent 2-D: sum of the per-axis distances; identical sets: 0
    r = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]], dtype=torch.float64)  # μ (1, 1), Σ = 4/3·I
    f = r * 3 + 1  # μ (4, 4), Σ = 12·I
    expected = 2 * 3**2 + 2 * (math.sqrt(4 / 3) - math.sqrt(12)) ** 2
    assert frechet_distance(r, f) == pytest.approx(expected)
    assert frechet_distance(r, r.clone()) == pytest.approx(0.0, abs=1e-9)


def test_feature_stats_accumulated_in_batches_equal_one_pass():
    x = torch.randn(101, 6, generator=torch.Generator().manual_seed(4))
    y = torch.randn(80, 6, generator=torch.Generator().manual_seed(5)) + 0.5
    stats = FeatureStats()
    for part in x.split(17):
        stats.update(part)
    mu, cov = stats.mean_cov()
    assert torch.allclose(mu, x.double().mean(0)) and torch.allclose(cov, torch.cov(x.double().T))
    assert frechet_distance(stats, y) == pytest.approx(frechet_distance(x, y), rel=1e-9)
