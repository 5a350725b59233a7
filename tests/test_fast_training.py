"""The trainer's channels_last switch (NHWC student and batches) changes the memory layout, not the training: the same
weights and losses as NCHW up to float rounding, and a resumed channels_last run equals an uninterrupted one."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from dfkd.config import DistillConfig
from dfkd.distill.trainer import Trainer
from dfkd.methods.base import KDDistiller

NHWC = torch.channels_last


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g))


def _cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def _trainer(channels_last, checkpoint_dir=None, epochs=2):
    cfg = DistillConfig(
        epochs=epochs, batch_size=16, lr=0.05, temperature=4.0, ce_weight=0.5, channels_last=channels_last
    )
    return Trainer(
        _cnn(0),
        KDDistiller(_cnn(1).eval().requires_grad_(False), cfg),
        cfg,
        device=torch.device("cpu"),
        seed=1,
        checkpoint_dir=checkpoint_dir,
    )


def test_channels_last_trains_the_same_weights():
    nhwc, nchw = _trainer(True), _trainer(False)
    assert nhwc.student[0].weight.is_contiguous(memory_format=NHWC)
    assert not nchw.student[0].weight.is_contiguous(memory_format=NHWC)
    seen = []
    nhwc.student[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=NHWC)))
    nhwc.fit(_data(), resume=False)
    nchw.fit(_data(), resume=False)
    assert seen and all(seen)  # the batches reach the first convolution NHWC
    for a, b in zip(nhwc.history, nchw.history, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-4
    start = _cnn(0).state_dict()
    for name, value in nchw.student.state_dict().items():
        torch.testing.assert_close(nhwc.student.state_dict()[name], value, atol=1e-5, rtol=1e-4)
        if value.is_floating_point() and name.endswith("weight"):
            assert not torch.allclose(value, start[name])  # it trained: the tolerance is not trivially met


def test_channels_last_resume_equals_uninterrupted(tmp_path):
    full = _trainer(True, tmp_path / "full", epochs=3)
    full.fit(_data())
    part = _trainer(True, tmp_path / "part", epochs=3)
    part.cfg = DistillConfig(**{**part.cfg.__dict__, "epochs": 1})  # stop after one epoch ("crash")
    part.fit(_data())
    resumed = _trainer(True, tmp_path / "part", epochs=3)
    resumed.fit(_data())
    assert resumed.start_epoch == 3
    for a, b in zip(full.student.state_dict().values(), resumed.student.state_dict().values(), strict=True):
        assert torch.equal(a, b)
