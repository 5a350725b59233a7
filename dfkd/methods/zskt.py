"""ZSKT — Micaelli & Storkey, "Zero-shot Knowledge Transfer via Adversarial Belief Matching", NeurIPS 2019,
arXiv 1905.09768.

A generator searches for images where the student disagrees with the teacher (maximises KL(f ‖ S)); the student
then matches the teacher on them (``shared/spec/classic-baselines.md`` §3)::

    generator:  min_G −KL(softmax(f(x)) ‖ softmax(S(x))),  x = G(z)
    student:    min_S  KL(softmax(f(x)/T) ‖ softmax(S(x)/T))·T² + β·L_at(x)   on fresh batches (β = at_weight, 0)

Shape ``in_loop`` (``dfkd/methods/generative.py``). Defaults from the community benchmark's script
(``CMI:scripts/zskt/zskt_cifar10_wrn402_wrn161.sh``): LargeGenerator nz 256, Adam 1e-3 (0.5, 0.999), one
generator step then 5 student steps, adv 1, student KL at T = 1 (the pack's ``--T 20`` is overwritten,
``datafree_kd.py:239 vs 259``; the published profile sets ``distill.temperature: 1``).

The original's attention transfer is a switch, ``at_weight`` (β; 250 in ``ZSKT:main.py`` / ``solver.py:200-243``,
0 by default as in the pack): the student loss gains β·Σ_l mean((a_S,l − a_T,l)²) over the residual stages' outputs
(the 3 WRN blocks), with a = normalize(mean_c x²) over H·W (``dfkd.distill.losses.ATDistiller``); teacher and
student need stages that pair up (equal count and spatial sizes). Its KD term is the pack's batch-mean KL, K times
the original's element-mean one. Not reproduced: the original's own generator, Adam student, and 10 student steps
on the generator's batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from dfkd.config import check_finite
from dfkd.distill.losses import ATDistiller
from dfkd.errors import ConfigError
from dfkd.methods.base import BuildContext, Distiller, KDDistiller, MethodCard, Synthesizer
from dfkd.methods.generative import GenerativeSynthesizer, InLoopMethod, Scored
from dfkd.synthesis.losses import adversarial_kl


class ZSKT(InLoopMethod):
    @dataclass(frozen=True)
    class Config:
        generator: str = "large"  # small | large (pack) | dafl (a Tanh+BN layout)
        nz: int = 256  # latent size ("nz")
        ngf: int = 64  # generator width ("ngf"; 64 in every published generator)
        lr_g: float = 1e-3  # generator Adam learning rate ("lr_g")
        betas_g: tuple[float, float] = (0.5, 0.999)  # generator Adam betas (CMI generative.py:40)
        g_steps: int = 1  # generator steps per update ("g_steps")
        kd_steps: int = 5  # student steps per generator update ("kd_steps")
        steps_per_epoch: int = 400  # student steps per epoch ("ep_steps")
        synthesis_batch_size: int | None = None  # generator batch; None = distill.batch_size ("synthesis_batch_size")
        adv_weight: float = 1.0  # weight of −KL(t ‖ s) in the generator's loss ("adv")
        at_weight: float = 0.0  # β of the original's attention transfer (250 in ZSKT main.py / solver.py); 0 = pack
        sample_images: int = 500  # images of the final generator stored for diagnose and the report

    card = MethodCard(
        title="Zero-shot Knowledge Transfer via Adversarial Belief Matching",
        authors="Micaelli, Storkey",
        year=2019,
        arxiv="1905.09768",
        venue="NeurIPS 2019",
        summary="A generator searches for images where student and teacher disagree; the student matches the teacher.",
        reconstructed=(
            "Community-benchmark form: one generator step per 5 student steps, no attention transfer by default "
            "(at_weight=250 adds the original's); the original's generator, Adam student and 10 student steps on "
            "the generator's batch are not reproduced."
        ),
    )

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        check_finite(self.config, "zskt.", "at_weight")
        if self.config.at_weight < 0:
            raise ConfigError(f"zskt.at_weight must be ≥ 0 (0 = no attention transfer), got {self.config.at_weight!r}")

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        c = self.config

        def loss(s: Scored) -> tuple[Tensor, dict[str, float]]:
            adv = adversarial_kl(s.student_logits, s.teacher_logits)
            return c.adv_weight * adv, {"adv": float(adv.detach())}

        return GenerativeSynthesizer(c, ctx, loss, needs_student=True)

    def build_distiller(self, ctx: BuildContext) -> Distiller:
        """KD as every method; with ``at_weight`` > 0 plus the original's attention transfer on the same batch."""
        if self.config.at_weight == 0:
            return KDDistiller(ctx.teacher, ctx.distill)
        return ATDistiller(ctx.teacher, ctx.student, ctx.distill, self.config.at_weight)
