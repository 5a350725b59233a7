"""Fast / FastDFKD — Fang, Mo, Wang, Song, Song, "Up to 100× Faster Data-free Knowledge Distillation", AAAI 2022,
arXiv 2112.06253. The method behind the published Fast-2 / Fast-5 / Fast-10 rows: ``--method fast_meta`` of
zju-vipa/Fast-Datafree @ 0dcecbc, written from ``shared/spec/classic-baselines.md`` §7 (and §0.4, §1); the release
has no licence and none of its code is copied (``FAST:`` file:line citations are to it).

A persistent generator G learns the features every synthetic batch shares ("feature reuse"); each synthesis round
adapts a fast copy G' of it in a few steps and G is meta-updated from that adaptation. One round
(``FAST:datafree/synthesis/fast_meta.py:101-194``, spec §7.1), with ep the round number counted from 1::

    if reset_l0 and ep = reset_l0_at + warmup:  re-init G's Linear and first BatchNorm: w ~ N(0, 0.02), b = 0
    z ~ N(0, I) (B × nz, learnable),  y ~ Uniform{0..K−1}^B,  G' ← copy(G) (weights and BN buffers)
    inner = Adam([G' at lr_g, z at lr_z], betas (0.5, 0.999))                     # new every round
    for i in 0 … g_steps−1:
        x = G'(z) ∈ [0, 1];  x̃ = normalise(hflip(randcrop(x, pad 4)))            # per image (kornia)
        L = bn · L_bn(T, x̃) + oh · CE(T(x̃), y) + adv · 1[ep ≥ warmup] · L_adv(S(x̃), T(x̃))
        keep x if L is the lowest so far;  g_i = ∇_θ' L(θ'_i);  θ'_{i+1} = Adam step
    EMA of the teacher's BN input statistics ← the last forward of the round      (bn_mmt)
    meta step on G with Adam(lr_g · g_steps, betas (0.5, 0.999)) and the meta gradient
        FOMAML ("is_maml 1"):  Σ_{i<g_steps} g_i         (gradients at θ'_0 … θ'_{k−1}: the released meta step
                                                          comes before the last inner step, fast_meta.py:157-165)
        REPTILE ("is_maml 0"): 67 · (θ − θ'_k)
    the lowest-loss x (B images) joins the pool

with the BN loss with momentum of Fast (``FAST:datafree/hooks.py:82-114``, :class:`~dfkd.synthesis.losses.BNMomentum`)::

    L_bn = Σ_l ‖rv_l − ((1−m)·σ²_l + m·σ̄²_l)‖₂ + ‖rm_l − ((1−m)·μ_l + m·μ̄_l)‖₂   (plain L_bn before the first EMA)

and the decision-adversarial term ``L_adv = −mean_i 1[argmax s_i = argmax t_i] · KL(t_i ‖ s_i)`` against the student
in eval mode (spec §1.1). The teacher is frozen (eval mode, no parameter update, BN buffers untouched).

Shape ``pool`` (spec §0.4, §7.5): the released loop runs ``warmup + epochs`` rounds, one per epoch, and trains the
student (``kd_steps`` steps of KL at T on the pool so far) only once ``epoch ≥ warmup``
(``FAST:datafree_kd.py:366-374``). Here ``distill.epochs`` counts the KD epochs, so unit 0 holds the ``warmup + 1``
rounds before the first KD epoch (the warm-up rounds and the round of KD epoch 0) and unit e ≥ 1 one round: the
pool, the student and the generator evolve exactly as released, and the student's cosine schedule (released: T_max
200 after 20 warm-up epochs of a 220-epoch run, eta_min 2e-4, ``datafree_kd.py:324,399-400``) is the trainer's
cosine over ``distill.epochs`` with ``distill.min_lr``. Everything a round changes (G, its meta optimiser, the BN EMA,
the round counter) is the synthesizer's state, saved with every unit, and each round draws its randomness (z, y,
crops and flips) from its own seed (run seed, round), so a resumed run regenerates exactly.

Three registered variants differ only in the inner loop (``FAST:scripts/fast_cifar.sh``, spec §7.2): ``fast2``
(g_steps 2, lr_g 5e-3, lr_z 0.015), ``fast5`` (5, 3e-3, 0.01), ``fast10`` (10, 2e-3, 0.01). See docs/methods/fast.md.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfkd.config import DistillConfig, check_choices, check_finite, check_positive_ints
from dfkd.errors import ConfigError
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
from dfkd.synthesis.generators import ConvGenerator
from dfkd.synthesis.losses import BNMomentum, BNStatistics, adversarial_disagreement

META = ("fomaml", "reptile")  # "--is_maml 1" | "--is_maml 0"


def fast_config(steps: int, fast_lr: float, z_lr: float) -> type:
    """The ``Config`` of one published variant: ``g_steps``, ``lr_g`` and ``lr_z`` as given, every other default
    shared (the three differ only in the inner loop: ``fast_cifar.sh``)."""

    @dataclass(frozen=True)
    class Config:
        g_steps: int = steps  # inner Adam steps on the fast copy per round ("--g_steps")
        lr_g: float = fast_lr  # inner Adam lr of the fast copy ("--lr_g"); the meta Adam's lr is lr_g × g_steps
        lr_z: float = z_lr  # inner Adam lr of the latents z ("--lr_z")
        betas: tuple[float, float] = (0.5, 0.999)  # betas of the inner and the meta Adam (fast_meta.py, hard-coded)
        meta: str = "fomaml"  # fomaml: Σ of the inner gradients ("--is_maml 1") | reptile: 67·(θ − θ') ("0")
        reptile_scale: float = 67.0  # REPTILE's meta-gradient factor (reptile_grad's alpha=67, hard-coded)
        nz: int = 256  # latent size ("nz = 256", datafree_kd.py:305)
        ngf: int = 64  # generator width (Generator(ngf=64), datafree_kd.py:306)
        batch_size: int = 256  # images per round ("--synthesis_batch_size", None → "--batch_size 256")
        images: int | None = None  # pool images over the run, spread evenly over the rounds; None = batch_size each
        bn_weight: float = 10.0  # BN-statistics loss ("--bn")
        oh_weight: float = 0.5  # cross-entropy to the sampled class ("--oh"; 0.4 for the WRN pairs)
        adv_weight: float = 1.33  # decision-adversarial term ("--adv"; R34→R18; VGG11→R18 1.0, WRN pairs 1.1)
        bn_momentum: float = 0.9  # EMA momentum of the BN loss ("--bn_mmt"; 0 = the plain BN loss)
        warmup: int = 20  # rounds before the adversarial term and KD ("--warmup"); they form unit 0 here
        reset_l0: bool = True  # re-init the Linear and the first BN once ("--reset_l0 1")
        reset_l0_at: int = 120  # ... in the round ep = reset_l0_at + warmup (fast_meta.py:110: "120+self.ep_start")
        crop_padding: int = 4  # synthesis augmentation RandomCrop(size, padding) (fast_meta.py:95-99)
        flip: bool = True  # synthesis augmentation RandomHorizontalFlip, per image (fast_meta.py:95-99)
        kd_steps: int = 400  # student steps per epoch on the pool ("--kd_steps" = "--ep_steps" 400)

    return Config


class Fast(Method):
    """Fast (``fast_meta``); the registered variants are :class:`Fast2`, :class:`Fast5` and :class:`Fast10`."""

    Config = fast_config(steps=2, fast_lr=5e-3, z_lr=0.015)  # Fast-2 (fast_cifar.sh:4)
    card = MethodCard(
        title="Up to 100× Faster Data-free Knowledge Distillation",
        authors="Fang, Mo, Wang, Song, Song",
        year=2022,
        arxiv="2112.06253",
        venue="AAAI 2022",
        summary="A meta-learned persistent generator: each batch adapts a copy of it in a few steps (feature reuse).",
        reconstructed=(
            "fast_meta of zju-vipa/Fast-Datafree from its scripts (spec §7); warm-up rounds folded into unit 0, "
            "the pool stored uint8 in the suite's store; per-pair adv/oh are config values"
        ),
    )
    shape = POOL

    smoke = ("batch_size=8", "images=null", "ngf=8", "warmup=1", "reset_l0_at=1", "kd_steps=1")

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        c, p = self.config, f"{self.name or 'fast'}."
        check_choices(c, p, meta=META)
        check_positive_ints(c, p, "g_steps", "nz", "ngf", "batch_size", "reset_l0_at", "kd_steps")
        check_finite(c, p, "lr_g", "lr_z", "reptile_scale", "bn_weight", "oh_weight", "adv_weight", "bn_momentum")
        for name in ("lr_g", "lr_z"):
            if getattr(c, name) <= 0:
                raise ConfigError(f"{p}{name} must be > 0, got {getattr(c, name)!r}")
        for name in ("bn_weight", "oh_weight", "adv_weight"):
            if getattr(c, name) < 0:
                raise ConfigError(f"{p}{name} must be ≥ 0, got {getattr(c, name)!r}")
        if not 0 <= c.bn_momentum < 1:
            raise ConfigError(f"{p}bn_momentum must be in [0, 1) (0 = the plain BN loss), got {c.bn_momentum!r}")
        if c.batch_size < 2:
            raise ConfigError(
                f"{p}batch_size must be ≥ 2 (the generator's BatchNorm needs a batch), got {c.batch_size!r}"
            )
        if isinstance(c.warmup, bool) or not isinstance(c.warmup, int) or c.warmup < 0:
            raise ConfigError(f"{p}warmup must be an integer ≥ 0, got {c.warmup!r}")
        if isinstance(c.crop_padding, bool) or not isinstance(c.crop_padding, int) or c.crop_padding < 0:
            raise ConfigError(f"{p}crop_padding must be an integer ≥ 0, got {c.crop_padding!r}")
        if c.images is not None and (isinstance(c.images, bool) or not isinstance(c.images, int) or c.images < 2):
            raise ConfigError(f"{p}images must be an integer ≥ 2, or null for batch_size images per round")

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        return FastSynthesizer(self.config, ctx, prefix=f"{self.name or 'fast'}.")

    def kd_steps_per_epoch(self) -> int:
        return self.config.kd_steps

    # -- budget: warmup + epochs rounds of images, kd_steps student steps per (KD) epoch --------------------------
    @classmethod
    def budget(cls, config: Any, num_classes: int, distill: DistillConfig) -> Budget:
        rounds = distill.epochs + config.warmup
        images = config.images if config.images is not None else config.batch_size * rounds
        return Budget(images=images, kd_steps=config.kd_steps * distill.epochs)

    @classmethod
    def budget_overrides(
        cls, config: Any, images_per_class: int, num_classes: int, distill: DistillConfig
    ) -> dict[str, Any]:
        """``images_per_class · K`` images spread over the ``warmup + epochs`` rounds (⌊N/R⌋ or ⌈N/R⌉ each, so the
        pool holds exactly the budget), and per KD epoch the steps of one pass over them, as DeepInversion's."""
        images = images_per_class * num_classes
        return {"images": images, "kd_steps": math.ceil(images / distill.batch_size)}


