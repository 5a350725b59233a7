"""Fast (fast2 / fast5 / fast10, shape ``pool``): the published variants, the budget and plan (warm-up rounds in unit
0), the BN loss's EMA, the meta update (FOMAML / REPTILE) that moves only the persistent generator, the warm-up of
the adversarial term, ``reset_l0`` at the published round, and a killed run that resumes to the same student."""

from __future__ import annotations

import io

import pytest
import torch

from dfkd.benchmark.assembly import resolve_run_config
from dfkd.config import DistillConfig
from dfkd.datasets import get_dataset
from dfkd.errors import ConfigError
from dfkd.methods import fast, get_method_class
from dfkd.methods.base import POOL, BuildContext
from dfkd.models import create_model
from dfkd.synthesis.generators import ConvGenerator
from dfkd.synthesis.losses import BNMomentum

VARIANTS = {"fast2": (2, 5e-3, 0.015), "fast5": (5, 3e-3, 0.01), "fast10": (10, 2e-3, 0.01)}  # fast_cifar.sh:4/6/8


def _teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    teacher = create_model("resnet8", 10)
    teacher.train()
    with torch.no_grad():
        teacher(torch.rand(16, 3, 32, 32))  # non-trivial BN running statistics
    return teacher.eval().requires_grad_(False)


def _synth(name: str = "fast2", *sets: str, epochs: int = 4):
    """A small synthesizer on digits (resnet8 teacher and student), the method's smoke settings plus ``sets``."""
    cls = get_method_class(name)
    cfg = resolve_run_config(method=name, dataset="digits", sets=[*cls.smoke, f"distill.epochs={epochs}", *sets])
    teacher, student = _teacher(), create_model("resnet8", 10)
    ctx = BuildContext(teacher, student, get_dataset("digits"), torch.device("cpu"), 0, cfg.distill)
    return cls(cfg.method_config).build_synthesizer(ctx), teacher, student


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


# -- the published variants, the budget and the plan ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_variants_have_the_published_inner_loops_and_share_the_rest(name):
    cls = get_method_class(name)
    c = cls.Config()
    assert (c.g_steps, c.lr_g, c.lr_z) == VARIANTS[name]
    assert (c.bn_weight, c.oh_weight, c.adv_weight, c.bn_momentum) == (10.0, 0.5, 1.33, 0.9)  # R34 → R18 lines
    assert (c.warmup, c.meta, c.reset_l0, c.reset_l0_at, c.batch_size, c.kd_steps) == (
        20,
        "fomaml",
        True,
        120,
        256,
        400,
    )
    assert cls.shape == POOL and cls.card.title.endswith(f"(Fast-{VARIANTS[name][0]})")
    synth, _, _ = _synth(name)
    assert not synth.units_independent
    assert synth.meta_optimizer.param_groups[0]["lr"] == pytest.approx(c.lr_g * c.g_steps)  # meta lr = lr_g × g_steps


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"fast2\.meta must be one of fomaml, reptile"):
        get_method_class("fast2")(meta="maml")
    with pytest.raises(ConfigError, match=r"fast5\.warmup must be an integer ≥ 0"):
        get_method_class("fast5")(warmup=-1)
    with pytest.raises(ConfigError, match=r"fast10\.bn_momentum"):
        get_method_class("fast10")(bn_momentum=1.0)
    with pytest.raises(ConfigError, match=r"fast2\.images 10 over 6 rounds .* raise fast2\.images"):
        _synth("fast2", "images=10", "warmup=2")


def test_matched_budget_is_exact_and_unit_0_holds_the_warm_up_rounds():
    cls = get_method_class("fast2")
    run = resolve_run_config(method="fast2", dataset="digits", sets=["warmup=2"])  # matched: 500 images, 20 epochs
    c = run.method_config
    assert (c.images, c.kd_steps) == (500, 8)  # 8 = ⌈500 / 64⌉ student steps per KD epoch, as DeepInversion's
    assert cls.budget(c, 10, run.distill).images == 500 and cls.budget(c, 10, run.distill).kd_steps == 160
    assert fast.round_sizes(500, 256, 22) == [23] * 16 + [22] * 6  # 22 rounds = 20 epochs + 2 warm-up
    synth, _, _ = _synth("fast2", "warmup=2", "images=500", epochs=20)
    units = synth.plan()
    assert len(units) == 20 and sum(u.size for u in units) == 500
    assert units[0].size == 3 * 23 and units[0].info["rounds"] == 3  # warm-up rounds 0, 1 + the round of epoch 0
    assert [list(synth.rounds_of(e)) for e in (0, 1, 19)] == [[0, 1, 2], [3], [21]]
    published = cls.Config()  # no images: batch_size per round, over warmup + epochs rounds (220 × 256 = 56 320)
    assert cls.budget(published, 100, DistillConfig(epochs=200)).images == 56_320


