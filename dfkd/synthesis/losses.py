"""Inversion losses shared by the synthesis methods (DeepInversion, DiffDFKD, PRISM, ...)."""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BNStatistics:
    """DeepInversion's feature-statistics prior (Yin et al., CVPR 2020, Eq. 4).

    For every ``BatchNorm2d`` of the teacher, on that layer's *input* x (B, C, H, W)::

        L_bn = Σ_l ‖σ²_l(x) − running_var_l‖₂ + ‖μ_l(x) − running_mean_l‖₂

    with the biased batch variance. Forward hooks collect the per-layer terms during the teacher's
    forward; ``loss()`` returns their sum for the most recent forward. With ``per_image=True`` the
    statistics are each image's own (mean and biased variance over H, W: what a batch of one computes)
    and ``loss()`` returns one value per image (B,), so an image's term does not depend on its batch
    (DiffDFKD's released code guides one latent at a time). Use as a context manager so the hooks are
    removed::

        with BNStatistics(teacher) as bn:
            logits = teacher(x)
            loss = bn.loss()
    """

    def __init__(self, model: nn.Module, per_image: bool = False, ema: BNMomentum | None = None):
        if per_image and ema is not None:
            raise ValueError("BNStatistics: per_image statistics have no momentum form")
        self.per_image = per_image
        self.ema = ema
        self.terms: list[Tensor] = []
        self.handles = [
            m.register_forward_hook(functools.partial(self._hook, name))
            for name, m in model.named_modules()
            if isinstance(m, nn.BatchNorm2d)
        ]
        if not self.handles:
            raise ValueError(f"{type(model).__name__} has no BatchNorm2d layer: the BN-statistics loss needs one")

    def _hook(self, name: str, module: nn.BatchNorm2d, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        x = inputs[0].float()  # (B, C, H, W)
        if self.per_image:
            mean_i = x.mean(dim=(2, 3))  # (B, C)
            var_i = x.var(dim=(2, 3), unbiased=False)  # (B, C)
            self.terms.append(
                torch.linalg.vector_norm(var_i - module.running_var.float(), dim=1)
                + torch.linalg.vector_norm(mean_i - module.running_mean.float(), dim=1)
            )  # (B,)
            return
        mean = x.mean(dim=(0, 2, 3))  # (C,)
        var = x.var(dim=(0, 2, 3), unbiased=False)  # (C,)
        if self.ema is not None:
            mean, var = self.ema.blend(name, mean, var)  # (C,), (C,)
        term = torch.linalg.vector_norm(var - module.running_var.float()) + torch.linalg.vector_norm(
            mean - module.running_mean.float()
        )
        self.terms.append(term)

    def loss(self) -> Tensor:
        """Sum over layers for the last forward pass (a scalar; (B,) with ``per_image``); resets the terms."""
        if not self.terms:
            raise RuntimeError("BNStatistics.loss() called before a forward pass of the hooked model")
        total = torch.stack(self.terms).sum()
        self.terms = []
        return total

    def clear(self) -> None:
        self.terms = []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> BNStatistics:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class BNMomentum:
    """The BN-statistics loss with momentum of Fast / NAYER (Fang et al. 2022, ``FAST:datafree/hooks.py:82-114``;
    ``shared/spec/classic-baselines.md`` §1.2, §9). Per BN layer an EMA (μ̄, σ̄²) of earlier rounds' batch statistics;
    once it exists the loss compares the running statistics with a blend::

        L_bn = Σ_l ‖rv_l − ((1−m)·σ²_l + m·σ̄²_l)‖₂ + ‖rm_l − ((1−m)·μ_l + m·μ̄_l)‖₂

    The first round uses the plain loss. :meth:`update` (after each synthesis round) folds in the batch statistics of
    the round's **last** teacher forward: μ̄ ← m·μ̄ + (1−m)·μ_last (the first call seeds μ̄ = μ_last). Pass it to
    :class:`BNStatistics` as ``ema``; its :meth:`state_dict` belongs in the synthesizer's state."""

    def __init__(self, momentum: float):
        self.momentum = momentum
        self.stats: dict[str, tuple[Tensor, Tensor]] = {}  # layer name → (μ̄ (C,), σ̄² (C,))
        self._last: dict[str, tuple[Tensor, Tensor]] = {}  # this round's latest batch statistics

    def blend(self, name: str, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        """Remember the batch statistics of ``name``; return what the loss compares with the running statistics."""
        self._last[name] = (mean.detach(), var.detach())
        if name not in self.stats:
            return mean, var
        m = self.momentum
        ema_mean, ema_var = self.stats[name]
        return (1 - m) * mean + m * ema_mean.to(mean), (1 - m) * var + m * ema_var.to(var)

    def update(self) -> None:
        """End of a synthesis round: fold the last batch statistics into the EMA."""
        m = self.momentum
        for name, (mean, var) in self._last.items():
            if name in self.stats:
                ema_mean, ema_var = self.stats[name]
                self.stats[name] = (m * ema_mean + (1 - m) * mean, m * ema_var + (1 - m) * var)
            else:
                self.stats[name] = (mean, var)
        self._last = {}

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "stats": {k: [m.cpu(), v.cpu()] for k, (m, v) in self.stats.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.momentum = float(state["momentum"])
        self.stats = {k: (m, v) for k, (m, v) in state["stats"].items()}
        self._last = {}


def total_variation(x: Tensor) -> tuple[Tensor, Tensor]:
    """Image priors of DeepInversion: (ℓ2 TV, ℓ1 TV) over the 4 neighbour differences, x (B, C, H, W)."""
    diffs = [
        x[:, :, :, :-1] - x[:, :, :, 1:],
        x[:, :, :-1, :] - x[:, :, 1:, :],
        x[:, :, 1:, :-1] - x[:, :, :-1, 1:],
        x[:, :, :-1, :-1] - x[:, :, 1:, 1:],
    ]
    tv_l2 = sum(torch.linalg.vector_norm(d) for d in diffs)
    tv_l1 = sum(d.abs().mean() for d in diffs)
    return tv_l2, tv_l1


def adversarial_disagreement(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Decision-adversarial term of Fast/CMI (Fang et al.):

        L_adv = −mean_i[ 1{argmax s_i = argmax t_i} · KL(softmax(t_i) ‖ softmax(s_i)) ]

    Minimising it pushes the images towards where the student still agrees with the teacher but
    its distribution differs, i.e. towards the decision boundary the student has not learnt.
    """
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()  # (B,)
    kl = F.kl_div(
        F.log_softmax(student_logits, dim=1), F.log_softmax(teacher_logits, dim=1), reduction="none", log_target=True
    ).sum(1)  # (B,)
    return -(agree * kl).mean()


def adversarial_js(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 3.0) -> Tensor:
    """Adversarial term of DeepInversion in the community benchmark (CMI pack): L_adv = −JS_T(s, t).

    As written there (CMI datafree/criterions.py:18-25, used at datafree/synthesis/deepinversion.py:89-93):
    P = softmax(s/T), Q = softmax(t/T), M = (P + Q)/2, each then clamped to [0.01, 0.99], and
    JS = ½·KL(M ‖ P) + ½·KL(M ‖ Q), batch mean (``F.kl_div(log P, M)`` is KL(M ‖ P): the released "JS" has
    the arguments of each KL the other way round from the textbook one; kept, since the published rows used it).
    """
    p = F.softmax(student_logits / temperature, dim=1)  # (B, K)
    q = F.softmax(teacher_logits / temperature, dim=1)  # (B, K)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)  # (B, K)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    js = 0.5 * F.kl_div(p.log(), m, reduction="batchmean") + 0.5 * F.kl_div(q.log(), m, reduction="batchmean")
    return -js


def class_balance(teacher_logits: Tensor, log10: bool = False) -> Tensor:
    """Information-entropy / balance term of DAFL and DFQ: Σ_c p̄_c log p̄_c with p̄ = batch mean of softmax(t)
    (minimising it maximises the entropy of the batch's class marginal). Natural log as in the CMI pack
    (``generative.py:70-71``); ``log10`` as in the original DAFL (``DAFL-train.py:178-179``)."""
    p_bar = F.softmax(teacher_logits, dim=1).mean(0)  # (K,)
    out = (p_bar * p_bar.log()).sum()
    return out / torch.log(torch.tensor(10.0)) if log10 else out


def activation_loss(features: Tensor) -> Tensor:
    """DAFL's activation term: −mean|f_T| over the teacher's pooled penultimate features (B, D)."""
    return -features.abs().mean()


def adversarial_l1(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """DFAD's adversarial term: −mean|s − t| over the logits (the student's KD loss is +mean|s − t|)."""
    return -(student_logits - teacher_logits).abs().mean()


def adversarial_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """ZSKT / DFQ adversarial term (CMI pack, KLDiv at T = 1): −KL(softmax(t) ‖ softmax(s)), batch mean."""
    log_s = F.log_softmax(student_logits, dim=1)  # (B, K)
    log_t = F.log_softmax(teacher_logits, dim=1)  # (B, K)
    return -F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)


class PenultimateFeatures:
    """Context manager that records the input of the model's last ``nn.Linear`` (its pooled penultimate features,
    (B, D)) at every forward: what DAFL's activation term reads (``out_feature=True`` in the originals)."""

    def __init__(self, model: nn.Module):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("the model has no nn.Linear head: DAFL's activation term needs its penultimate features")
        self.features: Tensor | None = None
        self._handle = linears[-1].register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.features = inputs[0]

    def __enter__(self) -> PenultimateFeatures:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def resize_for_teacher(images: Tensor, size: int) -> Tensor:
    """Bicubic, antialiased resize of (B, C, H, W) images in [0, 1] to size², clamped back to [0, 1]."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(0, 1)
