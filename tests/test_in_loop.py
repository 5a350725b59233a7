"""Generator-in-the-loop methods (shape ``in_loop``): DAFL, ZSKT, DFAD, DFQ — their loss terms, who each step
updates, the untouched teacher, resume equal to an uninterrupted run, and that only ``real_data`` reads the
training split."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dfkd.benchmark.assembly import resolve_run_config
from dfkd.datasets import get_dataset
from dfkd.distill.trainer import Trainer
from dfkd.methods import get_method_class, list_methods
from dfkd.methods.base import IN_LOOP, SHAPES, BuildContext, InLoopSynthesizer
from dfkd.models import create_model
from dfkd.synthesis.generators import ConvGenerator
from dfkd.synthesis.losses import activation_loss, adversarial_kl, adversarial_l1, class_balance
from tests.test_method_contract import FAST

IN_LOOP_METHODS = [m for m in list_methods() if get_method_class(m).shape == IN_LOOP]


def test_the_four_generator_methods_are_registered_in_loop():
    assert {"dafl", "zskt", "dfad", "dfq"} <= set(IN_LOOP_METHODS)
    assert all(get_method_class(m).shape in SHAPES for m in list_methods())


# -- loss terms against hand-computed values ---------------------------------------------------------------
def test_class_balance_is_the_negative_entropy_of_the_batch_marginal():
    uniform = torch.zeros(4, 10)  # p̄ uniform over 10 classes: Σ p̄ ln p̄ = −ln 10
    assert class_balance(uniform).item() == pytest.approx(-math.log(10))
    assert class_balance(uniform, log10=True).item() == pytest.approx(-1.0)
    peaked = torch.tensor([[100.0, 0.0], [100.0, 0.0]])  # every image class 0: p̄ = (1, 0), entropy 0
    assert class_balance(peaked).item() == pytest.approx(0.0, abs=1e-6)


def test_activation_and_adversarial_terms_by_hand():
    f = torch.tensor([[1.0, -3.0], [2.0, 0.0]])
    assert activation_loss(f).item() == pytest.approx(-1.5)
    s, t = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 2.0, 5.0]])
    assert adversarial_l1(s, t).item() == pytest.approx(-1.0)  # −(1 + 0 + 2)/3
    p_t, p_s = F.softmax(t, 1), F.softmax(s, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum().item()
    assert adversarial_kl(s, t).item() == pytest.approx(-kl, rel=1e-6)


@pytest.mark.parametrize(
    "layout, nz, params", [("small", 256, 2_328_899), ("large", 256, 4_581_955), ("large", 512, 8_776_259)]
)
def test_generators_have_the_published_sizes(layout, nz, params):
    g = ConvGenerator(layout, nz, 32)
    assert sum(p.numel() for p in g.parameters()) == params  # the spec's counts for the CMI pack's generators
    assert g(torch.randn(2, nz)).shape == (2, 3, 32, 32)
    out = ConvGenerator("dafl", 100, 32)(torch.randn(4, 100))
    assert out.shape == (4, 3, 32, 32) and not (out.min() >= 0 and out.max() <= 1)  # normalised space, not [0, 1]


# -- who each step updates; the teacher is never touched --------------------------------------------------------
def _build(name: str, *sets: str):
    cfg = resolve_run_config(method=name, dataset="digits", sets=[*FAST[name], *sets])
    spec = get_dataset("digits")
    torch.manual_seed(0)
    teacher = create_model("resnet8", 10)
    teacher.train()
    with torch.no_grad():
        teacher(torch.rand(16, 3, 32, 32))  # non-trivial BN running statistics
    teacher = teacher.eval().requires_grad_(False)
    student = create_model("resnet8", 10)
    ctx = BuildContext(teacher, student, spec, torch.device("cpu"), 0, cfg.distill)
    method = get_method_class(name)(cfg.method_config)
    return cfg, method, method.build_synthesizer(ctx), method.build_distiller(ctx), teacher, student


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("name", IN_LOOP_METHODS)
def test_a_generator_step_changes_only_the_generator_and_a_student_step_only_the_student(name):
    _cfg, _method, synth, distiller, teacher, student = _build(name)
    assert isinstance(synth, InLoopSynthesizer)
    t0, s0, g0 = _snapshot(teacher), _snapshot(student), _snapshot(synth.generator)
    student.train()
    synth.update(student, step=0)
    assert _changed(t0, teacher) == set() and _changed(s0, student) == set()
    assert {k for k in _changed(g0, synth.generator) if "weight" in k}, "the generator did not learn"
    assert student.training  # the update restores the student's mode
    g1 = _snapshot(synth.generator)
    x, y = synth.sample(8, step=0)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    loss, _ = distiller.loss(student, x, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert _changed(t0, teacher) == set() and _changed(g1, synth.generator) == set()
    assert _changed(s0, student), "the student did not learn"


@pytest.mark.parametrize("name", list_methods())
def test_the_teacher_is_bit_identical_after_every_methods_steps(name):
    _cfg, _method, synth, distiller, teacher, student = _build(name)
    before = _snapshot(teacher)
    if isinstance(synth, InLoopSynthesizer):
        synth.update(student, step=0)
        x, y = synth.sample(4, step=0)
    elif synth is not None:
        out = synth.generate(synth.plan()[0], student)
        x, y = get_dataset("digits").normalize(out.images), out.labels
    else:
        x, y = torch.rand(4, 3, 32, 32), torch.arange(4)
    distiller.loss(student, x, y)[0].backward()
    assert _changed(before, teacher) == set()
    assert all(p.grad is None for p in teacher.parameters())


# -- resume equals an uninterrupted run, bit for bit on CPU ------------------------------------------------------
def _train(name: str, checkpoint_dir, kill_after: int | None = None):
    """Three epochs of ``name`` with checkpoints in ``checkpoint_dir``; ``kill_after`` interrupts it after that many
    epochs (as a kill would: the next process finds only the checkpoint)."""
    cfg, _method, synth, distiller, _teacher, student = _build(name, "distill.epochs=3")
    trainer = Trainer(
        student, distiller, cfg.distill, device=torch.device("cpu"), seed=0, checkpoint_dir=checkpoint_dir
    )
    if kill_after is not None:
        original = trainer.train_epoch_in_loop

        def dies(source, epoch, steps):
            if epoch >= kill_after:
                raise KeyboardInterrupt
            return original(source, epoch, steps)

        trainer.train_epoch_in_loop = dies
        with pytest.raises(KeyboardInterrupt):
            trainer.fit_in_loop(synth, steps_per_epoch=cfg.method_config.steps_per_epoch)
    else:
        trainer.fit_in_loop(synth, steps_per_epoch=cfg.method_config.steps_per_epoch)
    return student, synth


@pytest.mark.parametrize("name", ["dfq", "dafl"])
def test_an_in_loop_run_killed_and_resumed_ends_where_an_uninterrupted_one_does(tmp_path, name):
    student_a, synth_a = _train(name, tmp_path / "a")
    _train(name, tmp_path / "b", kill_after=1)  # killed after epoch 1 …
    student_b, synth_b = _train(name, tmp_path / "b")  # … and resumed by a fresh process
    for a, b in ((student_a, student_b), (synth_a.generator, synth_b.generator)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert synth_b.optimizer.state_dict()["state"].keys() == synth_a.optimizer.state_dict()["state"].keys()


# -- only real_data reads the training split ------------------------------------------------------------------
@pytest.mark.parametrize("name", list_methods())
def test_only_real_data_methods_read_the_training_split(name, monkeypatch, tmp_path, digits_teacher):
    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.runner import run
    from dfkd.datasets.base import DatasetSpec

    reads: list[str] = []
    real_load = DatasetSpec.load

    def spy(self, split, *args, **kwargs):
        reads.append(split)
        return real_load(self, split, *args, **kwargs)

    monkeypatch.setattr(DatasetSpec, "load", spy)
    sets = [*FAST[name], "distill.epochs=1", "diagnose.enabled=false", "distill.batch_size=64"]
    cfg = resolve_run_config(method=name, dataset="digits", sets=sets, flags={"output_dir": str(tmp_path)})
    run(cfg, reporter=Reporter(quiet=True))
    assert ("train" in reads) == (get_method_class(name).shape == "real_data"), reads
