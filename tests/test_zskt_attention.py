"""ZSKT's attention-transfer switch (``at_weight``): the attention map and term by hand, a zero term for identical
networks, a term that reaches the student and never the teacher, mismatched stages refused, and one smoke step."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from dfkd.benchmark.assembly import resolve_run_config
from dfkd.datasets import get_dataset
from dfkd.distill.losses import ATDistiller, KDDistiller, StageOutputs, attention_map, attention_transfer
from dfkd.errors import ConfigError
from dfkd.methods import get_method_class
from dfkd.methods.base import BuildContext
from dfkd.models import create_model, stage_modules

DISTILL = resolve_run_config(method="zskt", dataset="digits", sets=[]).distill


def _teacher(name: str = "resnet8") -> nn.Module:
    torch.manual_seed(0)
    teacher = create_model(name, 10)
    with torch.no_grad():
        teacher(torch.rand(8, 3, 32, 32))  # non-trivial BN running statistics
    return teacher.eval().requires_grad_(False)


# -- the map and the term against hand-computed values ------------------------------------------------------------
def test_attention_map_by_hand():
    x = torch.tensor([[[[3**0.5, 0.0], [0.0, 2.0]]]])  # (1, 1, 2, 2): x² = 3, 0, 0, 4, L2 norm 5
    assert torch.allclose(attention_map(x), torch.tensor([[0.6, 0.0, 0.0, 0.8]]))
    two = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])  # (1, 2, 2, 2): mean_c x² = 2, 0, 0, 0
    assert torch.allclose(attention_map(two), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_attention_transfer_by_hand():
    # stage 1 (2×2): a_S = (½, ½, ½, ½), a_T = (1, 0, 0, 0) → (¼ + ¼ + ¼ + ¼)/4 = ¼
    s1, t1 = torch.ones(1, 1, 2, 2), torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # stage 2 (1×2): a_S = (1, 0), a_T = (0, 1) → (1 + 1)/2 = 1
    s2, t2 = torch.tensor([[[[1.0, 0.0]]]]), torch.tensor([[[[0.0, 1.0]]]])
    assert attention_transfer([s1, s2], [t1, t2]).item() == pytest.approx(1.25)
    assert attention_transfer([s1, s2], [s1, s2]).item() == 0.0
    # channels may differ: only the channel-mean map is compared
    assert attention_transfer([s1.repeat(1, 3, 1, 1)], [s1]).item() == 0.0


def test_stage_modules_in_forward_order_and_refused_without_stages():
    wrn = create_model("wrn16_1", 10)
    assert stage_modules(wrn) == [wrn.block1, wrn.block2, wrn.block3]
    r8 = create_model("resnet8", 10)
    assert stage_modules(r8) == [r8.layer1, r8.layer2, r8.layer3]
    with pytest.raises(ConfigError, match="at_weight=0"):
        stage_modules(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


# -- the term in the distiller ---------------------------------------------------------------------------------------
def test_the_term_is_zero_for_the_same_network_and_positive_otherwise():
    teacher = _teacher()
    x = torch.randn(4, 3, 32, 32)
    same = copy.deepcopy(teacher).requires_grad_(True).eval()  # same weights, running statistics in both
    _loss, logs = ATDistiller(teacher, same, DISTILL, 250.0).loss(same, x, torch.zeros(4, dtype=torch.long))
    assert logs["at"].item() == 0.0 and logs["kd"].item() == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(1)
    other = create_model("resnet8", 10)
    _loss, logs = ATDistiller(teacher, other, DISTILL, 250.0).loss(other, x, torch.zeros(4, dtype=torch.long))
    assert logs["at"].item() > 0


def _grads(distiller, student, x, y):
    student.zero_grad(set_to_none=True)
    loss, logs = distiller.loss(student, x, y)
    loss.backward()
    return loss, logs, {k: p.grad.clone() for k, p in student.named_parameters()}


def test_the_term_reaches_the_student_and_never_touches_the_teacher():
    teacher = _teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}  # parameters and BN buffers
    torch.manual_seed(1)
    student = create_model("resnet8", 10).train()
    x, y = torch.randn(8, 3, 32, 32), torch.zeros(8, dtype=torch.long)
    _l0, logs0, g0 = _grads(KDDistiller(teacher, DISTILL), student, x, y)
    at = ATDistiller(teacher, student, DISTILL, 250.0)
    loss, logs, g1 = _grads(at, student, x, y)
    assert loss.item() == pytest.approx(logs["kd"].item() + 250.0 * logs["at"].item(), rel=1e-6)
    assert logs["kd"].item() == pytest.approx(logs0["kd"].item(), rel=1e-6)  # the KD part is KDDistiller's
    assert any(not torch.allclose(g0[k], g1[k]) for k in g0), "the AT term did not reach the student"
    # through a wrapper (DataParallel on CPU calls the module; DDP likewise): the hooks fire on the module itself
    _loss, logs_w, _g = _grads(at, nn.DataParallel(student), x, y)
    assert logs_w["at"].item() == pytest.approx(logs["at"].item(), rel=1e-6)
    # kd_weight 0: the teacher is still run (no_grad) for its stages
    kd_off = resolve_run_config(method="zskt", dataset="digits", sets=["distill.kd_weight=0", "distill.ce_weight=1"])
    _loss, logs_ce, _g = _grads(ATDistiller(teacher, student, kd_off.distill, 250.0), student, x, y)
    assert "kd" not in logs_ce and logs_ce["at"].item() == pytest.approx(logs["at"].item(), rel=1e-6)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in teacher.parameters())


def test_mismatched_stages_are_refused():
    teacher = _teacher()  # resnet8: 3 stages, 32×32, 16×16, 8×8
    with pytest.raises(ConfigError, match=r"CifarResNet has 3 and the student ResNet 4.*at_weight=0"):
        ATDistiller(teacher, create_model("resnet18", 10), DISTILL, 250.0)  # 4 stages
    # same count, other sizes: a resnet8 with an ImageNet-style stride-2 stem (16, 8, 4) under a resnet8 (32, 16, 8)
    student = create_model("resnet8", 10)
    student.conv1.stride = (2, 2)
    distiller = ATDistiller(teacher, student, DISTILL, 250.0)
    with pytest.raises(
        ConfigError, match=r"32×32, 16×16, 8×8 and the student CifarResNet 16×16, 8×8, 4×4: set at_weight=0"
    ):
        distiller.loss(student, torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
    # another family whose stages line up is accepted (the original would assert the same family)
    wrn = create_model("wrn16_1", 10)
    _loss, logs = ATDistiller(teacher, wrn, DISTILL, 250.0).loss(wrn, torch.randn(2, 3, 32, 32), torch.zeros(2).long())
    assert logs["at"].item() > 0


def test_at_weight_is_validated_and_zero_keeps_plain_kd():
    cls = get_method_class("zskt")
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ConfigError, match=r"zskt\.at_weight"):
            cls(at_weight=bad)
    assert cls().config.at_weight == 0.0


# -- end to end: one generator update and one student step ---------------------------------------------------------
@pytest.mark.parametrize("at_weight, kind", [("0", KDDistiller), ("250", ATDistiller)])
def test_smoke_one_generator_update_and_one_student_step(at_weight, kind):
    cls = get_method_class("zskt")
    cfg = resolve_run_config(method="zskt", dataset="digits", sets=[*cls.smoke_overrides(), f"at_weight={at_weight}"])
    teacher = _teacher()
    student = create_model("resnet8", 10)
    ctx = BuildContext(teacher, student, get_dataset("digits"), torch.device("cpu"), 0, cfg.distill)
    method = cls(cfg.method_config)
    synth, distiller = method.build_synthesizer(ctx), method.build_distiller(ctx)
    assert type(distiller) is kind
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student.train()
    synth.update(student, step=0)
    x, y = synth.sample(8, step=0)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    loss, logs = distiller.loss(student, x, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item())
    assert ("at" in logs) == (kind is ATDistiller)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_stage_outputs_records_in_stage_order():
    model = create_model("wrn16_1", 10).eval()
    with StageOutputs(model) as rec:
        model(torch.randn(1, 3, 32, 32))
    assert [tuple(f.shape) for f in rec.outputs] == [(1, 16, 32, 32), (1, 32, 16, 16), (1, 64, 8, 8)]
    assert not model.block1._forward_hooks  # removed on exit
