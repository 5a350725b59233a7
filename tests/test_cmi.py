"""CMI (``dfkd.methods.cmi``, ``dfkd.synthesis.cmi_parts``): the contrastive loss by hand, the memory bank's ring,
the views, the feature layers, one round (its loss goes down, the teacher is untouched, the state carries over) and
a killed pool run resumed to the uninterrupted student's weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dfkd.benchmark.assembly import resolve_run_config
from dfkd.datasets import get_dataset
from dfkd.errors import ConfigError
from dfkd.methods import get_method_class
from dfkd.methods.base import BuildContext
from dfkd.models import create_model
from dfkd.synthesis.cmi_parts import (
    InstanceMeans,
    MemoryBank,
    contrastive_loss,
    feature_dim,
    feature_modules,
    global_view,
    local_view,
    reset_model,
)
from dfkd.synthesis.generators import ConvGenerator

SMOKE = list(get_method_class("cmi").smoke_overrides())


# -- the contrastive loss, by hand ------------------------------------------------------------------------------
def test_contrastive_loss_of_three_instances_by_hand():
    # unit vectors: l_i local projections, g_j global ones; logits = ⟨l_i, g_j⟩ / 0.5
    local = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], requires_grad=True)
    glob = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], requires_grad=True)
    # ⟨l, g⟩ rows: (1, .6, 0), (0, .8, 1), (.6, 1, .8) → logits ×2; ce_i = −logit_ii + log Σ_j exp logit_ij
    ce0 = -2.0 + math.log(math.exp(2.0) + math.exp(1.2) + math.exp(0.0))
    ce1 = -1.6 + math.log(math.exp(0.0) + math.exp(1.6) + math.exp(2.0))
    ce2 = -1.6 + math.log(math.exp(1.2) + math.exp(2.0) + math.exp(1.6))
    # three current instances, empty bank: the mean over all
    assert contrastive_loss(local, glob, 3, 0.5).item() == pytest.approx((ce0 + ce1 + ce2) / 3, rel=1e-6)
    # two current instances and one cached: the current mean plus the cached mean
    loss = contrastive_loss(local, glob, 2, 0.5)
    assert loss.item() == pytest.approx((ce0 + ce1) / 2 + ce2, rel=1e-6)
    loss.backward()
    assert glob.grad is None  # the global projections are targets (detached): gradient only via the local view
    assert local.grad is not None and local.grad.abs().sum() > 0


# -- the memory bank -------------------------------------------------------------------------------------------
def _rows(start: int, stop: int) -> torch.Tensor:
    return torch.tensor([[float(i), -float(i)] for i in range(start, stop)])  # (n, 2), row i = (i, −i)


def _ids(rows: torch.Tensor) -> list[int]:
    return sorted(int(v) for v in rows[:, 0])


def test_the_memory_bank_is_a_bounded_ring_sampled_from_what_it_holds():
    bank, g = MemoryBank(capacity=5, dim=2), torch.Generator().manual_seed(0)
    assert bank.sample(4, g).shape == (0, 2)  # round 0: no negatives
    bank.add(_rows(0, 3))
    assert len(bank) == 3 and _ids(bank.sample(10, g)) == [0, 1, 2]  # only the filled prefix, each once
    two = bank.sample(2, g)
    assert two.shape == (2, 2) and len(set(_ids(two))) == 2 and set(_ids(two)) <= {0, 1, 2}
    bank.add(_rows(3, 7))  # 3, 4 fill the ring; 5, 6 overwrite the oldest (0, 1)
    assert len(bank) == 5 and bank.data[:, 0].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert (bank.ptr, bank.count) == (2, 7)
    assert _ids(bank.sample(10, g)) == [2, 3, 4, 5, 6]  # after wrapping: the whole ring
    one_by_one = MemoryBank(capacity=5, dim=2)
    for i in range(19):
        one_by_one.add(_rows(i, i + 1))
    at_once = MemoryBank(capacity=5, dim=2)
    at_once.add(_rows(0, 19))  # more rows than the ring holds, in one write
    assert torch.equal(at_once.data, one_by_one.data) and (at_once.ptr, at_once.count) == (one_by_one.ptr, 19)
    assert len(at_once) == 5  # bounded
    # seeded sampling; the state restores it exactly and does not alias the live rows
    state = bank.state_dict()
    restored = MemoryBank(capacity=5, dim=2)
    restored.load_state_dict(state)
    a, b = bank.sample(3, torch.Generator().manual_seed(7)), restored.sample(3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    bank.add(_rows(100, 101))
    assert state["rows"][:, 0].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0] and restored.ptr == 2
    with pytest.raises(ValueError, match="bank_rows"):
        MemoryBank(capacity=6, dim=2).load_state_dict(state)


# -- views, init, features -------------------------------------------------------------------------------------
def test_the_global_view_is_a_padded_crop_maybe_flipped_and_seeded():
    x = torch.rand(6, 3, 8, 8)
    out = global_view(x, 2, torch.Generator().manual_seed(1))
    assert torch.equal(out, global_view(x, 2, torch.Generator().manual_seed(1)))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        crops = [padded[i, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], cr) or torch.equal(out[i], cr.flip(2)) for cr in crops)


def test_the_local_view_resizes_a_box_and_passes_gradient():
    x = torch.rand(16, 3, 8, 8, requires_grad=True)
    whole = local_view(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))  # box = the image
    same = [torch.allclose(whole[i], x[i], atol=1e-5) for i in range(16)]
    flipped = [torch.allclose(whole[i], x[i].flip(2), atol=1e-5) for i in range(16)]
    assert all(s or f for s, f in zip(same, flipped, strict=True)) and any(same) and any(flipped)
    out = local_view(x, torch.Generator().manual_seed(0))  # scale 0.25–1: a zoomed box
    assert out.shape == x.shape and torch.equal(out, local_view(x, torch.Generator().manual_seed(0)))
    out.sum().backward()
    assert x.grad.abs().sum() > 0


def test_reset_model_is_cmis_init_from_a_seed():
    a = reset_model(ConvGenerator("small", 16, 32, 16), torch.Generator().manual_seed(3))
    b = reset_model(ConvGenerator("small", 16, 32, 16), torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert abs(a.project.weight.std().item() - 0.02) < 0.002 and a.project.bias.abs().sum() == 0
    bn = a.body[0]
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and bn.bias.abs().sum() == 0


@pytest.mark.parametrize(
    "arch, layers, dim",
    [("wrn40_2", "bn_inputs", 2704), ("vgg11", "bn_inputs", 2752), ("resnet34", "stage_inputs", 512)],
)
def test_feature_widths_are_the_published_ones(arch, layers, dim):
    teacher = create_model(arch, 10).eval()
    assert feature_dim(teacher, feature_modules(teacher, layers), 32, torch.device("cpu")) == dim  # spec §6.1


def test_instance_features_are_the_inputs_spatial_means():
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    model = nn.Sequential(conv, bn).eval()
    x = torch.rand(2, 3, 6, 6)
    with InstanceMeans(feature_modules(model, "bn_inputs")) as means:
        model(x)
        assert torch.allclose(means.take(), conv(x).mean(dim=(2, 3)))  # the BN's input, not its output
    with pytest.raises(ConfigError, match="feature_layers=bn_inputs"):
        feature_modules(model, "stage_inputs")


# -- one round --------------------------------------------------------------------------------------------------
def _synth(*sets: str, teacher: nn.Module | None = None):
    cfg = resolve_run_config(method="cmi", dataset="digits", sets=[*SMOKE, *sets])
    if teacher is None:
        torch.manual_seed(0)
        teacher = create_model("resnet8", 10)
        teacher.train()
        with torch.no_grad():
            teacher(torch.rand(16, 3, 32, 32))  # non-trivial BN running statistics
        teacher = teacher.eval().requires_grad_(False)
    torch.manual_seed(1)
    student = create_model("resnet8", 10)
    ctx = BuildContext(teacher, student, get_dataset("digits"), torch.device("cpu"), 0, cfg.distill)
    method = get_method_class("cmi")(cfg.method_config)
    return method.build_synthesizer(ctx), teacher, student


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_a_round_lowers_its_loss_and_leaves_teacher_and_student_alone():
    synth, teacher, student = _synth("g_steps=12", "adv_weight=0.5")
    t_before, s_before = _snapshot(teacher), _snapshot(student)
    student.train()
    rng = torch.get_rng_state()
    out = synth.generate(synth.plan()[0], student)
    assert torch.equal(rng, torch.get_rng_state())  # every draw from the unit's seed, none from the global RNG
    assert out.logs["loss_best"] < out.logs["loss_first"]  # the kept iterate is better than the initial one
    assert out.generator_steps == 12 and out.images.shape == (8, 3, 32, 32) and out.labels.shape == (8,)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t_before.items())  # parameters and BN buffers
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in s_before.items())
    assert all(p.grad is None for p in student.parameters()) and student.training
    assert len(synth.bank) == 8 and synth.rounds == 1  # the kept instances' [f_l | f_g] went to the bank
    assert out.labels.tolist() == sorted(out.labels.tolist())  # y ~ U{0..K−1}, sorted, as released


def test_the_state_carries_the_head_and_bank_into_the_next_round():
    a, teacher, student = _synth()
    units = a.plan()
    a.generate(units[0], student)
    state = a.state_dict()
    assert set(state) == {"head", "head_optimizer", "bank", "rounds"}
    b, _, _ = _synth(teacher=teacher)  # a fresh process resuming after unit 0
    b.load_state_dict(state)
    out_a, out_b = a.generate(units[1], student), b.generate(units[1], student)
    assert torch.equal(out_a.images, out_b.images) and torch.equal(a.bank.data, b.bank.data)
    fresh, _, _ = _synth(teacher=teacher)  # without the state, the second round differs (bank and head differ)
    assert not torch.equal(fresh.generate(units[1], student).images, out_a.images)


def test_config_errors_name_the_field():
    cls = get_method_class("cmi")
    for bad, field in [
        ({"feature_layers": "bn"}, "cmi.feature_layers"),
        ({"synthesis_batch_size": 1}, "cmi.synthesis_batch_size"),
        ({"cr_temperature": 0.0}, "cmi.cr_temperature"),
        ({"local_scale": (0.5, 0.2)}, "cmi.local_scale"),
        ({"bank_rows": 0}, "cmi.bank_rows"),
    ]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            cls(**bad)


def test_matched_budget_is_deepinversions_shape():
    cfg = resolve_run_config(method="cmi", dataset="digits")  # 50 per class, 20 epochs, batch 64
    assert (cfg.method_config.synthesis_batch_size, cfg.method_config.kd_steps) == (25, 8)
    budget = get_method_class("cmi").budget(cfg.method_config, 10, cfg.distill)
    assert (budget.images, budget.kd_steps) == (500, 160)


# -- a killed pool run resumes to the uninterrupted student ------------------------------------------------------
@pytest.fixture
def random_digits_teacher(_isolated_cache):
    """A random resnet8 digits teacher with non-trivial BN statistics where `bench run` looks for it (no training)."""
    torch.manual_seed(0)
    model = create_model("resnet8", 10)
    model.train()
    with torch.no_grad():
        model(torch.rand(32, 3, 32, 32))
    target = _isolated_cache / "teachers" / "digits_resnet8.pth"
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), target)
    return target


def test_a_cmi_run_killed_in_epoch_2_resumes_to_the_uninterrupted_students_weights(
    tmp_path, random_digits_teacher, monkeypatch
):
    """Killed once during the student's steps and once while the epoch's unit is generated, each run again in a fresh
    store: the same final student, bit for bit, as a run never interrupted (the state restored from the store)."""
    import shutil

    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.runner import run
    from dfkd.distill.trainer import Trainer
    from dfkd.methods import cmi
    from dfkd.paths import stores_dir

    sets = [*SMOKE, "kd_steps=2", "teacher=resnet8", "distill.epochs=3", "distill.eval_every=3"]

    def final_student(folder: str) -> dict:
        cfg = resolve_run_config(
            method="cmi", dataset="digits", sets=[*sets, "diagnose.enabled=false"], flags={"output_dir": folder}
        )
        record = run(cfg, reporter=Reporter(quiet=True))
        (last,) = (tmp_path / folder).rglob("last.pt")
        return {"record": record, "student": torch.load(last, weights_only=True)["student"]}

    monkeypatch.chdir(tmp_path)
    uninterrupted = final_student("a")
    for folder, target in [("b", (Trainer, "train_epoch")), ("c", (cmi.CMISynthesizer, "generate"))]:
        shutil.rmtree(stores_dir())  # this run generates its own pool
        original = getattr(*target)
        calls = {"n": 0}

        def killed_in_epoch_2(self, *args, _original=original, _calls=calls, **kwargs):
            _calls["n"] += 1
            if _calls["n"] == 2:
                raise KeyboardInterrupt
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(*target, killed_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            final_student(folder)
        monkeypatch.setattr(*target, original)
        resumed = final_student(folder)
        a, b = uninterrupted["student"], resumed["student"]
        assert all(torch.equal(a[k], b[k]) for k in a), folder
        assert resumed["record"].student_top1 == uninterrupted["record"].student_top1