def _variant_card(suffix: str) -> MethodCard:
    return dataclasses.replace(Fast.card, title=f"{Fast.card.title} ({suffix})")


class Fast2(Fast):
    name = "fast2"
    Config = fast_config(steps=2, fast_lr=5e-3, z_lr=0.015)  # fast_cifar.sh:4 ("--g_steps 2 --lr_z 0.015 --lr_g 5e-3")
    card = _variant_card("Fast-2")


class Fast5(Fast):
    name = "fast5"
    Config = fast_config(steps=5, fast_lr=3e-3, z_lr=0.01)  # fast_cifar.sh:6 ("--g_steps 5 --lr_z 0.01 --lr_g 3e-3")
    card = _variant_card("Fast-5")


class Fast10(Fast):
    name = "fast10"
    Config = fast_config(steps=10, fast_lr=2e-3, z_lr=0.01)  # fast_cifar.sh:8 ("--g_steps 10 --lr_z 0.01 --lr_g 2e-3")
    card = _variant_card("Fast-10")


# -- the pieces of a round -------------------------------------------------------------------------------------------
def reset_first_layers(generator: ConvGenerator, g: torch.Generator) -> None:
    """``reset_l0`` (``fast_meta.py:30-34`` as fixed in c188487): the Linear ("l1.0") and the first BatchNorm
    ("conv_blocks.0") get weight ~ N(0, 0.02) and bias 0 — the BN scale too, so it restarts near 0, not 1 (spec §11.11).
    Running statistics and every other layer are kept; so is the meta optimiser's state."""
    with torch.no_grad():
        for layer in (generator.project, generator.body[0]):
            w = torch.randn(layer.weight.shape, generator=g) * 0.02  # drawn on the CPU: the same on every device
            layer.weight.copy_(w)
            layer.bias.zero_()


