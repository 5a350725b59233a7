"""NAYER (shape ``pool``): the label-text embeddings cached once and digest-checked, the noisy layers re-drawn every
g-loop while the rest of the generator persists until ``g_life``, the warm-up folded into unit 0, the balanced
labels, the untouched teacher, and a killed run that resumes to the uninterrupted student, bit for bit (CPU)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

import dfkd.methods.nayer as nayer_module
import dfkd.metrics.features as features
from dfkd.benchmark.assembly import resolve_run_config
from dfkd.benchmark.progress import Reporter
from dfkd.benchmark.runner import run
from dfkd.config import DistillConfig
from dfkd.datasets import get_dataset
from dfkd.errors import ConfigError, UserError
from dfkd.methods import create_method, get_method_class
from dfkd.methods.base import BuildContext
from dfkd.models import create_model
from dfkd.synthesis.nayer_parts import NLGenerator, label_text_embeddings, tensor_sha256

# seconds-long settings: a tiny random text tower, a narrow generator, 2 Adam steps per g-loop
TINY = [
    "clip_model=tiny",
    "clip_pretrained=null",
    "batch_size=12",
    "g_steps=2",
    "le_emb_size=16",
    "ngf=8",
    "kd_steps=2",
]


def _synth(*sets: str, epochs: int = 3):
    cfg = resolve_run_config(method="nayer", dataset="digits", sets=[*TINY, f"distill.epochs={epochs}", *sets])
    torch.manual_seed(0)
    teacher = create_model("resnet8", 10)
    with torch.no_grad():
        teacher(torch.rand(16, 3, 32, 32))  # non-trivial BN running statistics
    teacher = teacher.eval().requires_grad_(False)
    student = create_model("resnet8", 10)
    ctx = BuildContext(teacher, student, get_dataset("digits"), torch.device("cpu"), 0, cfg.distill)
    method = get_method_class("nayer")(cfg.method_config)
    return method, method.build_synthesizer(ctx), teacher, student


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# -- label-text embeddings ----------------------------------------------------------------------------------------
def test_label_embeddings_are_encoded_once_then_read_from_the_cache(monkeypatch):
    calls: list[str] = []
    real = features.load_open_clip

    def spy(name, *args, **kwargs):
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(features, "load_open_clip", spy)
    spec = get_dataset("digits")
    first = label_text_embeddings(spec, "tiny", None, "a image of {name}")
    assert len(calls) == 1 and first.tensor.shape == (10, 64) and first.tensor.dtype == torch.float32
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["prompts"][:2] == ["a image of zero", "a image of one"]
    assert meta["sha256"] == tensor_sha256(first.tensor)
    assert first.path.is_file() and len({tuple(r.tolist()) for r in first.tensor}) == 10  # a distinct row per class

    again = label_text_embeddings(spec, "tiny", None, "a image of {name}")  # the second build: the file, no model
    assert len(calls) == 1 and torch.equal(again.tensor, first.tensor) and again.sha256 == first.sha256
    other = label_text_embeddings(spec, "tiny", None, "a photo of {name}")  # another prompt: another file
    assert len(calls) == 2 and other.path != first.path


def test_a_damaged_embeddings_file_is_refused_in_one_line_that_says_to_delete_it():
    spec = get_dataset("digits")
    lte = label_text_embeddings(spec, "tiny", None, "a image of {name}")
    damaged = lte.tensor.clone()
    damaged[3, 5] += 1e-3
    torch.save(damaged, lte.path)
    with pytest.raises(UserError, match="sha256") as e:
        label_text_embeddings(spec, "tiny", None, "a image of {name}")
    assert "\n" not in str(e.value) and f"delete {lte.path}" in str(e.value)
    lte.path.write_bytes(b"not a tensor file")
    with pytest.raises(UserError, match=r"Cannot read .* delete") as e:
        label_text_embeddings(spec, "tiny", None, "a image of {name}")
    assert "\n" not in str(e.value)


def test_a_run_refuses_a_stored_state_made_with_other_embeddings():
    _, synth, _, student = _synth("warmup=0", "g_loops=1")
    synth.generate(synth.plan()[0], student)
    state = synth.state_dict()
    state["label_embeddings"] = "0" * 64
    with pytest.raises(UserError, match="other label-text embeddings"):
        _synth("warmup=0", "g_loops=1")[1].load_state_dict(state)


# -- the generator ---------------------------------------------------------------------------------------------------
def test_nlgenerator_has_one_noisy_layer_per_block_of_k_and_the_published_size():
    emb = torch.randn(10, 512)
    g = NLGenerator(emb, batch_size=400, le_emb_size=1000, size=32, ngf=64)
    assert len(g.noisy) == 40  # CIFAR-10 at the scripts' batch 400: 40 noisy layers, 28.9 M parameters (spec §8.2)
    total, noisy = sum(p.numel() for p in g.parameters()), sum(p.numel() for p in g.noisy.parameters())
    assert round(total / 1e6, 1) == 28.9 and round(noisy / 1e6, 1) == 20.5
    assert "embeddings" not in g.state_dict()  # a constant, reloaded from its cache, not state
    small = NLGenerator(emb, batch_size=25, le_emb_size=16, ngf=8)
    assert len(small.noisy) == 3 and small(torch.arange(25) % 10).shape == (25, 3, 32, 32)


def test_noisy_layers_are_redrawn_every_loop_and_the_rest_persists_until_g_life(monkeypatch):
    seen: list[dict] = []
    real = NLGenerator.reinit_noisy

    def spy(self, generator):
        rest = {k: v.clone() for k, v in self.state_dict().items() if not k.startswith("noisy.")}
        real(self, generator)
        seen.append({"id": id(self), "rest": rest, "noisy": [m.weight.clone() for m in self.noisy]})
        assert all(torch.all(m.bias == 0) for m in self.noisy)

    monkeypatch.setattr(NLGenerator, "reinit_noisy", spy)
    # no warm-up, 2 g-loops per call, a new generator every 2 calls: loops 0-3 share one, loops 4-5 the next
    _, synth, _, student = _synth("warmup=0", "g_loops=2", "g_life=2")
    lte = synth.lte.tensor
    for unit in synth.plan():
        synth.generate(unit, student)
        assert torch.equal(synth.generator.embeddings, lte)  # the constant input, never trained
    assert len(seen) == 6
    ids = [s["id"] for s in seen]
    assert ids[0] == ids[1] == ids[2] == ids[3] != ids[4] == ids[5]
    for a, b in itertools.pairwise(seen):
        assert not torch.equal(a["noisy"][0], b["noisy"][0])  # a fresh draw every g-loop
    for i in (1, 2, 3, 5):  # the rest carried on from the loop before (trained there, not reset)
        assert any(not torch.equal(seen[i]["rest"][k], seen[i - 1]["rest"][k]) for k in seen[i]["rest"])
    w = torch.cat([n.flatten() for s in seen for n in s["noisy"]])
    assert abs(w.mean().item()) < 0.1 and abs(w.std().item() - 1) < 0.1  # N(0, 1)


def test_labels_are_balanced_and_class_ordered_with_a_random_remainder():
    _, synth, _, student = _synth("warmup=0", "g_loops=2", "batch_size=25")
    out = synth.generate(synth.plan()[0], student)
    assert out.images.shape == (50, 3, 32, 32) and out.images.min() >= 0 and out.images.max() <= 1
    for loop in out.labels.split(25):
        assert torch.equal(loop[:20], torch.arange(20) % 10) and loop[20:].min() >= 0 and loop[20:].max() < 10


# -- the warm-up, the adversary and the budget --------------------------------------------------------------------
def test_the_warm_up_is_unit_0_without_the_adversary(monkeypatch):
    adv_calls: list[int] = []
    real = nayer_module.adversarial_disagreement
    monkeypatch.setattr(
        nayer_module, "adversarial_disagreement", lambda s, t: (adv_calls.append(len(s)), real(s, t))[1]
    )
    method, synth, _, student = _synth("warmup=2", "gwp_loops=3", "g_loops=1")
    units = synth.plan()
    assert [u.size for u in units] == [(2 * 3 + 1) * 12, 12, 12]
    out = synth.generate(units[0], student)
    assert out.extras["call"].tolist() == [0] * 36 + [1] * 36 + [2] * 12  # warm-up calls 0, 1; then call 2
    assert out.generator_steps == 7 * 2 and synth.calls == 3
    assert adv_calls == [12] * 2  # only the post-warm-up call's 2 steps compete with the student
    out = synth.generate(units[1], student)
    assert out.extras["call"].tolist() == [3] * 12 and out.generator_steps == 2 and synth.generator_steps == 16
    assert method.budget(method.config, 10, DistillConfig(epochs=3)).images == 7 * 12 + 2 * 12
    with pytest.raises(RuntimeError, match="plan order"):
        synth.generate(units[1], student)  # unit 1 again: the state is already past it


def test_the_matched_budget_is_exact_for_the_proposed_presets():
    cls = get_method_class("nayer")
    # digits: 500 images over 20 rounds of 1 g-loop + 1 warm-up call of 5; CIFAR: 50 000 over 200 × 2 + 20 × 5
    for sets, per_class, k, epochs, batch in [
        ({"warmup": 1, "gwp_loops": 5, "g_loops": 1}, 50, 10, 20, 64),
        ({"warmup": 20, "gwp_loops": 5, "g_loops": 2}, 5000, 10, 200, 256),
        ({"warmup": 20, "gwp_loops": 5, "g_loops": 2}, 500, 100, 200, 256),
    ]:
        config = create_method("nayer", **sets).config
        distill = DistillConfig(epochs=epochs, batch_size=batch)
        over = cls.budget_overrides(config, per_class, k, distill)
        budget = cls.budget(create_method("nayer", **sets, **over).config, k, distill)
        assert budget.images == per_class * k and budget.kd_steps == epochs * -(-per_class * k // batch)


# -- what the synthesis leaves alone --------------------------------------------------------------------------------
def test_the_teacher_and_the_student_are_untouched_by_a_unit():
    _, synth, teacher, student = _synth("warmup=1", "gwp_loops=1", "g_loops=1")
    student.train()
    t0, s0 = _snapshot(teacher), _snapshot(student)
    for unit in synth.plan()[:2]:
        synth.generate(unit, student)
    assert all(torch.equal(t0[k], v) for k, v in teacher.state_dict().items())  # parameters and BN buffers
    assert all(torch.equal(s0[k], v) for k, v in student.state_dict().items())
    assert all(p.grad is None for p in (*teacher.parameters(), *student.parameters()))
    assert student.training and not teacher.training


def test_released_student_mode_moves_only_the_students_bn_statistics_from_the_second_loop():
    _, synth, teacher, student = _synth("warmup=0", "g_loops=2", "student_mode=released")
    student.train()
    t0, s0 = _snapshot(teacher), _snapshot(student)
    synth.generate(synth.plan()[0], student)
    changed = {k for k, v in student.state_dict().items() if not torch.equal(s0[k], v)}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert all(torch.equal(t0[k], v) for k, v in teacher.state_dict().items()) and student.training


def test_state_dict_carries_a_unit_to_the_next_exactly():
    _, a, _, student = _synth("warmup=1", "gwp_loops=1", "g_loops=1")
    units = a.plan()
    a.generate(units[0], student)
    state = a.state_dict()
    assert set(state) == {"generator", "bn_ema", "calls", "generator_steps", "label_embeddings"}
    path = a.lte.path.parent / "state.pt"
    torch.save(state, path)
    _, b, _, _ = _synth("warmup=1", "gwp_loops=1", "g_loops=1")
    b.load_state_dict(torch.load(path, weights_only=True))  # as the store saves and loads it
    torch.manual_seed(123)  # the global RNG does not matter
    x, y = a.generate(units[1], student), b.generate(units[1], student)
    assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
    assert a.state_dict()["calls"] == b.state_dict()["calls"] == 3


# -- configuration -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("g_steps", 0, "nayer.g_steps must be a positive integer"),
        ("warmup", -1, "nayer.warmup must be an integer ≥ 0"),
        ("bn_momentum", 1.0, r"nayer.bn_momentum must be in \[0, 1\)"),
        ("prompt", "a photo", "nayer.prompt must contain {name}"),
        ("batch_size", 1, "nayer.batch_size must be ≥ 2"),
    ],
)
def test_bad_values_are_one_line_config_errors_naming_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message) as e:
        create_method("nayer", **{field: value})
    assert "\n" not in str(e.value)


# -- resume: a killed run ends where an uninterrupted one does --------------------------------------------------
def test_a_killed_nayer_run_resumes_to_the_uninterrupted_students_weights(tmp_path, digits_teacher, monkeypatch):
    """Killed in epoch 2, once during the student's steps and once while its unit is generated, and run again: the
    same final student, bit for bit, as a run never interrupted (each run with its own store, from scratch)."""
    import shutil

    from dfkd.distill.trainer import Trainer
    from dfkd.paths import stores_dir

    sets = [*TINY, "warmup=1", "gwp_loops=1", "g_loops=1", "distill.epochs=3", "distill.eval_every=3"]
    sets.append("diagnose.enabled=false")

    def final_student(folder: str) -> dict:
        cfg = resolve_run_config(method="nayer", dataset="digits", sets=sets, flags={"output_dir": folder})
        record = run(cfg, reporter=Reporter(quiet=True))
        (last,) = (tmp_path / folder).rglob("last.pt")
        return {"record": record, "student": torch.load(last, weights_only=True)["student"]}

    monkeypatch.chdir(tmp_path)
    uninterrupted = final_student("a")
    for kill_in in ("distil", "synthesis"):
        shutil.rmtree(stores_dir())  # the next run generates its own pool
        target = (Trainer, "train_epoch") if kill_in == "distil" else (nayer_module._NAYERSynthesizer, "generate")
        original = getattr(*target)
        calls = {"n": 0}

        def killed_in_epoch_2(self, *args, _original=original, _calls=calls, **kwargs):
            _calls["n"] += 1
            if _calls["n"] == 2:
                raise KeyboardInterrupt
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(*target, killed_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            final_student(kill_in)
        monkeypatch.setattr(*target, original)
        resumed = final_student(kill_in)
        a, b = uninterrupted["student"], resumed["student"]
        assert all(torch.equal(a[k], b[k]) for k in a), kill_in
        assert resumed["record"].student_top1 == uninterrupted["record"].student_top1
