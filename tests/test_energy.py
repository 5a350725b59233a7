"""Energy scores (Liu et al. 2020): golden values computed by hand, temperature limits, stability, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from dfkd.metrics.energy import class_energy, free_energy, teacher_scores

LOGITS = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)  # (2, 3)
LABELS = torch.tensor([0, 2])


def test_free_energy_golden_values_by_hand():
    # row 0: −log(e^1 + e^2 + e^3); row 1: −log(3·e^0) = −log 3
    expected = [-math.log(math.e + math.e**2 + math.e**3), -math.log(3.0)]
    assert free_energy(LOGITS).tolist() == pytest.approx(expected, abs=1e-12)
    assert expected[0] == pytest.approx(-3.40760596444, abs=1e-10)
    # T = 2: −2·log(e^0.5 + e^1 + e^1.5); for equal logits: −2·log 3
    expected_t2 = [-2 * math.log(math.exp(0.5) + math.exp(1.0) + math.exp(1.5)), -2 * math.log(3.0)]
    assert free_energy(LOGITS, temperature=2.0).tolist() == pytest.approx(expected_t2, abs=1e-12)


def test_class_energy_and_teacher_scores_golden_values():
    assert class_energy(LOGITS, LABELS).tolist() == [-1.0, -0.0]
    s = teacher_scores(LOGITS, LABELS)
    z0 = math.e + math.e**2 + math.e**3
    assert s["pred"].tolist() == [2, 0]  # ties → first index
    assert s["confidence"].tolist() == pytest.approx([math.e**3 / z0, 1 / 3], abs=1e-12)
    assert s["target_prob"].tolist() == pytest.approx([math.e / z0, 1 / 3], abs=1e-12)
    assert s["energy"].tolist() == pytest.approx([-math.log(z0), -math.log(3)], abs=1e-12)
    assert s["class_energy"].tolist() == [-1.0, -0.0]
    assert all(v.shape == (2,) for v in s.values())
    # the temperature changes the energy only
    s2 = teacher_scores(LOGITS, LABELS, temperature=2.0)
    assert torch.equal(s2["confidence"], s["confidence"])
    assert not torch.allclose(s2["energy"], s["energy"])


def test_temperature_limits():
    logits = torch.tensor([[0.3, -1.2, 2.5, 0.0]], dtype=torch.float64)
    # T → 0: −max f
    assert free_energy(logits, 1e-4).item() == pytest.approx(-2.5, abs=1e-6)
    # large T: −T·log K − mean f
    t = 1e4
    assert free_energy(logits, t).item() == pytest.approx(-t * math.log(4) - logits.mean().item(), abs=1e-3)
    # E_T is non-increasing in T for fixed logits (−T·logsumexp(f/T) ≤ −max f, decreasing)
    values = [free_energy(logits, t).item() for t in (0.5, 1.0, 2.0, 4.0)]
    assert values == sorted(values, reverse=True)
    with pytest.raises(ValueError):
        free_energy(logits, 0.0)


def test_numerically_stable_with_large_logits():
    logits = torch.tensor([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]], dtype=torch.float32)
    e = free_energy(logits)
    assert torch.isfinite(e).all()
    assert e.tolist() == pytest.approx([-1e4, -(1e4 + math.log(3))], abs=1e-2)
    s = teacher_scores(logits, torch.tensor([2, 1]))
    assert all(torch.isfinite(v.float()).all() for v in s.values())
    assert s["target_prob"][0].item() == 0.0 and s["confidence"][0].item() == 1.0


def test_gradient_is_minus_softmax():
    logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    t = 2.0
    free_energy(logits, t).sum().backward()
    assert torch.allclose(logits.grad, -(logits.detach() / t).softmax(1))
    logits.grad = None
    labels = torch.tensor([0, 1, 2, 3])
    class_energy(logits, labels).sum().backward()
    expected = -torch.nn.functional.one_hot(labels, 5).double()
    assert torch.equal(logits.grad, expected)


def test_shape_errors():
    with pytest.raises(ValueError):
        free_energy(torch.zeros(3))
    with pytest.raises(ValueError):
        class_energy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