def test_crop_flip_is_a_per_image_padded_crop_and_flip():
    x = torch.rand(6, 3, 8, 8, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(fast.crop_flip(x, g, padding=0, flip=False), x)
    out = fast.crop_flip(x, torch.Generator().manual_seed(1), padding=2, flip=True)  # (6, 3, 8, 8)
    again = fast.crop_flip(x, torch.Generator().manual_seed(1), padding=2, flip=True)
    assert out.shape == x.shape and torch.equal(out, again)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))  # (6, 3, 12, 12)
    for i in range(6):  # every image is some 8×8 window of its own zero-padded self, flipped or not
        windows = [padded[i, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# -- BN loss with momentum: the EMA ----------------------------------------------------------------------------
def test_the_bn_ema_is_updated_once_per_round_from_the_rounds_last_forward_and_is_in_the_state(monkeypatch):
    synth, teacher, student = _synth("fast2", "warmup=1")  # unit 0 = 2 rounds × 2 inner steps
    name, layer = next((n, m) for n, m in teacher.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    layer.register_forward_hook(
        lambda m, inp, out: seen.append((inp[0].mean((0, 2, 3)).detach(), inp[0].var((0, 2, 3), unbiased=False)))
    )
    updates = {"n": 0}
    real_update = BNMomentum.update

    def counted(self):
        updates["n"] += 1
        real_update(self)

    monkeypatch.setattr(BNMomentum, "update", counted)
    synth.generate(synth.plan()[0], student)
    assert updates["n"] == 2 and len(seen) == 4  # one update per round; one teacher forward per inner step
    m = 0.9
    (mean0, var0), (mean1, var1) = seen[1], seen[3]  # the last forward of round 0 and of round 1
    want_mean, want_var = m * mean0 + (1 - m) * mean1, m * var0 + (1 - m) * var1  # seeded by round 0, then folded
    got_mean, got_var = synth.bn_ema.stats[name]
    torch.testing.assert_close(got_mean, want_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got_var, want_var, rtol=1e-6, atol=1e-7)
    saved_mean, saved_var = synth.state_dict()["bn_ema"]["stats"][name]
    assert torch.equal(saved_mean, got_mean) and torch.equal(saved_var, got_var) and not synth.bn_ema._last
    off, _, _ = _synth("fast2", "bn_momentum=0")
    assert off.bn_ema is None and off.state_dict()["bn_ema"] is None  # bn_mmt 0: the plain BN loss, no EMA


# -- the meta update -------------------------------------------------------------------------------------------
def test_a_unit_meta_updates_the_persistent_generator_and_nothing_else():
    synth, teacher, student = _synth("fast2", "warmup=0")  # the adversarial term on: the student is forwarded
    student.train()
    g0, t0, s0 = _snapshot(synth.generator), _snapshot(teacher), _snapshot(student)
    out = synth.generate(synth.plan()[0], student)
    moved = _changed(g0, synth.generator)
    assert {k for k in moved if k.endswith(("weight", "bias"))}, "the meta step did not move the generator"
    assert not {k for k in moved if "running" in k or "num_batches" in k}  # only the fast copy is ever forwarded
    assert _changed(t0, teacher) == set() and all(p.grad is None for p in teacher.parameters())
    assert _changed(s0, student) == set() and student.training  # eval during synthesis, mode restored
    assert all(p.grad is None for p in student.parameters()) and all(
        p.grad is None for p in synth.generator.parameters()
    )
    assert out.images.shape == (8, 3, 32, 32) and out.images.min() >= 0 and out.images.max() <= 1
    assert out.generator_steps == 2 and synth.rounds_done == 1


def _record_adam_steps(monkeypatch, synth) -> list[dict]:
    """Every Adam step: whether it is the meta optimiser's, its parameters' gradients and values before and after."""
    steps: list[dict] = []
    real_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        params = self.param_groups[0]["params"]  # the generator's (fast copy: group 0; z is group 1)
        entry = {"meta": self is synth.meta_optimizer, "grads": [p.grad.clone() for p in params]}
        entry["before"] = [p.detach().clone() for p in params]
        out = real_step(self, *args, **kwargs)
        entry["after"] = [p.detach().clone() for p in params]
        steps.append(entry)
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    return steps


def test_fomaml_sums_the_inner_gradients_before_the_last_inner_step(monkeypatch):
    synth, _, student = _synth("fast5", "warmup=0")  # one round of 5 inner steps
    steps = _record_adam_steps(monkeypatch, synth)
    synth.generate(synth.plan()[0], student)
    assert [s["meta"] for s in steps] == [False] * 4 + [True, False]  # the meta step precedes the 5th inner step
    inner = [s for s in steps if not s["meta"]]
    (meta,) = [s for s in steps if s["meta"]]
    for j, grad in enumerate(meta["grads"]):  # Σ_i ∇L(θ'_i), i = 0 … 4
        torch.testing.assert_close(grad, sum(s["grads"][j] for s in inner), rtol=1e-5, atol=1e-8)


def test_reptile_steps_the_generator_towards_the_adapted_copy(monkeypatch):
    synth, _, student = _synth("fast5", "warmup=0", "meta=reptile")
    steps = _record_adam_steps(monkeypatch, synth)
    synth.generate(synth.plan()[0], student)
    assert [s["meta"] for s in steps] == [False] * 5 + [True]  # after the inner loop
    meta, last_inner = steps[-1], steps[-2]
    for grad, theta, adapted in zip(meta["grads"], meta["before"], last_inner["after"], strict=True):
        assert torch.equal(grad, 67.0 * (theta - adapted))  # reptile_grad: 67 · (θ − θ'_k)
    fomaml, _, _ = _synth("fast5", "warmup=0")
    fomaml.generate(fomaml.plan()[0], student)
    assert any(not torch.equal(a, b) for a, b in zip(fomaml.generator.parameters(), synth.generator.parameters()))


# -- warm-up and reset_l0 ----------------------------------------------------------------------------------------
def test_the_adversarial_term_starts_at_ep_equal_warmup(monkeypatch):
    calls = {"n": 0}
    real = fast.adversarial_disagreement

    def counted(s, t):
        calls["n"] += 1
        return real(s, t)

    monkeypatch.setattr(fast, "adversarial_disagreement", counted)
    synth, _, student = _synth("fast2", "warmup=2")  # unit 0: rounds ep = 1, 2, 3
    synth.generate(synth.plan()[0], student)
    assert calls["n"] == 2 * 2  # off in ep 1 < warmup; on from ep 2 = warmup (an untrained student), 2 inner steps
    synth, _, _ = _synth("fast2", "warmup=2")
    synth.generate(synth.plan()[0], None)
    assert calls["n"] == 4  # no student, no adversary


def test_reset_l0_reinitialises_the_linear_and_the_first_bn_at_the_published_round(monkeypatch):
    gen = ConvGenerator("small", 256, 32)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(1.0)  # away from any init
    before = _snapshot(gen)
    fast.reset_first_layers(gen, torch.Generator().manual_seed(0))
    assert _changed(before, gen) == {"project.weight", "project.bias", "body.0.weight", "body.0.bias"}
    assert gen.project.weight.std().item() == pytest.approx(0.02, rel=0.05) and not gen.project.bias.any()
    assert abs(gen.body[0].weight.mean().item()) < 0.01 and not gen.body[0].bias.any()  # BN scale ≈ 0, not 1

    rounds: list[int] = []
    real = fast.reset_first_layers
    monkeypatch.setattr(fast, "reset_first_layers", lambda g, rng: (rounds.append(synth.rounds_done), real(g, rng)))
    synth, _, student = _synth("fast2", "warmup=1", "reset_l0_at=2")  # ep = 2 + 1 = 3: round 2, the unit of epoch 1
    units = synth.plan()
    synth.generate(units[0], student)
    assert rounds == []
    synth.generate(units[1], student)
    assert rounds == [2]
    synth.generate(units[2], student)
    assert rounds == [2]  # once
    synth, _, student = _synth("fast2", "warmup=1", "reset_l0_at=2", "reset_l0=false")
    for unit in synth.plan()[:3]:
        synth.generate(unit, student)
    assert rounds == [2]


# -- state: a synthesizer restored from a unit's state continues exactly ---------------------------------------
def test_the_state_saved_with_a_unit_continues_exactly_and_units_go_in_order():
    a, _, student = _synth("fast2", "warmup=1", "reset_l0_at=2")
    units = a.plan()
    outs = [a.generate(u, student) for u in units[:3]]
    b, _, _ = _synth("fast2", "warmup=1", "reset_l0_at=2")
    b.generate(units[0], student)
    buffer = io.BytesIO()
    torch.save(b.state_dict(), buffer)  # as the store saves it, and loads it (weights_only)
    buffer.seek(0)
    c, _, _ = _synth("fast2", "warmup=1", "reset_l0_at=2")
    c.load_state_dict(torch.load(buffer, weights_only=True))
    for unit, out in zip(units[1:3], outs[1:], strict=True):
        again = c.generate(unit, student)
        assert torch.equal(again.images, out.images) and torch.equal(again.labels, out.labels)
    assert all(torch.equal(p, q) for p, q in zip(a.generator.state_dict().values(), c.generator.state_dict().values()))
    with pytest.raises(RuntimeError, match="generate the units in plan order"):
        c.generate(units[0], student)


# -- resume through run(): killed in epoch 2, the same final student ------------------------------------------------
@pytest.fixture
def resnet8_teacher(_isolated_cache):
    """An untrained digits resnet8 teacher with BN statistics, where `bench run --set teacher=resnet8` looks."""
    from dfkd.models.checkpoint import save_weights

    save_weights(_teacher(), _isolated_cache / "teachers" / "digits_resnet8.pth", arch="resnet8", dataset="digits")


@pytest.mark.parametrize("kill_in", ["distil", "synthesis"])
def test_a_killed_fast2_run_resumes_to_the_uninterrupted_students_weights(
    tmp_path, resnet8_teacher, monkeypatch, kill_in
):
    """fast2 killed in epoch 2 (during the student's steps, or just after its unit was generated: the generator
    has moved on in memory but nothing of the unit is stored) and run again: the same student, bit for bit."""
    import shutil

    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.runner import run
    from dfkd.distill.trainer import Trainer
    from dfkd.paths import stores_dir

    sets = [
        "teacher=resnet8",
        *get_method_class("fast2").smoke,
        "reset_l0_at=2",  # the reset falls in the killed epoch's round
        "kd_steps=2",
        "distill.epochs=3",
        "distill.batch_size=16",
        "diagnose.enabled=false",
        "diagnose.report=false",
    ]

    def final_student(folder: str) -> dict:
        cfg = resolve_run_config(method="fast2", dataset="digits", sets=sets, flags={"output_dir": folder})
        record = run(cfg, reporter=Reporter(quiet=True))
        (last,) = (tmp_path / folder).rglob("last.pt")
        return {"record": record, "student": torch.load(last, weights_only=True)["student"]}

    monkeypatch.chdir(tmp_path)
    uninterrupted = final_student("a")
    shutil.rmtree(stores_dir())  # the second run generates its own pool

    target = (Trainer, "train_epoch") if kill_in == "distil" else (fast.FastSynthesizer, "generate")
    original = getattr(*target)
    calls = {"n": 0}

    def killed_in_epoch_2(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 and kill_in == "distil":
            raise KeyboardInterrupt
        out = original(self, *args, **kwargs)
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the unit is generated, its state and shard are not written
        return out

    monkeypatch.setattr(*target, killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        final_student("b")
    monkeypatch.setattr(*target, original)
    resumed = final_student("b")
    a, b = uninterrupted["student"], resumed["student"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["record"].student_top1 == uninterrupted["record"].student_top1
    assert resumed["record"].extra["synthesis/generator_steps"] == (2 + 1 + 1) * 2  # 4 rounds × g_steps 2
