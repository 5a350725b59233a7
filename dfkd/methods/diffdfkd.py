"""DiffDFKD — Qi et al., "Data-free Knowledge Distillation with Diffusion Models", ICME 2025, arXiv 2504.00870.

A frozen text-to-image latent diffusion model (Stable Diffusion v1.5) samples from a class-agnostic
prompt ("A realistic photo."). At every denoising step but the last, the predicted clean latent is
decoded, shown to the frozen teacher f, and a DeepInversion-style loss is back-propagated through
the teacher, the VAE decoder **and the U-Net** to the noisy latent, which takes one gradient step
of size 1 before the scheduler's step::

    ε      = ε_u + s·(ε_c − ε_u)                                  (one batched CFG U-Net call on z_t)
    x̂0     = (z_t − sqrt(1−ᾱ_t)·ε) / sqrt(ᾱ_t);   x = normalise(resize(D(x̂0)))
    L      = Σ_i bn·L_bn(f, x_i) + ce·CE(f(x_i), y) + adv·L_adv(s(x_i), f(x_i))     (per trajectory, summed)
    z_t    ← z_t − ∇_{z_t} L
    z_t    ← LatentCutMix(z_t)                         at i % (N//5) == 0, 0 < i < N−1
    z_{t−1} = scheduler.step(ε'(z_t), t, z_t)          ε' from a second U-Net pass on the updated z_t

``L_bn`` is the BatchNorm-statistics loss (Yin et al. 2020) on each image's own feature statistics, ``L_adv`` the
decision-adversarial term of Fast/CMI against an online student. The released code guides one latent at a time;
summing per-image terms gives every trajectory that same step whatever the batch (batching buys speed and CutMix
partners only). Images kept per trajectory: the x̂0 decodes the guidance scored at the N//5 cadence (4, before
that step's update, the released order) and the final decode of z_0 (1).

Follows the paper's pipeline figure where the released code differs (see docs/methods/diffdfkd.md):
x̂0 is computed WITH gradient (the released code's ``no_grad`` leaves the latent unguided), batches
hold ≥ 2 latents of one class (the released batch of 1 makes CutMix a no-op), the final image is the
decode of z_0, labels are class indices (not lexicographic folder order).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfkd.config import DistillConfig
from dfkd.errors import ConfigError
from dfkd.methods.base import (
    Budget,
    BuildContext,
    KDDistiller,
    Method,
    MethodCard,
    SynthesisOutput,
    SynthesisUnit,
    Synthesizer,
    offline_kd_steps,
)
from dfkd.synthesis.diffusion import GeneratorConfig
from dfkd.synthesis.losses import BNStatistics, adversarial_disagreement, resize_for_teacher
from dfkd.synthesis.sampling import get_backend, teacher_view, trajectory_units
from dfkd.synthesis.store import SyntheticStore


def latent_cutmix(
    latents: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Latent CutMix (DiffDFKD): paste one random box between the latents of a same-class batch.

    λ₀ ~ Beta(1, 1); λ ~ Beta(λ₀, λ₀); a box with centre uniform in the latent and sides
    W·sqrt(1−λ) × H·sqrt(1−λ) (at least 1×1), clipped to the latent; latent i's box is replaced by
    the same box of its partner. Partners follow a random cyclic derangement of the batch, so no
    latent is its own partner (a plain permutation leaves fixed points unmixed: with B = 2 half the
    calls would do nothing). All latents share the class, so labels are unchanged.

    Args:
        latents: (B, C, H, W), B ≥ 2.
        generator: torch RNG for reproducibility.
    Returns:
        (mixed latents (B, C, H, W), box (y0, y1, x0, x1)).
    Raises:
        ValueError: for B < 2 — mixing a latent with itself is a silent no-op, which is a bug.
    """
    b, _, h, w = latents.shape
    if b < 2:
        raise ValueError(
            "latent_cutmix needs at least 2 latents of the same class (got 1): raise the batch size per class"
        )
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    rng = np.random.default_rng(seed)
    lam0 = rng.beta(1.0, 1.0)
    lam = rng.beta(lam0, lam0)
    ratio = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = max(1, int(h * ratio)), max(1, int(w * ratio))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
    order = torch.from_numpy(rng.permutation(b))  # (B,)
    partner = torch.empty(b, dtype=torch.long)
    partner[order] = order.roll(-1)  # cyclic derangement: order[k] takes from order[k+1]
    mixed = latents.clone()
    mixed[:, :, y0:y1, x0:x1] = latents[partner.to(latents.device), :, y0:y1, x0:x1]
    return mixed, (y0, y1, x0, x1)


