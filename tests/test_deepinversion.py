"""DeepInversion: the CMI-pack profile of the published rows (−JS adversary, priors on the raw inputs, best iterate),
and the budget every method declares equals the images its plan really produces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dfkd.methods.deepinversion as di
from dfkd.benchmark.assembly import resolve_run_config
from dfkd.datasets import get_dataset
from dfkd.methods import get_method_class
from dfkd.methods.base import BuildContext
from dfkd.models import create_model
from dfkd.synthesis.losses import adversarial_js
from tests.test_method_contract import BUILTINS, FAST


def test_adversarial_js_is_the_cmi_pack_formula() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(5, 10), torch.randn(5, 10)
    p, q = F.softmax(s / 3, 1), F.softmax(t / 3, 1)
    m = ((p + q) / 2).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    by_hand = 0.5 * (m * (m.log() - p.log())).sum(1).mean() + 0.5 * (m * (m.log() - q.log())).sum(1).mean()
    assert adversarial_js(s, t, 3.0).item() == pytest.approx(-by_hand.item(), rel=1e-5)
    assert adversarial_js(t, t, 3.0).item() == pytest.approx(0.0, abs=1e-6)  # no disagreement, no reward
    assert adversarial_js(s, t, 3.0).item() < 0


def _synth(*sets: str):
    cfg = resolve_run_config(
        method="deepinversion", dataset="digits", sets=["iterations=1", "batch_size=6", "distill.epochs=1", *sets]
    )
    torch.manual_seed(0)
    teacher = create_model("resnet8", 10).eval().requires_grad_(False)
    student = create_model("resnet8", 10)
    ctx = BuildContext(teacher, student, get_dataset("digits"), torch.device("cpu"), 0, cfg.distill)
    synth = get_method_class("deepinversion")(cfg.method_config).build_synthesizer(ctx)
    return synth, student


@pytest.mark.parametrize("form, called", [("js", "adversarial_js"), ("dad", "adversarial_disagreement")])
def test_the_adversarial_form_is_the_one_configured(monkeypatch, form: str, called: str) -> None:
    calls: list[str] = []
    for name in ("adversarial_js", "adversarial_disagreement"):
        real = getattr(di, name)
        monkeypatch.setattr(di, name, lambda *a, _n=name, _f=real, **k: (calls.append(_n), _f(*a, **k))[1])
    synth, student = _synth("adv_weight=1.0", f"adv_loss={form}", "iterations=3")
    synth.generate(synth.plan()[0], student)
    assert calls == [called] * 3


def test_keep_best_returns_the_scored_iterate_and_final_the_updated_one() -> None:
    synth, student = _synth("keep=best", "lr=0.5")
    unit = synth.plan()[0]
    best = synth.generate(unit, student).images
    synth_final, _ = _synth("keep=final", "lr=0.5")
    final = synth_final.generate(unit, student).images
    g = torch.Generator().manual_seed(unit.seed)  # the initial pixels, drawn as generate draws them
    torch.randperm(unit.size, generator=g)
    x0 = torch.randn(unit.size, 3, 32, 32, generator=g)
    start = get_dataset("digits").denormalize(x0).clamp(0, 1)
    assert torch.allclose(best, start, atol=1e-6)  # one iteration: the only scored iterate is the start
    assert not torch.allclose(final, start, atol=1e-3)


@pytest.mark.parametrize("name", [m for m in BUILTINS if get_method_class(m).stores_images()])
def test_declared_budget_is_what_the_plan_produces(name: str) -> None:
    cfg = resolve_run_config(method=name, dataset="digits", sets=[*FAST[name], "distill.epochs=2"])
    spec = get_dataset("digits")
    torch.manual_seed(0)
    teacher = create_model("resnet8", 10).eval().requires_grad_(False)
    student = create_model("resnet8", 10)
    ctx = BuildContext(teacher, student, spec, torch.device("cpu"), 0, cfg.distill)
    cls = get_method_class(name)
    synth = cls(cfg.method_config).build_synthesizer(ctx)
    produced = sum(synth.generate(u, student).images.shape[0] for u in synth.plan())
    assert cls.budget(cfg.method_config, spec.num_classes, cfg.distill).images == produced
