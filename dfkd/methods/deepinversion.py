"""DeepInversion — Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion",
CVPR 2020, arXiv 1912.08795.

Pixels x of a batch with target classes y are optimised with Adam so the frozen teacher f
classifies them as y and their batch statistics match the teacher's BatchNorm running statistics
(Eq. 3–4 of the paper)::

    L(x) = ce · CE(f(x̃), y) + bn · Σ_l ‖σ²_l(x̃) − σ²_l‖₂ + ‖μ_l(x̃) − μ_l‖₂
           + tv_l2 · TV₂(x̃) + tv_l1 · TV₁(x̃) + l2 · ‖x̃‖₂ + adv · L_adv(s(x̃), f(x̃))

where x̃ is x after a random jitter (roll by up to ``jitter``·size pixels) and horizontal flip, and
``L_adv`` is the optional competition term with the student (Adaptive DeepInversion; here in the
decision-adversarial form of Fast/CMI). x lives in the teacher's normalised space and is clamped to
the valid range after every step.

Shape: **online**, as in the community DFKD benchmark (CMI / Fast-Datafree): epoch e first inverts
one batch (unit e, added to a growing pool = the synthetic store), then trains the student for
``kd_steps`` steps on the pool. The adversarial term therefore always sees the current student.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dfkd.config import DistillConfig, check_choices, check_positive_ints
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
from dfkd.synthesis.losses import BNStatistics, adversarial_disagreement, adversarial_js, total_variation


class DeepInversion(Method):
    @dataclass(frozen=True)
    class Config:
        batch_size: int = 256  # images inverted per epoch ("synthesis_batch_size")
        iterations: int = 2000  # Adam steps per batch ("g_steps"; the published table's "2k iters")
        lr: float = 0.1  # Adam learning rate on the pixels ("lr_g")
        betas: tuple[float, float] = (0.5, 0.99)  # Adam betas
        bn_weight: float = 10.0  # BN-statistics term ("bn" / "r_feature")
        ce_weight: float = 1.0  # cross-entropy to the target class ("oh")
        adv_weight: float = 0.0  # student competition (ADI); 0 = plain DeepInversion ("adv")
        adv_loss: str = "dad"  # dad: decision-adversarial KL of Fast/CMI | js: −JS at adv_temperature (CMI pack)
        adv_temperature: float = 3.0  # T of the js form (CMI deepinversion.py:89: jsdiv(s, t, T=3))
        tv_l2_weight: float = 1e-4  # ℓ2 total variation ("di_var_scale")
        tv_l1_weight: float = 0.0  # ℓ1 total variation
        l2_weight: float = 1e-5  # ℓ2 norm of the image ("di_l2_scale")
        jitter: float = 0.125  # max random roll as a fraction of the side (±size/8)
        flip: bool = True  # random horizontal flip of the whole batch each step
        priors_on: str = "jittered"  # jittered: TV/ℓ2 on the jittered batch | raw: on x itself (CMI pack)
        keep: str = "final"  # final: the last iterate | best: the iterate with the lowest loss (CMI pack)
        kd_steps: int = 400  # student steps per epoch on the pool ("kd_steps")

    card = MethodCard(
        title="Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion",
        authors="Yin, Molchanov, Li, Alvarez, Mallya, Hoiem, Jha, Kautz",
        year=2020,
        arxiv="1912.08795",
        venue="CVPR 2020",
        summary="Invert the teacher: optimise pixels for its class and its BatchNorm statistics.",
        reconstructed="Run in the online pool shape of the community benchmark; adv uses the Fast/CMI form.",
    )
    shape = POOL

    smoke = (
        "iterations=2",
        "batch_size=8",
        "kd_steps=1",
    )

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        c = self.config
        check_choices(
            c, "deepinversion.", adv_loss=("dad", "js"), priors_on=("jittered", "raw"), keep=("final", "best")
        )
        check_positive_ints(c, "deepinversion.", "batch_size", "iterations", "kd_steps")

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        return _DeepInversionSynthesizer(self.config, ctx)

    def kd_steps_per_epoch(self) -> int:
        return self.config.kd_steps

    # -- budget: one inverted batch and kd_steps student steps per epoch -----------------------------
    @classmethod
    def budget(cls, config: Any, num_classes: int, distill: DistillConfig) -> Budget:
        return Budget(images=config.batch_size * distill.epochs, kd_steps=config.kd_steps * distill.epochs)

    @classmethod
    def budget_overrides(
        cls, config: Any, images_per_class: int, num_classes: int, distill: DistillConfig
    ) -> dict[str, Any]:
        """``images_per_class · K`` images over ``epochs`` rounds, and per round the steps of one pass over
        them, so rounds × kd_steps equals an offline method's epochs × ⌈images / batch⌉."""
        images = images_per_class * num_classes
        return {
            "batch_size": math.ceil(images / distill.epochs),
            "kd_steps": math.ceil(images / distill.batch_size),
        }


class _DeepInversionSynthesizer(Synthesizer):
    def __init__(self, cfg: DeepInversion.Config, ctx: BuildContext):
        self.cfg = cfg
        self.teacher = ctx.teacher
        self.spec = ctx.spec
        self.device = ctx.device
        self.seed = ctx.seed
        self.epochs = ctx.distill.epochs
        s = ctx.spec.input_size
        mean = torch.tensor(ctx.spec.mean, device=ctx.device).view(1, 3, 1, 1)
        std = torch.tensor(ctx.spec.std, device=ctx.device).view(1, 3, 1, 1)
        self.lo, self.hi = (0 - mean) / std, (1 - mean) / std  # valid range in normalised space
        self.size = s

    def plan(self) -> list[SynthesisUnit]:
        units = []
        for e in range(self.epochs):
            uid = f"e{e:05d}"
            units.append(SynthesisUnit(uid, e, unit_seed(self.seed, uid), size=self.cfg.batch_size))
        return units

    def generate(self, unit: SynthesisUnit, student: nn.Module | None = None) -> SynthesisOutput:
        cfg = self.cfg
        g = torch.Generator(device="cpu").manual_seed(unit.seed)
        k = self.spec.num_classes
        labels = (torch.arange(unit.size) % k)[torch.randperm(unit.size, generator=g)]  # balanced, shuffled
        labels = labels.to(self.device)
        x = torch.randn(unit.size, 3, self.size, self.size, generator=g).to(self.device)  # (B, 3, S, S) normalised
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=cfg.lr, betas=cfg.betas)
        use_adv = cfg.adv_weight > 0 and student is not None
        if use_adv:
            was_training = student.training
            student.eval()
        max_shift = int(cfg.jitter * self.size)
        logs: dict[str, float] = {}
        best_loss, best_x = float("inf"), x.detach().clone()
        with BNStatistics(self.teacher) as bn:
            for _ in range(cfg.iterations):
                dx, dy = torch.randint(-max_shift, max_shift + 1, (2,), generator=g).tolist() if max_shift else (0, 0)
                xj = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
                if cfg.flip and torch.rand((), generator=g).item() < 0.5:
                    xj = xj.flip(3)
                t_logits = self.teacher(xj)  # (B, K)
                loss_bn = bn.loss()
                loss_ce = F.cross_entropy(t_logits, labels)
                prior_input = xj if cfg.priors_on == "jittered" else x  # CMI pack: TV and ℓ2 on the raw inputs
                tv_l2, tv_l1 = total_variation(prior_input)
                loss = (
                    cfg.bn_weight * loss_bn
                    + cfg.ce_weight * loss_ce
                    + cfg.tv_l2_weight * tv_l2
                    + cfg.tv_l1_weight * tv_l1
                    + cfg.l2_weight * torch.linalg.vector_norm(prior_input)
                )
                if use_adv:
                    s_logits = student(xj)  # (B, K)
                    if cfg.adv_loss == "js":
                        adv = adversarial_js(s_logits, t_logits, cfg.adv_temperature)
                    else:
                        adv = adversarial_disagreement(s_logits, t_logits)
                    loss = loss + cfg.adv_weight * adv
                if cfg.keep == "best" and (value := loss.item()) < best_loss:  # the iterate scored, before the step
                    best_loss, best_x = value, x.detach().clone()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.copy_(torch.maximum(torch.minimum(x, self.hi), self.lo))
            logs = {"bn": loss_bn.item(), "ce": loss_ce.item()}
        if cfg.keep == "final":
            best_x = x.detach()
        if use_adv:
            student.train(was_training)
        images = self.spec.denormalize(best_x).clamp(0, 1)  # (B, 3, S, S) in [0, 1]
        return SynthesisOutput(images=images, labels=labels.cpu(), logs=logs, generator_steps=self.cfg.iterations)

    def identity(self) -> dict:
        return {"input_size": self.size, "epochs": self.epochs}