def guided_update(z: Tensor, grad_fn, *, step_size: float = 1.0) -> tuple[Tensor, dict[str, float]]:
    """One DiffDFKD guidance step: z ← z − step_size·∇_z L(z), where ``grad_fn(z)`` returns (L, logs)."""
    z = z.detach().requires_grad_(True)
    loss, logs = grad_fn(z)
    (grad,) = torch.autograd.grad(loss, z)
    return (z - step_size * grad).detach(), {**logs, "loss": float(loss.detach())}


# The online adversary's KD recipe per training session (shared/spec/diffdfkd.md "Online student"; the released
# sessions train 20 epochs): KL at T 30, SGD 0.1 momentum 0.9, wd 5e-4, batch 256, 5 warm-up epochs, cosine to 2e-4.
ONLINE_RECIPE = DistillConfig(
    epochs=20,
    batch_size=256,
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    schedule="cosine",
    min_lr=2e-4,
    warmup_epochs=5,
    temperature=30.0,
    kd_weight=1.0,
    ce_weight=0.0,
)


class DiffDFKD(Method):
    @dataclass(frozen=True)
    class Config:
        generator: GeneratorConfig = field(default_factory=GeneratorConfig)  # diffusion backbone (SD v1.5 default)
        prompt: str = "A realistic photo."  # class-agnostic prompt of the released scripts
        class_prompt: bool = False  # use class_prompt_template instead (the released option)
        class_prompt_template: str = "A realistic photo of {name}."  # {name} = the data set's class name
        negative_prompt: str = ""  # the unconditional prompt of CFG
        num_steps: int = 50  # denoising steps N
        guidance_scale: float = 3.0  # classifier-free guidance scale s ("cfg" in the scripts)
        bn_weight: float = 0.1  # α, BN-statistics loss ("bn")
        ce_weight: float = 1.0  # β, cross-entropy to the target class ("oh")
        adv_weight: float = 0.0  # γ, adversarial term against the online student ("adv"); 0 in released sets
        adv_warmup_rounds: int = 20  # rounds (units) before L_adv switches on ("warmup")
        step_size: float = 1.0  # latent step z ← z − step_size·∇L (the weights act as the step; spec: 1)
        latent_cutmix: bool = True  # Latent CutMix at the N//5 cadence
        keep_intermediate: bool = True  # keep the x̂0 decodes at the N//5 cadence (4) besides the final (1)
        trajectories_per_class: int = 100  # trajectories per class ("100 per class" in the released scripts)
        batch_size: int = 8  # trajectories per batch, all of one class (≥ 2; CutMix and L_bn need it)
        online_every: int = 10  # online student: train it every N rounds on all images so far (released: 10)
        online: DistillConfig = ONLINE_RECIPE  # the online student's KD recipe per session (spec; released code)

    card = MethodCard(
        title="Data-free Knowledge Distillation with Diffusion Models",
        authors="Qi, Li, Peng, Ling, Yu, Chen, Chang, Han, Xiao",
        year=2025,
        arxiv="2504.00870",
        venue="ICME 2025",
        summary="Teacher-guided latent sampling of Stable Diffusion (gradient through U-Net and VAE) + Latent CutMix.",
        reconstructed=(
            "Follows the pipeline figure where the released code is broken (gradient to the latent, batch ≥ 2, "
            "final decode of z_0); CutMix partners form a derangement; online-student epochs are our choice."
        ),
    )

    smoke = (
        "generator={path: tiny, dtype: float32}",
        "num_steps=3",
        "trajectories_per_class=2",
        "batch_size=2",
    )

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        c = self.config
        if c.batch_size < 2:
            raise ConfigError("diffdfkd.batch_size must be ≥ 2: CutMix and the BN loss need ≥ 2 latents per class")
        if c.trajectories_per_class < 2:
            raise ConfigError("diffdfkd.trajectories_per_class must be ≥ 2 (batches hold ≥ 2 latents of one class)")
        if c.num_steps < 2:
            raise ConfigError("diffdfkd.num_steps must be ≥ 2")
        c.online.validate("diffdfkd.online.")

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        return DiffDFKDSynthesizer(self.config, ctx)

    # -- budget: trajectories × images kept per trajectory ------------------------------------------
    @classmethod
    def budget(cls, config: Any, num_classes: int, distill: DistillConfig) -> Budget:
        images = config.trajectories_per_class * kept_per_trajectory(config) * num_classes
        return Budget(images=images, kd_steps=offline_kd_steps(images, distill))

    @classmethod
    def budget_overrides(
        cls, config: Any, images_per_class: int, num_classes: int, distill: DistillConfig
    ) -> dict[str, Any]:
        # a budget that is not a whole number of trajectories rounds up; the run then spends more than the protocol's
        # budget and is recorded as custom, with the difference (dfkd.benchmark.assembly.protocol_deviations)
        return {"trajectories_per_class": max(2, math.ceil(images_per_class / kept_per_trajectory(config)))}


