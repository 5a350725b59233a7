"""Shared fixtures: every test gets its own cache folder, so nothing touches ~/.cache/dfkd."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.mktemp("dfkd-cache")
    monkeypatch.setenv("DFKD_CACHE", str(cache))
    monkeypatch.delenv("DFKD_DATA", raising=False)
    return cache


@pytest.fixture(scope="session")
def digits_teacher_file(tmp_path_factory):
    """A digits resnet20 teacher trained for 2 epochs once per session (a real, if weak, teacher)."""
    import os

    from dfkd.benchmark.teachers import train_teacher
    from dfkd.config import DistillConfig
    from dfkd.datasets import get_dataset

    root = tmp_path_factory.mktemp("teacher")
    path = root / "digits_resnet20.pth"
    recipe = DistillConfig(epochs=2, batch_size=64, lr=0.05, schedule="cosine", kd_weight=0.0, ce_weight=1.0)
    old = os.environ.get("DFKD_CACHE")
    os.environ["DFKD_CACHE"] = str(root)
    try:
        train_teacher(get_dataset("digits"), "resnet20", recipe, path, torch.device("cpu"))
    finally:
        if old is None:
            os.environ.pop("DFKD_CACHE", None)
        else:
            os.environ["DFKD_CACHE"] = old
    return path


@pytest.fixture
def digits_teacher(digits_teacher_file, _isolated_cache):
    """Put the session's digits teacher where `bench run` looks for it."""
    import shutil

    target = _isolated_cache / "teachers" / "digits_resnet20.pth"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(digits_teacher_file, target)
    return target
