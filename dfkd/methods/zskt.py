"""ZSKT — Micaelli & Storkey, "Zero-shot Knowledge Transfer via Adversarial Belief Matching", NeurIPS 2019,
arXiv 1905.09768.

A generator searches for images where the student disagrees with the teacher (maximises KL(f ‖ S)); the student
then matches the teacher on them (``shared/spec/classic-baselines.md`` §3)::

    generator:  min_G −KL(softmax(f(x)) ‖ softmax(S(x))),  x = G(z)
    student:    min_S  KL(softmax(f(x)/T) ‖ softmax(S(x)/T))·T²   on fresh batches

Shape ``in_loop`` (``dfkd/methods/generative.py``). Defaults from the community benchmark's script
(``CMI:scripts/zskt/zskt_cifar10_wrn402_wrn161.sh``): LargeGenerator nz 256, Adam 1e-3 (0.5, 0.999), one
generator step then 5 student steps, adv 1, student KL at T = 1 (the pack's ``--T 20`` is overwritten,
``datafree_kd.py:239 vs 259``; the published profile sets ``distill.temperature: 1``). Not reproduced: the
original's attention-transfer term (β 250 on the WRN block outputs), its own generator and Adam student.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from dfkd.methods.base import BuildContext, MethodCard, Synthesizer
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
        sample_images: int = 500  # images of the final generator stored for diagnose and the report

    card = MethodCard(
        title="Zero-shot Knowledge Transfer via Adversarial Belief Matching",
        authors="Micaelli, Storkey",
        year=2019,
        arxiv="1905.09768",
        venue="NeurIPS 2019",
        summary="A generator searches for images where student and teacher disagree; the student matches the teacher.",
        reconstructed="Community-benchmark form: no attention transfer, one generator step per 5 student steps.",
    )

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        c = self.config

        def loss(s: Scored) -> tuple[Tensor, dict[str, float]]:
            adv = adversarial_kl(s.student_logits, s.teacher_logits)
            return c.adv_weight * adv, {"adv": float(adv.detach())}

        return GenerativeSynthesizer(c, ctx, loss, needs_student=True)