def cadence_steps(num_steps: int) -> frozenset[int]:
    """The guided steps 0 < i < N−1 at the N//5 cadence: where Latent CutMix pastes and, with ``keep_intermediate``,
    where the scored x̂0 is kept (N = 50: 10, 20, 30, 40; N = 10: 2, 4, 6, 8)."""
    cadence = max(1, num_steps // 5)
    return frozenset(i for i in range(1, num_steps - 1) if i % cadence == 0)


def kept_per_trajectory(config: DiffDFKD.Config) -> int:
    """Images one trajectory adds to the store: the x̂0 decodes at the cadence steps when ``keep_intermediate``,
    plus the final decode of z_0 (N = 50 or 10: 4 + 1)."""
    return 1 + (len(cadence_steps(config.num_steps)) if config.keep_intermediate else 0)


class DiffDFKDSynthesizer(Synthesizer):
    def __init__(self, cfg: DiffDFKD.Config, ctx: BuildContext):
        self.cfg = cfg
        self.ctx = ctx
        self.teacher = ctx.teacher
        self.spec = ctx.spec
        self.device = ctx.device
        self.backend = get_backend(cfg.generator, ctx.device)
        self.store: SyntheticStore | None = None
        self._online_student: nn.Module | None = None  # the adversary of the latest session (state_dict)
        self._online_round = -1  # the unit index that session was trained for
        self._initial_student = copy.deepcopy(ctx.student).cpu() if cfg.adv_weight > 0 else None

    # -- plan ---------------------------------------------------------------------------------
    def plan(self) -> list[SynthesisUnit]:
        """Units (class × batch of trajectories). With the online adversary the plan is interleaved by class
        (batch 0 of every class, then batch 1, ...), so each round between two adversary sessions covers every
        class; without it, class by class (unit seeds depend only on the unit id, so the images are the same)."""
        units = trajectory_units(
            self.spec.num_classes, self.cfg.trajectories_per_class, self.cfg.batch_size, self.ctx.seed
        )
        if self.cfg.adv_weight > 0:
            units = sorted(units, key=lambda u: (u.id.split("-b")[1], u.label))
            units = [dataclasses.replace(u, index=k) for k, u in enumerate(units)]
        return units

    def identity(self) -> dict[str, Any]:
        return {"backend": self.backend.identity(), "input_size": self.spec.input_size}

    def attach_store(self, store: SyntheticStore) -> None:
        self.store = store

    # -- state: the online adversary (saved by the runner in the store before each unit's shard) -------
    def state_dict(self) -> dict[str, Any]:
        if self.cfg.adv_weight <= 0:
            return {}
        student = self._online_student.state_dict() if self._online_student is not None else None
        return {"round": self._online_round, "student": student}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or state.get("student") is None:
            return
        student = copy.deepcopy(self._initial_student).to(self.device)
        student.load_state_dict(state["student"])
        self._online_student, self._online_round = student.eval(), int(state["round"])

    @property
    def units_independent(self) -> bool:
        return self.cfg.adv_weight == 0  # the adversary is trained on the units before it

    def prompt_for(self, label: int) -> str:
        if self.cfg.class_prompt:
            return self.cfg.class_prompt_template.format(name=self.spec.class_names[label])
        return self.cfg.prompt

    # -- one unit: a batch of B trajectories of one class ----------------------------------------
    def generate(self, unit: SynthesisUnit, student: nn.Module | None = None) -> SynthesisOutput:
        cfg, be = self.cfg, self.backend
        g = torch.Generator(device="cpu").manual_seed(unit.seed)
        b, y = unit.size, unit.label
        labels = torch.full((b,), y, dtype=torch.long, device=self.device)  # (B,)
        prompt = self.prompt_for(y)
        cond = be.encode_prompts([prompt])  # (1, 77, D), cached
        uncond = be.encode_prompts([cfg.negative_prompt])  # (1, 77, D), cached
        adv_student = self._adversary(unit)

        z = be.initial_latents(b, g)  # (B, c, h, w)
        timesteps = be.timesteps(cfg.num_steps)
        n = len(timesteps)
        cadence = cadence_steps(n)  # CutMix and kept-x̂0 steps (n = num_steps)
        kept: list[tuple[int, Tensor]] = []  # (step index, images (B, 3, S, S))
        logs: dict[str, float] = {}
        scored: dict[str, Tensor] = {}  # the x̂0 decode the guidance pass showed the teacher at this step
        with BNStatistics(self.teacher, per_image=True) as bn:
            for i, t in enumerate(timesteps):
                if i < n - 1:  # guidance at every step but the last

                    def objective(z_t: Tensor, t=t) -> tuple[Tensor, dict[str, float]]:
                        loss, terms, x0 = self.guidance_terms(z_t, t, cond, uncond, labels, bn, adv_student)
                        scored["x0"] = x0.detach()
                        return loss, terms

                    z, logs = guided_update(z, objective, step_size=cfg.step_size)
                    # released order: the kept intermediate is the image scored before this step's update
                    if cfg.keep_intermediate and i in cadence:
                        kept.append((i, resize_for_teacher(scored["x0"], self.spec.input_size).cpu()))
                if cfg.latent_cutmix and i in cadence:
                    z, _ = latent_cutmix(z, g)
                with torch.no_grad():
                    eps = be.predict_noise(z, t, cond, uncond, cfg.guidance_scale)  # second pass, updated z_t
                    z = be.step(eps, t, z, generator=g)
            with torch.no_grad():
                final = be.decode(z)  # decode z_0, (B, 3, H, W)
            kept.append((n, resize_for_teacher(final, self.spec.input_size).cpu()))

        images = torch.cat([imgs for _, imgs in kept])  # (B·k, 3, S, S), grouped by step
        steps = [s for s, imgs in kept for _ in range(len(imgs))]
        first = unit.info.get("first", 0)
        trajectories = [first + j for _ in kept for j in range(b)]
        return SynthesisOutput(
            images=images,
            labels=torch.full((len(images),), y, dtype=torch.long),
            extras={
                "trajectory": torch.tensor(trajectories, dtype=torch.int64),
                "step": torch.tensor(steps, dtype=torch.int64),
                "prompt": [prompt] * len(images),
            },
            logs=logs,
        )

    def guidance_loss(self, *args: Any, **kwargs: Any) -> tuple[Tensor, dict[str, float]]:
        """L(z_t) = Σ_i [bn·L_bn(x_i) + ce·CE(f(x_i), y) (+ adv·L_adv,i)], x = teacher view of D(x̂0(z_t)).

        ``guidance_terms`` without the decoded images (same arguments). Summed over the trajectories, each image's
        BN term on its own statistics (``bn`` must be ``BNStatistics(teacher, per_image=True)``): the gradient on
        one latent is what the released code computes with a batch of one, whatever the batch. Logs are per-image
        means. Differentiable in z_t.
        """
        loss, logs, _ = self.guidance_terms(*args, **kwargs)
        return loss, logs

    def guidance_terms(
        self,
        z_t: Tensor,
        t: Tensor,
        cond: Tensor,
        uncond: Tensor,
        labels: Tensor,
        bn: BNStatistics,
        adversary: nn.Module | None = None,
    ) -> tuple[Tensor, dict[str, float], Tensor]:
        """``guidance_loss`` and the decoded x̂0 images (B, 3, H, W) in [0, 1] it scored."""
        cfg, be = self.cfg, self.backend
        if not bn.per_image:
            raise ValueError("DiffDFKD's guidance needs BNStatistics(teacher, per_image=True) (per-trajectory loss)")
        eps = be.predict_noise(z_t, t, cond, uncond, cfg.guidance_scale)  # (B, c, h, w)
        x0 = be.decode(be.predict_x0(z_t, eps, t))  # (B, 3, H, W) in [0, 1]
        x = teacher_view(x0, self.spec)  # (B, 3, S, S) normalised, float32
        logits = self.teacher(x).float()  # (B, K); the BN hooks collect L_bn during this forward
        loss_bn = bn.loss()  # (B,)
        loss_ce = F.cross_entropy(logits, labels, reduction="none")  # (B,)
        loss = cfg.bn_weight * loss_bn.sum() + cfg.ce_weight * loss_ce.sum()
        logs = {"bn": loss_bn.mean().item(), "ce": loss_ce.mean().item()}
        if adversary is not None:
            loss_adv = adversarial_disagreement(adversary(x).float(), logits)  # batch mean
            loss = loss + cfg.adv_weight * loss_adv * len(x)  # summed like the other terms
            logs["adv"] = loss_adv.item()
        return loss, logs, x0

    # -- the optional online adversary --------------------------------------------------------------
    def _adversary(self, unit: SynthesisUnit) -> nn.Module | None:
        """The online student L_adv disagrees with, or None while adv is off or warming up.

        Every ``online_every`` rounds (units, in plan order) it is trained, warm-started from the previous
        session, on the images of the units before that round with ``cfg.online`` (the spec's recipe). It is
        part of :meth:`state_dict`, which the runner saves in the store before each unit's shard, so a resumed
        synthesis continues with the same adversary; and since a session trains on exactly the units before its
        round, one retrained after a kill is the one an uninterrupted run trained.
        """
        cfg = self.cfg
        if cfg.adv_weight <= 0 or unit.index < cfg.adv_warmup_rounds:
            return None
        if self.store is None:
            raise RuntimeError("diffdfkd with adv_weight > 0 needs the store attached (runner.attach_store)")
        session = unit.index - unit.index % cfg.online_every  # the latest training round ≤ this unit
        if session != self._online_round:
            self._online_student = self._train_online_student(session)
            self._online_round = session
        return self._online_student

    def _train_online_student(self, session: int) -> nn.Module:
        from dfkd.distill.trainer import Trainer

        student = copy.deepcopy(self._initial_student).to(self.device)
        if self._online_student is not None:  # warm start from the last session
            student.load_state_dict(self._online_student.state_dict())
        before = {u.id for u in self.plan() if u.index < session}
        data = self.store.dataset(self.spec.train_transform(), units=before)
        recipe = self.cfg.online
        Trainer(student, KDDistiller(self.teacher, recipe), recipe, device=self.device, seed=session).fit(
            data, resume=False
        )
        return student.eval()
