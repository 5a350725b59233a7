"""Fast / NAYER's BN-statistics loss with momentum against hand-computed values (spec §1.2, §9)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dfkd.synthesis.losses import BNMomentum, BNStatistics


def _bn(mean: list[float], var: list[float]) -> nn.Module:
    bn = nn.BatchNorm2d(len(mean)).eval()
    bn.running_mean.copy_(torch.tensor(mean))
    bn.running_var.copy_(torch.tensor(var))
    return bn


def test_first_round_is_the_plain_loss_then_the_blend_and_the_ema_update():
    bn = _bn([0.0], [1.0])
    ema = BNMomentum(momentum=0.9)
    x1 = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)  # batch mean 2, biased var 1
    with BNStatistics(bn, ema=ema) as stats:
        bn(x1)
        assert stats.loss().item() == pytest.approx(abs(1 - 1) + abs(0 - 2))  # plain: ‖rv − var‖ + ‖rm − mean‖
    ema.update()  # the first round seeds the EMA: μ̄ = 2, σ̄² = 1
    assert ema.stats[""][0].item() == pytest.approx(2.0) and ema.stats[""][1].item() == pytest.approx(1.0)
    x2 = torch.tensor([0.0, 0.0]).view(2, 1, 1, 1)  # batch mean 0, var 0
    with BNStatistics(bn, ema=ema) as stats:
        bn(x2)
        blended_mean, blended_var = 0.1 * 0 + 0.9 * 2.0, 0.1 * 0 + 0.9 * 1.0
        assert stats.loss().item() == pytest.approx(abs(1 - blended_var) + abs(0 - blended_mean))
    ema.update()  # μ̄ ← 0.9·2 + 0.1·0 = 1.8; σ̄² ← 0.9·1 + 0.1·0 = 0.9
    assert ema.stats[""][0].item() == pytest.approx(1.8) and ema.stats[""][1].item() == pytest.approx(0.9)
    again = BNMomentum(0.5)
    again.load_state_dict(ema.state_dict())  # the EMA is synthesizer state: it round-trips
    assert again.momentum == 0.9 and torch.equal(again.stats[""][0], ema.stats[""][0])


def test_only_the_last_forward_of_a_round_enters_the_ema():
    bn = _bn([0.0], [1.0])
    ema = BNMomentum(momentum=0.5)
    with BNStatistics(bn, ema=ema):
        bn(torch.tensor([4.0, 4.0]).view(2, 1, 1, 1))
        bn(torch.tensor([1.0, 1.0]).view(2, 1, 1, 1))  # the last forward: mean 1
    ema.update()
    assert ema.stats[""][0].item() == pytest.approx(1.0)
