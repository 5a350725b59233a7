"""The same contract for every registered built-in method (parametrised over the registry)."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch

from dfkd.benchmark.progress import Reporter
from dfkd.benchmark.runner import validate
from dfkd.config import resolve_run_config
from dfkd.methods import get_method_class, list_methods
from dfkd.methods.base import BuildContext, Method
from dfkd.registry import METHODS

# Overrides that make each method take seconds on digits. A new built-in method must add a line.
TINY_GEN = "generator={path: tiny, dtype: float32}"
FAST = {
    "diffdfkd": [TINY_GEN, "num_steps=3", "trajectories_per_class=2", "batch_size=2"],
    "diffusion_kd": [TINY_GEN, "num_steps=2", "images_per_class=2", "batch_size=2"],
    "prism": [
        TINY_GEN,
        "num_steps=2",
        "images_per_class=2",
        "batch_size=2",
        "keep_quantile=1.0",
        "prompts={prompts_per_class: 2, candidates_per_class: 4}",
    ],
    "deepinversion": ["iterations=2", "batch_size=8", "kd_steps=1"],
    "noise_kd": ["images_per_class=4", "batch_size=4"],
    "real_kd": [],
}
BUILTINS = [m for m in list_methods() if METHODS.source(m) == "dfkd"]


def test_every_builtin_has_fast_settings():
    assert sorted(FAST) == sorted(BUILTINS)


@pytest.mark.parametrize("name", BUILTINS)
def test_card_and_config(name):
    cls = get_method_class(name)
    assert issubclass(cls, Method)
    assert cls.card.title and cls.card.authors and cls.card.year > 1990
    assert dataclasses.is_dataclass(cls.Config)
    assert cls.Config.__dataclass_params__.frozen
    # the config is the single source of defaults: every field has a default and a one-line comment
    source = inspect.getsource(cls.Config)
    for f in dataclasses.fields(cls.Config):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
        line = next(ln for ln in source.splitlines() if ln.strip().startswith(f"{f.name}:"))
        assert "#" in line, f"{name}.Config.{f.name} needs a one-line comment"
    assert cls.__doc__ or inspect.getmodule(cls).__doc__, "cite the paper in a docstring"


@pytest.mark.parametrize("name", BUILTINS)
def test_validate_runs_one_unit_and_one_step(name):
    cfg = resolve_run_config(method=name, dataset="digits", sets=FAST[name])
    report = validate(cfg, Reporter(quiet=True))
    assert math.isfinite(report["loss"])
    if get_method_class(name).uses_store:
        assert report["unit_images"] > 0


@pytest.mark.parametrize("name", [m for m in BUILTINS if get_method_class(m).uses_store])
def test_generation_is_deterministic_per_unit_and_well_formed(name):
    from dfkd.datasets import get_dataset
    from dfkd.models import create_model

    cfg = resolve_run_config(method=name, dataset="digits", sets=FAST[name])
    spec = get_dataset("digits")
    torch.manual_seed(0)
    teacher = create_model("resnet8", 10).eval().requires_grad_(False)
    student = create_model("resnet8", 10)
    ctx = BuildContext(teacher, student, spec, torch.device("cpu"), 0, cfg.distill)
    method = get_method_class(name)(cfg.method_config)
    synth = method.build_synthesizer(ctx)
    units = synth.plan()
    assert len({u.id for u in units}) == len(units), "unit ids must be unique"
    a = synth.generate(units[0], student)
    torch.manual_seed(123)  # global RNG state must not matter
    b = method.build_synthesizer(ctx).generate(units[0], student)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape[1:] == (3, spec.input_size, spec.input_size)
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert a.labels.dtype == torch.long and a.labels.shape == (a.images.shape[0],)
    for k, v in a.extras.items():
        assert len(v) == a.images.shape[0], k
