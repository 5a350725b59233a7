"""KD trainer: loss golden values, schedules, resume equals an uninterrupted run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dfkd.config import DistillConfig
from dfkd.distill.trainer import Trainer, evaluate, lr_factor
from dfkd.methods.base import KDDistiller, kd_kl


def _toy(seed=0, n=96, k=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return TensorDataset(x, y)


def _model(seed=0, k=4):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, k),
    )


def test_kd_kl_matches_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.5, 1.0, 3.0]])
    T = 2.0
    p_t = torch.softmax(t / T, 1)
    log_p_s = torch.log_softmax(s / T, 1)
    expected = (p_t * (torch.log(p_t) - log_p_s)).sum() * T * T
    assert torch.allclose(kd_kl(s, t, T), expected, atol=1e-6)
    assert kd_kl(t, t, T).abs() < 1e-6


def test_lr_schedules():
    cos = DistillConfig(epochs=10, lr=0.1, schedule="cosine", min_lr=0.0)
    assert lr_factor(cos, 0) == pytest.approx(1.0)
    assert lr_factor(cos, 5) == pytest.approx(0.5)
    step = DistillConfig(epochs=240, schedule="step", milestones=(150, 180, 210), gamma=0.1)
    assert [lr_factor(step, e) for e in (0, 149, 150, 180, 239)] == pytest.approx([1, 1, 0.1, 0.01, 0.001])
    warm = DistillConfig(epochs=10, schedule="cosine", warmup_epochs=5, lr=0.1, min_lr=2e-4)
    assert lr_factor(warm, 0) == pytest.approx(0.1)
    assert lr_factor(warm, 5) == pytest.approx(1.0)
    assert lr_factor(warm, 10) == pytest.approx(2e-3)
    assert math.isclose(lr_factor(DistillConfig(schedule="constant"), 7), 1.0)


def _trainer(tmp_path, epochs, name="ck"):
    cfg = DistillConfig(epochs=epochs, batch_size=16, lr=0.05, temperature=4.0, ce_weight=0.5)
    teacher = _model(seed=1).eval()
    test = DataLoader(_toy(seed=5, n=32), batch_size=16)
    return Trainer(
        _model(seed=0),
        KDDistiller(teacher, cfg),
        cfg,
        device=torch.device("cpu"),
        seed=3,
        test_loader=test,
        checkpoint_dir=tmp_path / name,
    )


def test_resume_equals_uninterrupted(tmp_path):
    data = _toy()
    full = _trainer(tmp_path, 4, "full")
    full_result = full.fit(data)

    # simulate a crash after 2 epochs: train 2 epochs, then start a NEW trainer from the checkpoint
    two = _trainer(tmp_path, 4, "part")
    for epoch in range(2):
        two.train_epoch(data, epoch)
        two.scheduler.step()
        two.history.append({"epoch": epoch + 1})
        two.start_epoch = epoch + 1
        two._save("last.pt")
    resumed = _trainer(tmp_path, 4, "part")
    assert resumed.try_resume() and resumed.start_epoch == 2
    resumed_result = resumed.fit(data)
    for a, b in zip(full.student.state_dict().values(), resumed.student.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed_result.top1 == full_result.top1


def test_last_epoch_is_headline_and_best_is_reported(tmp_path):
    tr = _trainer(tmp_path, 3)
    tr.history = [
        {"epoch": 1, "top1": 50.0, "top5": 90.0},
        {"epoch": 2, "top1": 70.0, "top5": 95.0},
        {"epoch": 3, "top1": 60.0, "top5": 93.0},
    ]
    r = tr.result()
    assert (r.top1, r.best_top1, r.best_epoch, r.top5) == (60.0, 70.0, 2, 93.0)


def test_checkpoint_every_epoch(tmp_path):
    tr = _trainer(tmp_path, 2)
    tr.fit(_toy())
    state = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert (tmp_path / "ck" / "best.pt").is_file()


def test_evaluate_top1_top5_agreement():
    model = nn.Linear(2, 6)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [0.5, 0.5], [0, 0], [0, 0], [0, 0]]))
        model.bias.copy_(torch.tensor([0.0, 0, 0, 0, 0, -10.0]))  # class 5 always ranks last

    class M(nn.Module):
        def forward(self, x):
            return model(x)

    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.9]])
    y = torch.tensor([0, 0, 5])
    ev = evaluate(
        M(), DataLoader(TensorDataset(x, y), batch_size=2), torch.device("cpu"), reference=torch.tensor([0, 1, 1])
    )
    assert ev["top1"] == pytest.approx(100 / 3)
    assert ev["top5"] == pytest.approx(200 / 3)
    assert ev["agreement"] == pytest.approx(200 / 3)  # preds (0, 1, 0) vs (0, 1, 1)


def test_amp_on_cpu_is_off_unless_bf16_is_asked_for():
    from dfkd.config import DistillConfig
    from dfkd.distill.trainer import amp_dtype

    cpu = torch.device("cpu")
    assert amp_dtype(DistillConfig(amp="auto"), cpu) is None
    assert amp_dtype(DistillConfig(amp="off"), cpu) is None
    assert amp_dtype(DistillConfig(amp="fp16"), cpu) is None
    assert amp_dtype(DistillConfig(amp="bf16"), cpu) is torch.bfloat16
