"""DAFL — Chen et al., "Data-Free Learning of Student Networks", ICCV 2019, arXiv 1904.01186.

A generator G is trained so the frozen teacher f finds its images confidently classified (one-hot), strongly
activated, and balanced over the classes (information entropy); the student learns by KD on G's images (Eq. 6–9
of the paper; ``shared/spec/classic-baselines.md`` §2)::

    L_G = oh · CE(f(x), argmax f(x)) + ie · Σ_c p̄_c log p̄_c + a · (−mean|f_T(x)|),   x = G(z)

where p̄ is the batch mean of softmax(f(x)) and f_T the teacher's pooled penultimate features. Shape ``in_loop``
(``dfkd/methods/generative.py``): defaults from the community benchmark's script
(``CMI:scripts/dafl/dafl_cifar10_wrn402_wrn161.sh``): LargeGenerator with nz 512, Adam 1e-3 (0.5, 0.999), 1
generator step then 5 student steps, oh 1, balance 20 (natural log), act 0.001. The original (``DAFL-train.py``)
uses its own Tanh+BN generator (``generator: dafl``, latent 1000, eps 0.8), Adam 0.02, ie 5 in log10
(``balance_log10: true``), a 0.1, and trains the student on the very batch the generator was scored on; the
original's same-batch step is not reproduced (each student step draws a fresh batch, as in the pack). Both
train the student with KL at T = 1 (the pack's ``--T 20`` is overwritten, CMI ``datafree_kd.py:239 vs 259``):
the presets' published profile sets ``distill.temperature: 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from dfkd.methods.base import BuildContext, MethodCard, Synthesizer
from dfkd.methods.generative import GenerativeSynthesizer, InLoopMethod, Scored
from dfkd.synthesis.losses import activation_loss, class_balance


class DAFL(InLoopMethod):
    @dataclass(frozen=True)
    class Config:
        generator: str = "large"  # small | large (CMI pack) | dafl (the original's Tanh+BN layout)
        nz: int = 512  # latent size ("nz = 512 if dafl", CMI datafree_kd.py:256)
        ngf: int = 64  # generator width ("ngf"; 64 in every published generator)
        lr_g: float = 1e-3  # generator Adam learning rate ("lr_g")
        betas_g: tuple[float, float] = (0.5, 0.999)  # generator Adam betas (CMI generative.py:40)
        g_steps: int = 1  # generator steps per update ("g_steps")
        kd_steps: int = 5  # student steps per generator update ("kd_steps")
        steps_per_epoch: int = 400  # student steps per epoch ("ep_steps")
        synthesis_batch_size: int | None = None  # generator batch; None = distill.batch_size ("synthesis_batch_size")
        oh_weight: float = 1.0  # one-hot CE to the teacher's argmax ("oh")
        balance_weight: float = 20.0  # information entropy Σ p̄ log p̄ ("balance"; "ie" in the original)
        balance_log10: bool = False  # log10 as in the original DAFL (ie 5 there); natural log in the pack
        act_weight: float = 0.001  # −mean|penultimate features| ("act"; "a" in the original)
        sample_images: int = 500  # images of the final generator stored for diagnose and the report

    card = MethodCard(
        title="Data-Free Learning of Student Networks",
        authors="Chen, Wang, Xu, Yang, Liu, Shi, Xu, Xu, Tian",
        year=2019,
        arxiv="1904.01186",
        venue="ICCV 2019",
        summary="A generator the teacher classifies confidently, activates strongly and spreads over the classes.",
        reconstructed="Community-benchmark form: fresh batch per student step (the original reuses the scored batch).",
    )

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        c = self.config

        def loss(s: Scored) -> tuple[Tensor, dict[str, float]]:
            t = s.teacher_logits  # (B, K)
            oh = F.cross_entropy(t, t.argmax(1))
            ie = class_balance(t, log10=c.balance_log10)
            act = activation_loss(s.features)
            terms = {"oh": float(oh.detach()), "ie": float(ie.detach()), "act": float(act.detach())}
            return c.oh_weight * oh + c.balance_weight * ie + c.act_weight * act, terms

        return GenerativeSynthesizer(c, ctx, loss, needs_features=c.act_weight != 0)
