"""NAYER — Tran, Le, Le, Harandi, Tran, Phung, "NAYER: Noisy Layer Data Generation for Efficient and Effective
Data-free Knowledge Distillation", CVPR 2024, arXiv 2310.00258.

The randomness moves from a latent z to a **noisy layer**: the generator's input is a constant label-text embedding
(LTE, the CLIP text feature of "a image of {class}", computed once and cached), normalised by a BatchNorm1d and fed
through one Linear per block of K rows whose weights are re-drawn from N(0, 1) before every g-loop. Per g-loop, with
balanced class-ordered labels y and the frozen teacher f, the whole generator G is trained with a fresh Adam for
``g_steps`` steps on (the paper's Eq. 5 as released; the student's Eq. 6 is the suite's KD loss)::

    x  = G(LTE[y]) ∈ [0, 1],   x̃ = normalise(flip(crop(x, pad 4)))
    L_G = bn · Σ_l ‖σ²_l − ((1−m)·σ²_l(x̃) + m·σ̄²_l)‖₂ + ‖μ_l − ((1−m)·μ_l(x̃) + m·μ̄_l)‖₂     (BN loss with momentum m)
          + oh · CE(f(x̃), y)
          + adv · −mean_i( 1[argmax s_i = argmax f_i] · KL(f(x̃)_i ‖ s(x̃)_i) )      (from the first post-warm-up call)

and the iterate with the lowest L_G joins the pool; the EMA (μ̄, σ̄²) then takes in the round's last batch statistics.
Every ``g_life`` calls the generator is created anew; there is no latent z.

Written from ``shared/spec/classic-baselines.md`` §8 (§8.3: ``NAYER:datafree/synthesis/nayer.py:147-243``, §8.2:
``datafree/models/generator.py:15-80``, §8.4: ``scripts/nayer_*.sh`` and the argparse defaults of
``datafree_kd.py:32-130``), §0.4 and §1.1; the released code has no licence and nothing is copied from it. The LTE
and ``NLGenerator`` are in :mod:`dfkd.synthesis.nayer_parts`.

Shape **pool**. The released loop calls ``synthesize()`` once per epoch (10 g-loops during the ``warmup`` epochs, 2
after), trains the student on the whole pool only once ``epoch ≥ warmup`` and evaluates only then, with a cosine
schedule over ``epochs − warmup``. Here the warm-up is folded into **unit 0**: it holds the ``warmup`` warm-up calls
and the first post-warm-up call, so the student's first steps see exactly the pool the released student's first
steps saw, and ``distill.epochs`` counts the released post-warm-up epochs (NAYER_100 = 100 here, 120 − 20 there;
the cosine then spans the same epochs). Unit e ≥ 1 is the call ``warmup + e``. No runner change is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfkd.config import DistillConfig, check_choices, check_finite, check_positive_ints
from dfkd.errors import ConfigError, UserError
from dfkd.methods.base import (
    POOL,
    Budget,
    BuildContext,
    Method,
    MethodCard,
    SynthesisOutput,
    SynthesisUnit,
    Synthesizer,
    unit_seed,
)
from dfkd.synthesis.losses import BNMomentum, BNStatistics, adversarial_disagreement
from dfkd.synthesis.nayer_parts import NLGenerator, embeddings_path, label_text_embeddings


class NAYER(Method):
    @dataclass(frozen=True)
    class Config:
        batch_size: int = 400  # images per g-loop ("synthesis_batch_size"; scripts: 400 CIFAR, 200 tiny-ImageNet)
        g_steps: int = 30  # Adam steps per g-loop ("g_steps"; scripts: 30 CIFAR-10, 40 CIFAR-100, 60 tiny)
        g_loops: int = 2  # g-loops per call after the warm-up ("g_loops"; scripts: 2 CIFAR, 4 tiny)
        gwp_loops: int = 10  # g-loops per warm-up call ("gwp_loops"; scripts: 10 CIFAR, 20 tiny)
        warmup: int = 20  # warm-up calls, folded into unit 0: no KD, no adversary ("warmup")
        g_life: int = 10  # calls between new generators ("g_life")
        lr_g: float = 4e-3  # Adam learning rate of the generator ("lr_g")
        betas: tuple[float, float] = (0.5, 0.999)  # Adam betas (nayer.py, new Adam every g-loop)
        bn_weight: float = 10.0  # BN-statistics loss with momentum ("bn")
        ce_weight: float = 0.5  # one-hot cross-entropy to the target class ("oh")
        adv_weight: float = 1.33  # decision-adversarial KL with the student, after the warm-up ("adv")
        bn_momentum: float = 0.9  # m of the BN loss's EMA of earlier rounds' statistics ("bn_mmt")
        le_emb_size: int = 1000  # output width of each noisy layer ("le_emb_size", argparse default)
        ngf: int = 64  # generator width (NLGenerator's ngf)
        crop_padding: int = 4  # RandomCrop(size, padding) of the synthesis augmentation (nayer.py:121-131)
        flip: bool = True  # RandomHorizontalFlip in the synthesis augmentation (CIFAR; tiny/ImageNet: off)
        clip_model: str = "ViT-B-32"  # open_clip text tower of the LTE (released: clip.load("ViT-B/32")); "tiny"
        clip_pretrained: str | None = "openai"  # its weights (open_clip tag or checkpoint; None with "tiny")
        prompt: str = "a image of {name}"  # LTE text per class (label_embedding.py:25-33; README figure: "a photo of")
        kd_steps: int = 400  # student steps per round on the pool ("kd_steps")
        # released: the student in train mode from a call's second g-loop on (S.train() sits inside the g-loop,
        # nayer.py; spec §8.3), so its BN uses batch statistics there and its running statistics move
        student_mode: str = "eval"  # eval: eval mode in every g-loop, the student never changed | released

    card = MethodCard(
        title="NAYER: Noisy Layer Data Generation for Efficient and Effective Data-free Knowledge Distillation",
        authors="Tran, Le, Le, Harandi, Tran, Phung",
        year=2024,
        arxiv="2310.00258",
        venue="CVPR 2024",
        summary="A generator fed constant CLIP label-text embeddings through noisy layers re-drawn every round.",
        reconstructed=(
            "From the released scripts (spec §8): warm-up folded into the first pool unit; LTE through open_clip's "
            "ViT-B-32 'openai' in float32; balanced labels; the suite's pool and KD loop."
        ),
    )
    shape = POOL

    smoke = (
        "clip_model=tiny",
        "clip_pretrained=null",
        "batch_size=10",
        "g_steps=2",
        "g_loops=1",
        "gwp_loops=1",
        "warmup=1",
        "le_emb_size=16",
        "ngf=8",
        "kd_steps=1",
    )

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        c, p = self.config, "nayer."
        check_positive_ints(c, p, "batch_size", "g_steps", "g_loops", "gwp_loops", "g_life", "le_emb_size")
        check_positive_ints(c, p, "ngf", "kd_steps")
        check_finite(c, p, "lr_g", "bn_weight", "ce_weight", "adv_weight", "bn_momentum")
        check_choices(c, p, student_mode=("eval", "released"))
        for name in ("warmup", "crop_padding"):
            value = getattr(c, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{p}{name} must be an integer ≥ 0, got {value!r}")
        if c.batch_size < 2:
            raise ConfigError(
                f"{p}batch_size must be ≥ 2 (the generator's BatchNorm needs a batch), got {c.batch_size!r}"
            )
        if c.lr_g <= 0:
            raise ConfigError(f"{p}lr_g must be > 0, got {c.lr_g!r}")
        for name in ("bn_weight", "ce_weight", "adv_weight"):
            if getattr(c, name) < 0:
                raise ConfigError(f"{p}{name} must be ≥ 0, got {getattr(c, name)!r}")
        if not 0 <= c.bn_momentum < 1:
            raise ConfigError(f"{p}bn_momentum must be in [0, 1), got {c.bn_momentum!r}")
        if len(c.betas) != 2 or not all(0 <= b < 1 for b in c.betas):
            raise ConfigError(f"{p}betas must be two numbers in [0, 1), got {list(c.betas)!r}")
        if "{name}" not in c.prompt:
            raise ConfigError(f"{p}prompt must contain {{name}} (where the class name goes), got {c.prompt!r}")
        if not c.clip_model:
            raise ConfigError(f"{p}clip_model must name an open_clip text tower (e.g. ViT-B-32) or 'tiny'")

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        return _NAYERSynthesizer(self.config, ctx)

    def kd_steps_per_epoch(self) -> int:
        return self.config.kd_steps

    # -- budget: unit 0 = the warm-up's g-loops + one round's; every round then g_loops batches and kd_steps steps --
    @staticmethod
    def loops(config: Any, epochs: int) -> int:
        """g-loops of a run of ``epochs`` rounds: warm-up and rounds (each g-loop adds ``batch_size`` images)."""
        return config.warmup * config.gwp_loops + epochs * config.g_loops

    @classmethod
    def budget(cls, config: Any, num_classes: int, distill: DistillConfig) -> Budget:
        return Budget(
            images=config.batch_size * cls.loops(config, distill.epochs), kd_steps=config.kd_steps * distill.epochs
        )

    @classmethod
    def budget_overrides(
        cls, config: Any, images_per_class: int, num_classes: int, distill: DistillConfig
    ) -> dict[str, Any]:
        """``images_per_class · K`` images over the run's g-loops (warm-up included: ``batch_size`` images each;
        exact when the loops divide the images, which the presets arrange), and per round the student steps of one
        pass over them, so rounds × kd_steps equals an offline method's epochs × ⌈images / batch⌉."""
        images = images_per_class * num_classes
        return {
            "batch_size": max(2, math.ceil(images / cls.loops(config, distill.epochs))),
            "kd_steps": math.ceil(images / distill.batch_size),
        }