def crop_flip(x: Tensor, g: torch.Generator, padding: int, flip: bool) -> Tensor:
    """Per-image RandomCrop(S, padding, fill 0) then RandomHorizontalFlip(0.5), as kornia's (``fast_meta.py:95-99``),
    differentiable in x (B, C, H, W); offsets and flips drawn from ``g`` on the CPU."""
    b, _, h, w = x.shape
    rows = torch.arange(h).expand(b, h)  # (B, H)
    cols = torch.arange(w).expand(b, w)  # (B, W)
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p), zeros = black
        rows = rows + torch.randint(0, 2 * padding + 1, (b, 1), generator=g)
        cols = cols + torch.randint(0, 2 * padding + 1, (b, 1), generator=g)
    if flip:
        flipped = torch.rand(b, generator=g) < 0.5  # (B,)
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    idx = torch.arange(b)[:, None, None]  # (B, 1, 1)
    rows, cols = rows.to(x.device), cols.to(x.device)
    out = x[idx.to(x.device), :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced dims first
    return out.permute(0, 3, 1, 2)  # (B, C, H, W)


def round_sizes(images: int | None, batch_size: int, rounds: int) -> list[int]:
    """Images of each round: ``batch_size`` each, or ``images`` spread evenly (the first ``images mod R`` get one
    more)."""
    if images is None:
        return [batch_size] * rounds
    base, extra = divmod(images, rounds)
    return [base + (r < extra) for r in range(rounds)]


def _to_cpu(obj: Any) -> Any:
    """A copy of a (nested) state with every tensor detached on the CPU: the saved state never aliases live ones."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class FastSynthesizer(Synthesizer):
    """The meta-generator and its rounds (module docstring): unit 0 = rounds 0 … warmup, unit e ≥ 1 = round warmup+e."""

    def __init__(self, cfg: Any, ctx: BuildContext, prefix: str = "fast."):
        self.cfg, self.teacher, self.spec, self.device = cfg, ctx.teacher, ctx.spec, ctx.device
        self.seed, self.epochs = ctx.seed, ctx.distill.epochs
        self.sizes = round_sizes(cfg.images, cfg.batch_size, self.epochs + cfg.warmup)
        if min(self.sizes) < 2:
            raise ConfigError(
                f"{prefix}images {cfg.images} over {len(self.sizes)} rounds (distill.epochs {self.epochs} + warmup "
                f"{cfg.warmup}) leaves rounds of {min(self.sizes)} image: raise {prefix}images or lower {prefix}warmup"
            )
        with torch.random.fork_rng(devices=[]):  # the generator's initial weights from the run seed alone
            torch.manual_seed(unit_seed(ctx.seed, "fast-generator-init"))
            self.generator = ConvGenerator("small", cfg.nz, ctx.spec.input_size, cfg.ngf).to(ctx.device).train()
        self.meta_optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=cfg.lr_g * cfg.g_steps, betas=tuple(cfg.betas)
        )
        self.bn_ema = BNMomentum(cfg.bn_momentum) if cfg.bn_momentum > 0 else None  # "if bn_mmt != 0"
        self.rounds_done = 0  # the released counter ep before a round (ep = rounds_done + 1 during it)

    @property
    def units_independent(self) -> bool:
        return False  # every round reads and meta-updates the generator of the rounds before

    def rounds_of(self, epoch: int) -> range:
        """The rounds unit ``epoch`` holds: 0 … warmup for the first KD epoch, then one each."""
        w = self.cfg.warmup
        return range(0, w + 1) if epoch == 0 else range(w + epoch, w + epoch + 1)

    def plan(self) -> list[SynthesisUnit]:
        units = []
        for e in range(self.epochs):
            uid, rounds = f"e{e:05d}", self.rounds_of(e)
            size = sum(self.sizes[r] for r in rounds)
            units.append(SynthesisUnit(uid, e, unit_seed(self.seed, uid), size=size, info={"rounds": len(rounds)}))
        return units

    def generate(self, unit: SynthesisUnit, student: nn.Module | None = None) -> SynthesisOutput:
        rounds = self.rounds_of(unit.index)
        if rounds[0] != self.rounds_done:
            raise RuntimeError(
                f"unit {unit.id} starts at round {rounds[0]} but the generator has done {self.rounds_done}: generate "
                "the units in plan order, after load_state_dict of the state saved with the unit before"
            )
        was_training = student.training if student is not None else False
        if student is not None:
            student.eval()  # the adversarial term sees the student's running statistics (fast_meta.py:106)
        images, labels, logs = [], [], {}
        try:
            for r in rounds:
                x, y, logs = self._round(r, student)
                images.append(x)
                labels.append(y)
        finally:
            if student is not None:
                student.train(was_training)
                student.zero_grad(set_to_none=True)  # L_adv's gradients are not the student's to use
        return SynthesisOutput(
            images=torch.cat(images).clamp(0, 1).cpu(),  # (N, 3, S, S) in [0, 1]
            labels=torch.cat(labels).cpu(),  # (N,)
            logs=logs,
            generator_steps=len(rounds) * self.cfg.g_steps,  # inner steps (each one teacher forward and backward)
        )

    def _round(self, r: int, student: nn.Module | None) -> tuple[Tensor, Tensor, dict[str, float]]:
        """Round ``r`` (ep = r + 1): adapt a fast copy, meta-update the generator, return the lowest-loss images."""
        cfg, n = self.cfg, self.sizes[r]
        ep = r + 1  # incremented before anything else (fast_meta.py:105)
        if cfg.reset_l0 and ep == cfg.reset_l0_at + cfg.warmup:
            reset_first_layers(self.generator, torch.Generator().manual_seed(unit_seed(self.seed, "fast-reset-l0")))
        g = torch.Generator().manual_seed(unit_seed(self.seed, f"fast-round-{r}"))
        z = torch.randn(n, cfg.nz, generator=g).to(self.device).requires_grad_()  # (n, nz), fresh every round
        y = torch.randint(0, self.spec.num_classes, (n,), generator=g).to(self.device)  # (n,), uniform, unsorted
        fast = copy.deepcopy(self.generator).train()  # G': weights and BN buffers
        inner = torch.optim.Adam(
            [{"params": fast.parameters()}, {"params": [z], "lr": cfg.lr_z}], lr=cfg.lr_g, betas=tuple(cfg.betas)
        )
        use_adv = cfg.adv_weight > 0 and ep >= cfg.warmup and student is not None  # fast_meta.py:144
        fomaml = cfg.meta == "fomaml"
        meta_grads = [torch.zeros_like(p) for p in self.generator.parameters()] if fomaml else []
        best_loss, best_x = math.inf, None
        with BNStatistics(self.teacher, ema=self.bn_ema) as bn:
            for i in range(cfg.g_steps):
                x = fast(z)  # (n, 3, S, S) in [0, 1]
                xa = self.spec.normalize(crop_flip(x, g, cfg.crop_padding, cfg.flip))  # (n, 3, S, S)
                t = self.teacher(xa)  # (n, K)
                loss_bn = bn.loss()
                loss_oh = F.cross_entropy(t, y)
                loss_adv = adversarial_disagreement(student(xa), t) if use_adv else t.new_zeros(())
                loss = cfg.bn_weight * loss_bn + cfg.oh_weight * loss_oh + cfg.adv_weight * loss_adv
                value = loss.item()
                if best_x is None or value < best_loss:  # the iterate scored, before its step
                    best_loss, best_x = value, x.detach()
                inner.zero_grad(set_to_none=True)
                loss.backward()
                if fomaml:  # fomaml_grad: the gradient at the current fast weights θ'_i, summed onto G
                    for acc, q in zip(meta_grads, fast.parameters(), strict=True):
                        acc.add_(q.grad)
                    if i == cfg.g_steps - 1:  # the meta step comes before the last inner step (fast_meta.py:157-165)
                        self._meta_step(meta_grads)
                inner.step()
        if self.bn_ema is not None:
            self.bn_ema.update()  # the EMA ← this round's last teacher forward ("update_mmt")
        if not fomaml:  # reptile_grad after the inner loop: p.grad = 67 · (p − p'_k)
            params = zip(self.generator.parameters(), fast.parameters(), strict=True)
            self._meta_step([cfg.reptile_scale * (p.detach() - q.detach()) for p, q in params])
        self.rounds_done = r + 1
        logs = {"bn": loss_bn.item(), "oh": loss_oh.item(), "adv": loss_adv.item(), "loss": best_loss}
        return best_x, y, logs

    def _meta_step(self, meta_grads: list[Tensor]) -> None:
        """One step of the meta Adam (lr_g · g_steps) on the persistent generator with the given meta gradient."""
        for p, grad in zip(self.generator.parameters(), meta_grads, strict=True):
            p.grad = grad
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)

    def identity(self) -> dict[str, Any]:
        return {"input_size": self.spec.input_size}

    # -- state: all a round changes ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": _to_cpu(self.generator.state_dict()),
            "meta_optimizer": _to_cpu(self.meta_optimizer.state_dict()),
            "bn_ema": self.bn_ema.state_dict() if self.bn_ema is not None else None,
            "rounds_done": self.rounds_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        if self.bn_ema is not None:
            self.bn_ema.load_state_dict(state["bn_ema"])
            # BNMomentum.load_state_dict keeps the CPU copies; update() mixes them with this device's statistics
            self.bn_ema.stats = {k: (m.to(self.device), v.to(self.device)) for k, (m, v) in self.bn_ema.stats.items()}
        self.rounds_done = int(state["rounds_done"])
