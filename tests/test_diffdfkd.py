"""DiffDFKD semantics on tiny components (CPU): gradient to the latent, the guided step, CutMix, kept images,
determinism and resume, and loading a save_pretrained folder through the Hub-id code path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dfkd.config import DistillConfig
from dfkd.datasets import get_dataset
from dfkd.errors import ConfigError
from dfkd.methods import create_method
from dfkd.methods.base import BuildContext
from dfkd.methods.diffdfkd import guided_update, latent_cutmix
from dfkd.models import create_model
from dfkd.synthesis.losses import BNStatistics
from dfkd.synthesis.sampling import even_batches, teacher_view

TINY = {"path": "tiny", "dtype": "float32"}


def _teacher(seed):
    torch.manual_seed(seed)
    model = create_model("resnet8", 10)
    # give BN non-trivial running statistics so L_bn is informative
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 32, 32))
    return model.eval().requires_grad_(False)


def _synth(teacher, **overrides):
    spec = get_dataset("digits")
    cfg = {"generator": TINY, "num_steps": 5, "trajectories_per_class": 4, "batch_size": 2, **overrides}
    method = create_method("diffdfkd", **cfg)
    ctx = BuildContext(teacher, create_model("resnet8", 10), spec, torch.device("cpu"), 0, DistillConfig())
    return method.build_synthesizer(ctx)


def _loss_at(synth, z, t, label=3):
    be = synth.backend
    cond, uncond = be.encode_prompts([synth.prompt_for(label)]), be.encode_prompts([""])
    labels = torch.full((z.shape[0],), label)
    with BNStatistics(synth.teacher, per_image=True) as bn:
        return synth.guidance_loss(z, t, cond, uncond, labels, bn)[0]


def test_gradient_reaches_the_latent_and_depends_on_the_teacher():
    s1, s2 = _synth(_teacher(0)), _synth(_teacher(1))
    t = s1.backend.timesteps(5)[1]
    z = s1.backend.initial_latents(2, torch.Generator().manual_seed(0)).requires_grad_(True)
    (g1,) = torch.autograd.grad(_loss_at(s1, z, t), z)
    (g2,) = torch.autograd.grad(_loss_at(s2, z, t), z)
    assert torch.isfinite(g1).all() and g1.abs().sum() > 0
    assert not torch.allclose(g1, g2), "another teacher must steer the latent differently"


def test_guided_step_equals_hand_computed_update():
    synth = _synth(_teacher(0))
    be = synth.backend
    t = be.timesteps(5)[2]
    z = be.initial_latents(2, torch.Generator().manual_seed(1))
    # by hand, following the spec line by line
    zz = z.clone().requires_grad_(True)
    cond, uncond = be.encode_prompts(["A realistic photo."]), be.encode_prompts([""])
    eps = be.predict_noise(zz, t, cond, uncond, 3.0)
    ab = be.alpha_bar(t)
    x0 = (zz - (1 - ab).sqrt() * eps) / ab.sqrt()
    img = (be.vae.decode(x0 / be.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    x = teacher_view(img, synth.spec)
    # per trajectory (the released code's batch of one): each image's own BN statistics, losses summed
    loss = 0
    for i in range(2):
        with BNStatistics(synth.teacher) as bn:
            logits = synth.teacher(x[i : i + 1])
            loss = loss + 0.1 * bn.loss() + 1.0 * F.cross_entropy(logits, torch.tensor([3]))
    (grad,) = torch.autograd.grad(loss, zz)
    expected = z - grad

    labels = torch.tensor([3, 3])
    with BNStatistics(synth.teacher, per_image=True) as bn:
        got, logs = guided_update(z, lambda v: synth.guidance_loss(v, t, cond, uncond, labels, bn))
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
    assert logs["loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_guidance_on_one_latent_does_not_depend_on_its_batch():
    """The gradient on latent 0 is the same alone and in a batch of 8 (CutMix is not part of the gradient)."""
    synth = _synth(_teacher(0))
    be = synth.backend
    t = be.timesteps(5)[1]
    z8 = be.initial_latents(8, torch.Generator().manual_seed(2))
    alone = z8[:1].clone().requires_grad_(True)
    batch = z8.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(_loss_at(synth, alone, t), alone)
    (g8,) = torch.autograd.grad(_loss_at(synth, batch, t), batch)
    assert g1.abs().sum() > 0
    assert torch.allclose(g1[0], g8[0], atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="per_image=True"), BNStatistics(synth.teacher) as bn:
        cond = be.encode_prompts(["x"])
        synth.guidance_loss(batch, t, cond, cond, torch.zeros(8, dtype=torch.long), bn)


def test_kept_intermediate_is_the_image_the_guidance_scored():
    """Released order: the x̂0 decode kept at a cadence step is the one the teacher scored before the update."""
    synth = _synth(_teacher(0), num_steps=10)
    unit = synth.plan()[0]
    scored = []
    original = synth.guidance_terms

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        scored.append(out[2].detach().clone())
        return out

    synth.guidance_terms = spy
    out = synth.generate(unit)
    steps = out.extras["step"].tolist()
    for step in sorted(set(steps) - {10}):
        kept = out.images[torch.tensor(steps) == step]
        assert torch.equal(kept, scored[step]), f"step {step}"


def test_online_adversary_plan_interleaves_classes():
    synth = _synth(_teacher(0), adv_weight=1.0, trajectories_per_class=4, batch_size=2)
    units = synth.plan()
    assert [u.label for u in units[:10]] == list(range(10)) and [u.index for u in units] == list(range(len(units)))
    plain = {u.id: u.seed for u in _synth(_teacher(0), trajectories_per_class=4, batch_size=2).plan()}
    assert {u.id: u.seed for u in units} == plain


def test_latent_cutmix_replaces_exactly_the_box_from_the_partner():
    z = torch.arange(4 * 2 * 8 * 8, dtype=torch.float32).reshape(4, 2, 8, 8)
    for seed in range(20):
        mixed, (y0, y1, x0, x1) = latent_cutmix(z, torch.Generator().manual_seed(seed))
        assert 0 <= y0 < y1 <= 8 and 0 <= x0 < x1 <= 8
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(mixed[:, :, ~inside], z[:, :, ~inside]), "outside the box nothing changes"
        for i in range(4):
            box = mixed[i][:, inside]
            partners = [j for j in range(4) if torch.equal(box, z[j][:, inside])]
            assert len(partners) == 1 and partners[0] != i, "each box comes from one other latent"


def test_latent_cutmix_box_statistics_follow_beta():
    z = torch.zeros(2, 1, 64, 64)
    areas = []
    for seed in range(200):
        _, (y0, y1, x0, x1) = latent_cutmix(z, torch.Generator().manual_seed(seed))
        areas.append((y1 - y0) * (x1 - x0) / 64 / 64)
    mean = sum(areas) / len(areas)
    assert 0.1 < mean < 0.5  # E[1-λ] = 0.5 before clipping; clipping shrinks boxes near the border


def test_latent_cutmix_refuses_a_single_latent():
    with pytest.raises(ValueError, match="at least 2 latents"):
        latent_cutmix(torch.zeros(1, 4, 8, 8))


def test_batches_never_hold_a_single_trajectory():
    assert even_batches(10, 4) == [4, 3, 3]
    assert even_batches(9, 8) == [5, 4]
    assert even_batches(3, 2) == [3]
    assert all(sum(even_batches(n, b)) == n for n in range(1, 40) for b in range(1, 9))
    assert all(max(even_batches(n, b)) <= b + 1 for n in range(2, 40) for b in range(2, 9))
    assert all(min(even_batches(n, b)) >= 2 for n in range(2, 40) for b in range(2, 9))
    with pytest.raises(ConfigError, match="batch_size must be ≥ 2"):
        create_method("diffdfkd", batch_size=1)


@pytest.mark.parametrize("keep, per_trajectory", [(True, 5), (False, 1)])
def test_kept_images_per_trajectory_and_labels(keep, per_trajectory):
    synth = _synth(_teacher(0), keep_intermediate=keep, num_steps=10)
    unit = synth.plan()[5]  # class 2, second batch
    out = synth.generate(unit)
    assert out.images.shape == (2 * per_trajectory, 3, 32, 32)
    assert (out.labels == unit.label).all()
    steps = out.extras["step"].tolist()
    assert steps.count(10) == 2  # the final decode of z_0 for both trajectories
    if keep:
        assert sorted(set(steps)) == [2, 4, 6, 8, 10]  # N//5 cadence, 0 < i < N-1
    assert sorted(set(out.extras["trajectory"].tolist())) == [unit.info["first"], unit.info["first"] + 1]


def test_same_seed_same_images_and_guidance_changes_them():
    a = _synth(_teacher(0)).generate(_synth(_teacher(0)).plan()[0])
    b = _synth(_teacher(0)).generate(_synth(_teacher(0)).plan()[0])
    assert torch.equal(a.images, b.images)
    unguided = _synth(_teacher(0), bn_weight=0.0, ce_weight=0.0).generate(_synth(_teacher(0)).plan()[0])
    assert not torch.allclose(a.images, unguided.images)


def test_cutmix_changes_the_trajectory():
    unit = _synth(_teacher(0)).plan()[0]
    on = _synth(_teacher(0), num_steps=10).generate(unit)
    off = _synth(_teacher(0), num_steps=10, latent_cutmix=False).generate(unit)
    assert not torch.equal(on.images, off.images)


def test_local_save_pretrained_folder_matches_tiny(tmp_path):
    from dfkd.synthesis.diffusion_configs import save_tiny_pretrained

    folder = save_tiny_pretrained(tmp_path / "tiny-sd")
    unit = _synth(_teacher(0)).plan()[0]
    a = _synth(_teacher(0)).generate(unit)
    b = _synth(_teacher(0), generator={"path": str(folder), "dtype": "float32"}).generate(unit)
    assert torch.allclose(a.images, b.images, atol=1e-5)


ADVERSARY = {
    "adv_weight": 1.0,
    "adv_warmup_rounds": 2,
    "online_every": 2,
    "online": {"epochs": 1, "warmup_epochs": 0, "batch_size": 8},
    "keep_intermediate": False,
    "num_steps": 3,
}


def _adversarial_synth():
    torch.manual_seed(0)  # the online student starts from the same weights in every process
    return _synth(_teacher(0), **ADVERSARY)


@pytest.mark.parametrize("killed", ["after unit 2", "between unit 2's state and its shard"])
def test_a_resumed_adversarial_synthesis_generates_what_an_uninterrupted_one_does(tmp_path, killed):
    """Killed after unit 2 (whose generation trained the adversary of round 2), or while writing unit 2 after its
    state: a fresh synthesizer resumes from the state saved with the last stored unit, and the store ends with the
    same bytes as an uninterrupted synthesis (round 2 retrained, in the second case, on the units before it)."""
    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.runner import generate_unit, synthesize_all
    from dfkd.synthesis.store import SyntheticStore

    cpu = torch.device("cpu")
    reference = _adversarial_synth()
    units = reference.plan()[:4]
    a = SyntheticStore.open(tmp_path / "a", config_hash="x")
    reference.attach_store(a)
    synthesize_all(reference, units, a, reference.teacher, reference.spec, cpu, Reporter(quiet=True))

    first = _adversarial_synth()
    b = SyntheticStore.open(tmp_path / "b", config_hash="x")
    first.attach_store(b)
    for unit in units[:2]:
        generate_unit(first, unit, b, first.teacher, first.spec, cpu)
    if killed == "after unit 2":
        generate_unit(first, units[2], b, first.teacher, first.spec, cpu)
        state = b.load_state(units[2].id)  # the synthesizer's state_dict after unit 2, saved before its shard
        initial = first._initial_student.state_dict()
        assert state["round"] == 2 and set(state["student"]) == set(initial)
        assert not torch.equal(state["student"]["fc.weight"], initial["fc.weight"])  # trained, not the initial copy
        assert sorted(p.stem for p in (b.root / "states").glob("*.pt")) == [units[2].id]  # older states pruned
    else:

        def killed_writing(*args, **kwargs):
            raise KeyboardInterrupt

        b.write_unit = killed_writing
        with pytest.raises(KeyboardInterrupt):
            generate_unit(first, units[2], b, first.teacher, first.spec, cpu)
        assert b.state_path(units[2].id).is_file() and not b.has_unit(units[2].id)
        b = SyntheticStore.open_existing(b.root)
    resumed = _adversarial_synth()  # a fresh process
    resumed.attach_store(b)
    synthesize_all(resumed, units, b, resumed.teacher, resumed.spec, cpu, Reporter(quiet=True))
    assert resumed._online_round == 2  # unit 3 was guided against round 2's adversary
    assert torch.equal(a.images(kept_only=False), b.images(kept_only=False))


def test_same_seed_same_store_and_a_killed_synthesis_resumes_to_it(tmp_path):
    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.runner import synthesize_all
    from dfkd.synthesis.store import SyntheticStore

    def synthesize(root, crash_after=None):
        synth = _synth(_teacher(0), num_steps=3, trajectories_per_class=2)
        units = synth.plan()[:4]
        store = SyntheticStore.open(root, config_hash="h")
        if crash_after is not None:
            original, calls = synth.generate, {"n": 0}

            def flaky(unit, student=None):
                calls["n"] += 1
                if calls["n"] > crash_after:
                    raise KeyboardInterrupt
                return original(unit, student)

            synth.generate = flaky
        synthesize_all(synth, units, store, synth.teacher, synth.spec, torch.device("cpu"), Reporter(quiet=True))
        return store

    a = synthesize(tmp_path / "a")
    b = synthesize(tmp_path / "b")
    assert torch.equal(a.images(), b.images())
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "c", crash_after=2)
    assert len(SyntheticStore.open(tmp_path / "c", config_hash="h").units()) == 2
    c = synthesize(tmp_path / "c")
    assert c.units() == a.units() and torch.equal(c.images(), a.images())
    assert torch.equal(c.read_table()["teacher_logits"], a.read_table()["teacher_logits"])


def test_diffusion_kd_prompts_name_the_class_in_plain_words():
    spec = get_dataset("cifar100")
    method = create_method("diffusion_kd", generator=TINY)
    ctx = BuildContext(_teacher(0), create_model("resnet8", 100), spec, torch.device("cpu"), 0, DistillConfig())
    synth = method.build_synthesizer(ctx)
    label = list(spec.class_names).index("aquarium_fish")
    assert synth.prompt_for(label) == "a photo of an aquarium fish"
    digits = create_method("diffusion_kd", generator=TINY, prompt_template="the digit {name}")
    ctx = BuildContext(
        _teacher(0), create_model("resnet8", 10), get_dataset("digits"), torch.device("cpu"), 0, DistillConfig()
    )
    assert digits.build_synthesizer(ctx).prompt_for(7) == "the digit seven"
