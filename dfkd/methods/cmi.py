"""CMI — Fang, Song, Wang, Shen, Wang, Song, "Contrastive Model Inversion for Data-Free Knowledge Distillation",
IJCAI 2021, arXiv 2105.08584.

Model inversion with an explicit diversity objective: each round inverts one batch through a freshly initialised
generator and a learnable latent, and a contrastive term makes every new instance distinguishable from the others
of the batch and from the instances kept in earlier rounds (a memory bank of their teacher features).

Written from ``shared/spec/classic-baselines.md`` §6 (algorithm §6.1 = ``CMI:datafree/synthesis/contrastive.py:
261-357``; hyper-parameters §6.2; generator §6.3; views §6.4) and §0.4 / §1.1 (loss forms, loop); the released code
(zju-vipa/CMI @ 9e79fa9) has no licence and nothing is copied from it. One round (unit ``e``, epoch ``e``)::

    G ← ConvGenerator("small"), reset_model init;  z ~ N(0, I) (B, nz) learnable;  y ~ U{0..K−1}^B, sorted
    Adam([G, z], lr_g, (0.5, 0.999));  head h: D → D → 256 (L2-normalised) with its own Adam(lr_g), kept across rounds
    for it < g_steps:
        x = G(z) ∈ [0, 1];  x_g = norm(flip(crop(x, pad 4)));  x_l = norm(flip(resized_crop(x, scale 0.25–1)))
        t = T(x_g);  f_g = [mean_HW(input of layer l)]_l (x_g);  f_l = same for T(x_l)          (B, D) each
        L_bn = Σ_l ‖σ²_l(x_g) − σ̂²_l‖₂ + ‖μ_l(x_g) − μ̂_l‖₂;   L_oh = CE(t, y)
        L_adv = −mean_i 1[argmax s_i = argmax t_i] · KL(t_i ‖ s_i),  s = S(x_g) (student in eval mode)
        (c_l, c_g) = n_neg rows sampled from the memory bank (K ≤ n_neg; none in round 0)
        (p_l, p_g) = h([f_l; c_l]), h([f_g; c_g])                                               (B + K, 256) each
        L_cr = InfoNCE(p_l, sg(p_g); positives on the diagonal, temperature cr_T)  (dfkd.synthesis.cmi_parts)
        L = bn·L_bn + oh·L_oh + adv·L_adv + cr·L_cr;  keep x, [f_l | f_g] of the lowest L (scored before the step)
        step Adam(G, z) and Adam(h)
    the kept images → the pool (this unit's shard);  their features [f_l | f_g] (B, 2D) → the memory bank

Then the student trains ``kd_steps`` steps on the pool of units 0..e (``dfkd.benchmark.runner.distil_pool``; KL at T).

Shape ``pool``. The head, its Adam, the memory bank and the round counter carry across rounds: they are the
synthesizer's state (saved with every unit, restored on resume); the generator and z are re-made every round from
the unit's seed, as are the labels, the views' random parameters and the bank's negative sampling.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfkd.config import DistillConfig, check_choices, check_finite, check_positive_ints
from dfkd.errors import ConfigError, TrainingDivergedError
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
from dfkd.synthesis.cmi_parts import (
    FEATURE_LAYERS,
    InstanceMeans,
    MemoryBank,
    ProjectionHead,
    contrastive_loss,
    feature_dim,
    feature_modules,
    global_view,
    local_view,
    reset_model,
)
from dfkd.synthesis.generators import ConvGenerator
from dfkd.synthesis.losses import BNStatistics, adversarial_disagreement


class CMI(Method):
    @dataclass(frozen=True)
    class Config:
        # defaults: CMI scripts/cmi/scratch_cmi_cifar10_wrn402_wrn161.sh (spec §6.2) and the values fixed in code
        synthesis_batch_size: int = 256  # images inverted per round ("synthesis_batch_size")
        g_steps: int = 200  # Adam steps per round ("g_steps")
        lr_g: float = 1e-3  # Adam learning rate of the generator, z and the head ("lr_g")
        betas_g: tuple[float, float] = (0.5, 0.999)  # Adam betas of generator and z (contrastive.py; head: default)
        generator: str = "small"  # small: the pack's Generator (fixed in CMI) | large: LargeGenerator
        nz: int = 256  # latent size ("nz", 256 in CMI's datafree_kd.py)
        ngf: int = 64  # generator width (fixed 64 in the pack's Generator)
        bn_weight: float = 1.0  # BN-statistics loss ("bn")
        oh_weight: float = 1.0  # cross-entropy to the sampled class ("oh")
        adv_weight: float = 0.5  # decision-masked adversarial KL with the student ("adv")
        cr_weight: float = 0.8  # contrastive loss ("cr"; argparse default 1)
        cr_temperature: float = 0.1  # InfoNCE temperature ("cr_T"; argparse default 0.5, cmi_cifar10.sh 0.2)
        feature_layers: str = "bn_inputs"  # bn_inputs: inputs of every BN2d | stage_inputs: of the residual stages
        head_dim: int = 256  # projection head output (fixed 256 in CMI's datafree_kd.py; hidden width = D)
        bank_rows: int = 40960  # memory bank capacity in instances (fixed "bank_size" 40960)
        n_neg: int = 4096  # cached instances sampled as negatives per step (fixed "n_neg" 4096)
        crop_padding: int = 4  # global view: RandomCrop(S, padding=4)
        local_scale: tuple[float, float] = (0.25, 1.0)  # local view: RandomResizedCrop(S, scale=[0.25, 1.0])
        labels: str = "uniform"  # uniform: y ~ U{0..K−1}, sorted (as released) | balanced: equal per class, shuffled
        kd_steps: int = 400  # student steps per round on the pool ("kd_steps" = "ep_steps")

    card = MethodCard(
        title="Contrastive Model Inversion for Data-Free Knowledge Distillation",
        authors="Fang, Song, Wang, Shen, Wang, Song",
        year=2021,
        arxiv="2105.08584",
        venue="IJCAI 2021",
        summary="Invert the teacher through a per-round generator with a contrastive term against a memory bank.",
        reconstructed=(
            "The community benchmark's CMI (zju-vipa/CMI) without its pre-inverted initial set; views in torch ops; "
            "feature layers a setting; bank sampled from the whole ring once full (fixes an empty-negatives round)."
        ),
    )
    shape = POOL

    smoke = (
        "g_steps=2",
        "synthesis_batch_size=8",
        "kd_steps=1",
        "ngf=8",
        "nz=16",
        "n_neg=16",
    )

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        c, p = self.config, "cmi."
        check_choices(c, p, generator=("small", "large"), feature_layers=FEATURE_LAYERS, labels=("uniform", "balanced"))
        check_positive_ints(c, p, "synthesis_batch_size", "g_steps", "nz", "ngf", "head_dim", "bank_rows", "n_neg")
        check_positive_ints(c, p, "kd_steps")
        check_finite(c, p, "lr_g", "bn_weight", "oh_weight", "adv_weight", "cr_weight", "cr_temperature")
        if c.synthesis_batch_size < 2:
            raise ConfigError(f"{p}synthesis_batch_size must be ≥ 2 (the generator's BatchNorm needs a batch)")
        for name in ("lr_g", "cr_temperature"):
            if getattr(c, name) <= 0:
                raise ConfigError(f"{p}{name} must be > 0, got {getattr(c, name)!r}")
        for name in ("bn_weight", "oh_weight", "adv_weight", "cr_weight"):
            if getattr(c, name) < 0:
                raise ConfigError(f"{p}{name} must be ≥ 0, got {getattr(c, name)!r}")
        if isinstance(c.crop_padding, bool) or not isinstance(c.crop_padding, int) or c.crop_padding < 0:
            raise ConfigError(f"{p}crop_padding must be an integer ≥ 0, got {c.crop_padding!r}")
        lo, hi = c.local_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"{p}local_scale must be [min, max] with 0 < min ≤ max ≤ 1, got {list(c.local_scale)}")
        if len(c.betas_g) != 2 or not all(0 <= b < 1 for b in c.betas_g):
            raise ConfigError(f"{p}betas_g must be two numbers in [0, 1), got {list(c.betas_g)}")

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        return CMISynthesizer(self.config, ctx)

    def kd_steps_per_epoch(self) -> int:
        return self.config.kd_steps

    # -- budget: one inverted batch and kd_steps student steps per epoch (as DeepInversion) --------------
    @classmethod
    def budget(cls, config: Any, num_classes: int, distill: DistillConfig) -> Budget:
        return Budget(images=config.synthesis_batch_size * distill.epochs, kd_steps=config.kd_steps * distill.epochs)

    @classmethod
    def budget_overrides(
        cls, config: Any, images_per_class: int, num_classes: int, distill: DistillConfig
    ) -> dict[str, Any]:
        """``images_per_class · K`` images over ``epochs`` rounds, and per round the steps of one pass over them,
        so rounds × kd_steps equals an offline method's epochs × ⌈images / batch⌉."""
        images = images_per_class * num_classes
        return {
            "synthesis_batch_size": math.ceil(images / distill.epochs),
            "kd_steps": math.ceil(images / distill.batch_size),
        }


