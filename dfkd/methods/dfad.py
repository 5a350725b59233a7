"""DFAD — Fang, Song, Wang, Shen, Wang, Song, "Data-Free Adversarial Distillation", arXiv 1912.11006.

A generator G and the student S play a min-max game on the teacher f's logits with the L1 distance (Eq. 3–4 of the
paper; ``shared/spec/classic-baselines.md`` §4)::

    student:    min_S  mean|S(x) − f(x)|,        x = G(z) (fresh, G in eval mode)
    generator:  min_G −mean|S(G(z)) − f(G(z))|   (the images where the student is furthest from the teacher)

Shape ``in_loop`` (``dfkd/methods/generative.py``). Defaults from the community benchmark's script
(``FAST:scripts/dfad_cifar.sh``; the CMI repo has none): LargeGenerator nz 256, Adam 1e-3 (0.5, 0.999), one generator
step then 5 student steps, L1 student loss (``student_loss: l1``; ``kl`` trains the student with the run's KD recipe
instead, as the matched protocol does for every method). The original (``DFAD_cifar.py:17-46``) takes the 5
student steps before the generator step and uses its Tanh+BN generator (``generator: dafl``) with Adam betas
(0.9, 0.999); the order is the pack's here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dfkd.errors import ConfigError
from dfkd.methods.base import BuildContext, Distiller, KDDistiller, MethodCard, Synthesizer
from dfkd.methods.generative import GenerativeSynthesizer, InLoopMethod, Scored
from dfkd.synthesis.losses import adversarial_l1


class L1Distiller(Distiller):
    """DFAD's student loss: mean|S(x) − f(x)| over the logits (``nn.L1Loss()``)."""

    def __init__(self, teacher: nn.Module):
        self.teacher = teacher

    def loss(self, student: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor | float]]:
        s = student(images).float()  # (B, K)
        with torch.no_grad():
            t = self.teacher(images).float()  # (B, K)
        l1 = (s - t).abs().mean()
        return l1, {"l1": l1.detach()}


class DFAD(InLoopMethod):
    @dataclass(frozen=True)
    class Config:
        generator: str = "large"  # small | large (pack) | dafl (the original's GeneratorA layout)
        nz: int = 256  # latent size ("nz")
        ngf: int = 64  # generator width ("ngf"; 64 in every published generator)
        lr_g: float = 1e-3  # generator Adam learning rate ("lr_g")
        betas_g: tuple[float, float] = (0.5, 0.999)  # generator Adam betas (pack; the original's are 0.9, 0.999)
        g_steps: int = 1  # generator steps per update ("g_steps")
        kd_steps: int = 5  # student steps per generator update ("kd_steps")
        steps_per_epoch: int = 400  # student steps per epoch ("ep_steps")
        synthesis_batch_size: int | None = None  # generator batch; None = distill.batch_size ("synthesis_batch_size")
        adv_weight: float = 1.0  # weight of −mean|S − T| in the generator's loss ("adv")
        student_loss: str = "l1"  # l1: mean|S − T| as published | kl: the run's KD recipe (distill.temperature)
        sample_images: int = 500  # images of the final generator stored for diagnose and the report

    card = MethodCard(
        title="Data-Free Adversarial Distillation",
        authors="Fang, Song, Wang, Shen, Wang, Song",
        year=2019,
        arxiv="1912.11006",
        summary="A generator searches for the images where the student's logits are furthest (L1) from the teacher's.",
        reconstructed="Community-benchmark order: the generator step comes before the student steps.",
    )

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        if self.config.student_loss not in ("l1", "kl"):
            raise ConfigError(f"dfad.student_loss must be l1 or kl, got {self.config.student_loss!r}")

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        c = self.config

        def loss(s: Scored) -> tuple[Tensor, dict[str, float]]:
            adv = adversarial_l1(s.student_logits, s.teacher_logits)
            return c.adv_weight * adv, {"adv": float(adv.detach())}

        return GenerativeSynthesizer(c, ctx, loss, needs_student=True)

    def build_distiller(self, ctx: BuildContext) -> Distiller:
        return L1Distiller(ctx.teacher) if self.config.student_loss == "l1" else KDDistiller(ctx.teacher, ctx.distill)