class _NAYERSynthesizer(Synthesizer):
    """One unit per epoch (unit 0 = the warm-up calls and call ``warmup``; unit e = call ``warmup + e``). What carries
    over between calls is the state: the generator (its weights and BN buffers), the BN loss's EMA, the call counter
    and the generator steps so far. Adam is created anew for every g-loop (as released), so no optimiser state
    carries over; the LTE is a constant, reloaded from its digest-checked cache."""

    def __init__(self, cfg: NAYER.Config, ctx: BuildContext):
        self.cfg = cfg
        self.teacher = ctx.teacher
        self.spec = ctx.spec
        self.device = ctx.device
        self.seed = ctx.seed
        self.epochs = ctx.distill.epochs
        path = embeddings_path(ctx.spec, cfg.clip_model, cfg.clip_pretrained, cfg.prompt)
        fix = (
            f"or copy {path.name} and {path.with_suffix('.json').name} into {path.parent} from a machine that made "
            "them, or set nayer.clip_model=tiny for a random text tower (a smoke run, not NAYER's embeddings)"
        )
        self.lte = label_text_embeddings(ctx.spec, cfg.clip_model, cfg.clip_pretrained, cfg.prompt, fix=fix)
        self.ema = BNMomentum(cfg.bn_momentum)
        self.generator: NLGenerator | None = None  # made at call 0 (the renewal condition holds there)
        self.calls = 0  # synthesis calls done (the released ``ep``)
        self.generator_steps = 0  # Adam steps of the generator so far

    # -- the plan: one unit per epoch ---------------------------------------------------------------
    def _calls_of(self, index: int) -> range:
        w = self.cfg.warmup
        return range(0, w + 1) if index == 0 else range(w + index, w + index + 1)

    def _loops_of(self, call: int) -> int:
        return self.cfg.gwp_loops if call < self.cfg.warmup else self.cfg.g_loops

    def plan(self) -> list[SynthesisUnit]:
        units = []
        for e in range(self.epochs):
            uid = f"e{e:05d}"
            calls = self._calls_of(e)
            size = self.cfg.batch_size * sum(self._loops_of(c) for c in calls)
            info = {"calls": [calls.start, calls.stop]}
            units.append(SynthesisUnit(uid, e, unit_seed(self.seed, uid), size=size, info=info))
        return units

    # -- pieces ---------------------------------------------------------------------------------------
    def _new_generator(self) -> NLGenerator:
        c = self.cfg
        return NLGenerator(self.lte.tensor, c.batch_size, c.le_emb_size, self.spec.input_size, c.ngf).to(self.device)

    def _labels(self, g: torch.Generator) -> Tensor:
        """Balanced, class-ordered: [0..K−1] × ⌊B / K⌋, then B mod K random classes (``nayer.py:259-272``)."""
        b, k = self.cfg.batch_size, self.spec.num_classes
        rest = torch.randint(0, k, (b % k,), generator=g)  # (B mod K,)
        return torch.cat([torch.arange(k).repeat(b // k), rest]).to(self.device)  # (B,)

    def _augment(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Per image: RandomCrop(S, padding) with zero fill, then a horizontal flip with p = ½ (kornia's, as
        released), then the data set's normalisation. x (B, 3, S, S) in [0, 1] → normalised (B, 3, S, S)."""
        b, _, s, _ = x.shape
        pad = self.cfg.crop_padding
        if pad:
            offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=g).to(x.device)  # (B, 2) top, left
            padded = F.pad(x, (pad, pad, pad, pad))  # (B, 3, S + 2p, S + 2p)
            ramp = torch.arange(s, device=x.device)
            rows = offsets[:, :1] + ramp  # (B, S)
            cols = offsets[:, 1:] + ramp  # (B, S)
            batch = torch.arange(b, device=x.device)[:, None, None]  # (B, 1, 1)
            x = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, S, S, 3) → (B, 3, S, S)
        if self.cfg.flip:
            flip = (torch.rand(b, generator=g) < 0.5).to(x.device)  # (B,)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return self.spec.normalize(x)

    # -- one unit ---------------------------------------------------------------------------------------
    def generate(self, unit: SynthesisUnit, student: nn.Module | None = None) -> SynthesisOutput:
        cfg = self.cfg
        calls = self._calls_of(unit.index)
        if self.calls != calls.start:
            raise RuntimeError(
                f"NAYER unit {unit.id} continues from call {calls.start}, but the synthesizer has made {self.calls} "
                "calls: generate the units in plan order, or load the state saved with the unit before it"
            )
        was_training = student.training if student is not None else False
        images, labels, call_of = [], [], []
        logs: dict[str, float] = {}
        steps = 0
        try:
            with BNStatistics(self.teacher, ema=self.ema) as bn:
                for call in calls:
                    if (call - cfg.warmup) % cfg.g_life == 0 or call % cfg.g_life == 0:  # nayer.py:154-155
                        with torch.random.fork_rng(devices=[]):  # PyTorch's default init, from this call's seed
                            torch.manual_seed(unit_seed(self.seed, f"nayer-generator-{call}"))
                            self.generator = self._new_generator()
                    use_adv = cfg.adv_weight > 0 and call >= cfg.warmup and student is not None
                    if student is not None:
                        student.eval()  # as released (nayer.py:149): the adversary sees its running statistics
                    for loop in range(self._loops_of(call)):
                        if loop and student is not None and cfg.student_mode == "released":
                            student.train()  # released: S.train() at the end of every g-loop
                        g = torch.Generator().manual_seed(unit_seed(self.seed, f"nayer-call{call}-loop{loop}"))
                        x, y, logs = self._g_loop(bn, g, student if use_adv else None)
                        images.append(x)
                        labels.append(y)
                        call_of.append(torch.full((len(y),), call, dtype=torch.int64))
                        steps += cfg.g_steps
                    self.calls = call + 1
        finally:
            if student is not None:
                student.train(was_training)
        self.generator_steps += steps
        return SynthesisOutput(
            images=torch.cat(images),  # (N, 3, S, S) in [0, 1]
            labels=torch.cat(labels),  # (N,)
            extras={"call": torch.cat(call_of)},  # the released epoch each image was made in (warm-up < warmup)
            logs=logs,
            generator_steps=steps,
        )

    def _g_loop(
        self, bn: BNStatistics, g: torch.Generator, student: nn.Module | None
    ) -> tuple[Tensor, Tensor, dict[str, float]]:
        """One g-loop (spec §8.3, ``nayer.py:147-243``): new noisy layers, a new Adam over the whole generator,
        ``g_steps`` steps; returns the lowest-loss iterate's images (B, 3, S, S) on the CPU, its labels (B,) and the
        last losses. Then the BN loss's EMA takes in this loop's last batch statistics (``update_mmt``)."""
        cfg, gen = self.cfg, self.generator
        assert gen is not None
        gen.train()
        gen.reinit_noisy(g)
        y = self._labels(g)  # (B,)
        params = list(gen.parameters())
        opt = torch.optim.Adam(params, lr=cfg.lr_g, betas=tuple(cfg.betas))
        best_loss, best_x = math.inf, None
        for _ in range(cfg.g_steps):
            x = gen(y)  # (B, 3, S, S) in [0, 1]
            xa = self._augment(x, g)  # (B, 3, S, S) normalised
            t = self.teacher(xa)  # (B, K)
            loss_bn = bn.loss()
            loss_oh = F.cross_entropy(t, y)
            loss = cfg.bn_weight * loss_bn + cfg.ce_weight * loss_oh
            loss_adv = torch.zeros((), device=t.device)
            if student is not None:
                loss_adv = adversarial_disagreement(student(xa), t)
                loss = loss + cfg.adv_weight * loss_adv
            if (value := loss.item()) < best_loss:  # the iterate scored, before this step changes the generator
                best_loss, best_x = value, x.detach()
            opt.zero_grad(set_to_none=True)
            loss.backward(inputs=params)  # the generator only: no gradient lands on the student or the teacher
            opt.step()
        self.ema.update()
        logs = {"bn": loss_bn.item(), "oh": loss_oh.item(), "adv": loss_adv.item(), "loss": best_loss}
        assert best_x is not None
        return best_x.cpu(), y.cpu(), logs

    # -- identity and state -------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {"input_size": self.spec.input_size, "epochs": self.epochs, "label_embeddings": self.lte.sha256[:16]}

    @property
    def units_independent(self) -> bool:
        return False  # the generator, the BN EMA and the call counter carry over from unit to unit

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": None if self.generator is None else self.generator.state_dict(),
            "bn_ema": self.ema.state_dict(),
            "calls": self.calls,
            "generator_steps": self.generator_steps,
            "label_embeddings": self.lte.sha256,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["label_embeddings"] != self.lte.sha256:
            raise UserError(
                f"the stored NAYER state was made with other label-text embeddings than {self.lte.path}: delete "
                "the run's synthetic store (or restore the embeddings file it was made with) and run again"
            )
        self.generator = None
        if state["generator"] is not None:
            self.generator = self._new_generator()
            self.generator.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["bn_ema"])
        # BNMomentum.load_state_dict keeps the CPU copies; update() mixes them with this device's statistics
        self.ema.stats = {k: (m.to(self.device), v.to(self.device)) for k, (m, v) in self.ema.stats.items()}
        self.calls = int(state["calls"])
        self.generator_steps = int(state["generator_steps"])