class CMISynthesizer(Synthesizer):
    """One CMI round per unit (see the module docstring); state = head, its Adam, the memory bank, rounds."""

    def __init__(self, cfg: CMI.Config, ctx: BuildContext):
        self.cfg = cfg
        self.teacher, self.spec, self.device = ctx.teacher, ctx.spec, ctx.device
        self.seed, self.epochs, self.size = ctx.seed, ctx.distill.epochs, ctx.spec.input_size
        self.layers = feature_modules(self.teacher, cfg.feature_layers)
        self.dim = feature_dim(self.teacher, self.layers, self.size, self.device)  # D
        with torch.random.fork_rng(devices=[]):  # the head's initial weights from the run seed alone
            torch.manual_seed(unit_seed(ctx.seed, "cmi-head"))
            self.head = ProjectionHead(self.dim, self.dim, cfg.head_dim)
        self.head.to(self.device).train()
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=cfg.lr_g)  # default betas, as released
        self.bank = MemoryBank(cfg.bank_rows, 2 * self.dim, self.device)  # rows [f_local | f_global]
        self.rounds = 0  # rounds generated so far

    def plan(self) -> list[SynthesisUnit]:
        units = []
        for e in range(self.epochs):
            uid = f"e{e:05d}"
            units.append(SynthesisUnit(uid, e, unit_seed(self.seed, uid), size=self.cfg.synthesis_batch_size))
        return units

    def _labels(self, n: int, g: torch.Generator) -> Tensor:
        k = self.spec.num_classes
        if self.cfg.labels == "balanced":
            return (torch.arange(n) % k)[torch.randperm(n, generator=g)]  # (n,)
        return torch.randint(0, k, (n,), generator=g).sort().values  # (n,) as released: uniform, sorted

    def generate(self, unit: SynthesisUnit, student: nn.Module | None = None) -> SynthesisOutput:
        cfg, n = self.cfg, unit.size
        g = torch.Generator().manual_seed(unit.seed)  # every random draw of this round
        labels = self._labels(n, g).to(self.device)  # (B,)
        z = torch.randn(n, cfg.nz, generator=g).to(self.device).requires_grad_(True)  # (B, nz)
        with torch.random.fork_rng(devices=[]):  # its default init draws from the global RNG: leave that alone
            generator = reset_model(ConvGenerator(cfg.generator, cfg.nz, self.size, cfg.ngf), g)  # CMI's init, seeded
        generator.to(self.device).train()
        optimizer = torch.optim.Adam([{"params": generator.parameters()}, {"params": [z]}], cfg.lr_g, betas=cfg.betas_g)
        use_adv = cfg.adv_weight > 0 and student is not None
        use_cr = cfg.cr_weight > 0
        teacher_training = self.teacher.training
        self.teacher.eval()
        student_training = student.training if student is not None else False
        if student is not None:
            student.eval()  # CMI pack: the adversarial term sees the student's running statistics
        best_cost, best_x, best_f = math.inf, None, None
        first_cost = math.nan
        terms: dict[str, float] = {}
        try:
            with (
                BNStatistics(self.teacher) if cfg.bn_weight > 0 else contextlib.nullcontext() as bn,
                InstanceMeans(self.layers) as means,
            ):
                for it in range(cfg.g_steps):
                    x = generator(z)  # (B, 3, S, S) in [0, 1]
                    x_g = self.spec.normalize(global_view(x, cfg.crop_padding, g))  # (B, 3, S, S)
                    t = self.teacher(x_g)  # (B, K)
                    f_g = means.take()  # (B, D)
                    loss_bn = bn.loss() if bn is not None else t.new_zeros(())
                    loss_oh = F.cross_entropy(t, labels)
                    loss_adv = adversarial_disagreement(student(x_g), t) if use_adv else t.new_zeros(())
                    loss = cfg.bn_weight * loss_bn + cfg.oh_weight * loss_oh + cfg.adv_weight * loss_adv
                    loss_cr, f_l = t.new_zeros(()), None
                    if use_cr:
                        x_l = self.spec.normalize(local_view(x, g, scale=tuple(cfg.local_scale)))  # (B, 3, S, S)
                        self.teacher(x_l)
                        if bn is not None:
                            bn.clear()  # L_bn is the global view's
                        f_l = means.take()  # (B, D)
                        cached = self.bank.sample(cfg.n_neg, g)  # (K, 2D), K = 0 in the first round
                        c_l, c_g = cached[:, : self.dim], cached[:, self.dim :]  # (K, D), (K, D)
                        proj = self.head(torch.cat([f_l, c_l, f_g, c_g]))  # (2(B + K), head_dim)
                        p_l, p_g = proj.chunk(2)  # (B + K, head_dim) each
                        loss_cr = contrastive_loss(p_l, p_g, n, cfg.cr_temperature)
                        loss = loss + cfg.cr_weight * loss_cr
                    cost = loss.item()
                    if it == 0:
                        first_cost = cost
                    if best_x is None or cost < best_cost:  # the iterate scored, before this step's update
                        best_cost, best_x = cost, x.detach().clone()
                        best_f = torch.cat([f_l, f_g], dim=1).detach().clone() if f_l is not None else None
                    optimizer.zero_grad(set_to_none=True)
                    self.head_optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    self.head_optimizer.step()
                    terms = {
                        "bn": float(loss_bn.detach()),
                        "oh": float(loss_oh.detach()),
                        "adv": float(loss_adv.detach()),
                        "cr": float(loss_cr.detach()),
                    }
        finally:
            self.teacher.train(teacher_training)
            if student is not None:
                student.train(student_training)
                student.zero_grad(set_to_none=True)  # its gradients from L_adv are not the student's to use
        if not math.isfinite(best_cost):
            raise TrainingDivergedError(
                f"CMI unit {unit.id}: the synthesis loss is not finite ({best_cost}); lower cmi.lr_g or the weights"
            )
        if best_f is not None:
            self.bank.add(best_f)  # (B, 2D): the kept instances become negatives for the next rounds
        self.rounds += 1
        images = best_x.clamp(0, 1).cpu()  # (B, 3, S, S) in [0, 1]
        logs = {**terms, "loss_first": first_cost, "loss_best": best_cost, "bank": float(len(self.bank))}
        return SynthesisOutput(images=images, labels=labels.cpu(), logs=logs, generator_steps=cfg.g_steps)

    def identity(self) -> dict[str, Any]:
        return {"input_size": self.size, "epochs": self.epochs}

    @property
    def units_independent(self) -> bool:
        return False  # the head, its optimiser and the memory bank carry over from round to round

    def state_dict(self) -> dict[str, Any]:
        return {
            "head": _cpu_copy(self.head.state_dict()),
            "head_optimizer": _cpu_copy(self.head_optimizer.state_dict()),
            "bank": self.bank.state_dict(),
            "rounds": self.rounds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.bank.load_state_dict(state["bank"])
        self.rounds = int(state["rounds"])


def _cpu_copy(obj: Any) -> Any:
    """``obj`` with every tensor copied to the CPU (a saved state must not alias the live one)."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj
