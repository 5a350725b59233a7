"""The same contract for every registered built-in method (parametrised over the registry)."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch

from dfkd.benchmark.assembly import resolve_run_config
from dfkd.benchmark.progress import Reporter
from dfkd.benchmark.runner import validate
from dfkd.methods import get_method_class, list_methods
from dfkd.methods.base import BuildContext, Method
from dfkd.registry import METHODS

# Each method's own seconds-long settings (``Method.smoke_overrides``): plug-ins get the same checks.
FAST = {name: list(get_method_class(name).smoke_overrides()) for name in list_methods()}
BUILTINS = [m for m in list_methods() if METHODS.source(m) == "dfkd"]


@pytest.mark.parametrize("name", [m for m in BUILTINS if get_method_class(m).shape != "real_data"])
def test_every_builtin_has_smoke_settings(name):
    assert FAST[name], f"{name} needs smoke settings (Method.smoke) that take seconds on digits"


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
    if get_method_class(name).stores_images():
        assert report["unit_images"] > 0


@pytest.mark.parametrize("name", [m for m in BUILTINS if get_method_class(m).stores_images()])
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
