"""DFQ (as packaged by the community benchmark) — Choi, Choi, El-Khamy, Lee, "Data-Free Network Quantization With
Adversarial Knowledge Distillation", CVPR Workshops 2020, arXiv 2005.04136.

A generator whose images match the teacher's BatchNorm statistics, are confidently and evenly classified, and make
the student disagree with the teacher (``shared/spec/classic-baselines.md`` §5)::

    L_G = bn · Σ_l (‖σ²_l − σ̂²_l‖₂ + ‖μ_l − μ̂_l‖₂) + oh · CE(f(x), argmax f(x))
          + adv · (−KL(f(x) ‖ S(x))) + balance · Σ_c p̄_c ln p̄_c

Shape ``in_loop`` (``dfkd/methods/generative.py``). Defaults from ``CMI:scripts/dfq/dfq_cifar10_wrn402_wrn161.sh``:
LargeGenerator nz 256, Adam 1e-3 (0.5, 0.999), one generator step then 10 student steps, bn 1, oh 1, adv 1,
balance 20, student KL at T = 1 (``--T 20`` is overwritten in the pack; published profile ``distill.temperature: 1``).
Only the single-generator, single-student core of the paper is packaged, and reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from dfkd.methods.base import BuildContext, MethodCard, Synthesizer
from dfkd.methods.generative import GenerativeSynthesizer, InLoopMethod, Scored
from dfkd.synthesis.losses import adversarial_kl, class_balance


class DFQ(InLoopMethod):
    @dataclass(frozen=True)
    class Config:
        generator: str = "large"  # small | large (pack) | dafl (a Tanh+BN layout)
        nz: int = 256  # latent size ("nz")
        ngf: int = 64  # generator width ("ngf"; 64 in every published generator)
        lr_g: float = 1e-3  # generator Adam learning rate ("lr_g")
        betas_g: tuple[float, float] = (0.5, 0.999)  # generator Adam betas (CMI generative.py:40)
        g_steps: int = 1  # generator steps per update ("g_steps")
        kd_steps: int = 10  # student steps per generator update ("kd_steps")
        steps_per_epoch: int = 400  # student steps per epoch ("ep_steps")
        synthesis_batch_size: int | None = None  # generator batch; None = distill.batch_size ("synthesis_batch_size")
        bn_weight: float = 1.0  # BN-statistics loss on the teacher ("bn")
        oh_weight: float = 1.0  # one-hot CE to the teacher's argmax ("oh")
        adv_weight: float = 1.0  # −KL(t ‖ s) ("adv")
        balance_weight: float = 20.0  # Σ p̄ ln p̄ over the batch ("balance")
        sample_images: int = 500  # images of the final generator stored for diagnose and the report

    card = MethodCard(
        title="Data-Free Network Quantization With Adversarial Knowledge Distillation",
        authors="Choi, Choi, El-Khamy, Lee",
        year=2020,
        arxiv="2005.04136",
        venue="CVPR Workshops 2020",
        summary="A BN-statistics-matching, class-balanced generator that also seeks student-teacher disagreement.",
        reconstructed="The community benchmark's single-generator, single-student KD core (no quantisation).",
    )

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        c = self.config

        def loss(s: Scored) -> tuple[Tensor, dict[str, float]]:
            t = s.teacher_logits  # (B, K)
            bn = s.bn.loss() if s.bn is not None else t.new_zeros(())
            oh = F.cross_entropy(t, t.argmax(1))
            adv = adversarial_kl(s.student_logits, t)
            ie = class_balance(t)
            total = c.bn_weight * bn + c.oh_weight * oh + c.adv_weight * adv + c.balance_weight * ie
            return total, {"bn": float(bn.detach()), "oh": float(oh.detach()), "adv": float(adv.detach())}

        return GenerativeSynthesizer(c, ctx, loss, needs_student=True, needs_bn=c.bn_weight != 0)
