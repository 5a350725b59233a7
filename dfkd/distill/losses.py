"""The student's training objectives: the :class:`Distiller` interface, plain KD (Hinton et al. 2015), and KD with
ZSKT's attention transfer (Micaelli & Storkey 2019)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from dfkd.config import DistillConfig
from dfkd.errors import ConfigError
from dfkd.models.stages import stage_modules


class Distiller(ABC):
    """The student's training objective on one batch. The trainer does backward/step."""

    @abstractmethod
    def loss(self, student: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor | float]]:
        """``images`` are normalised; returns the scalar loss and logs (detached scalar tensors or floats)."""


def kd_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KD loss of Hinton et al. (2015): KL(softmax(t/T) ‖ softmax(s/T)) · T², batch mean."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)  # (B, K)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)  # (B, K)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


class KDDistiller(Distiller):
    """L = kd_weight · KL(p_t^T ‖ p_s^T)·T² + ce_weight · CE(s, y), teacher logits on the same augmented batch."""

    def __init__(self, teacher: nn.Module | None, cfg: DistillConfig):
        if teacher is None and cfg.kd_weight > 0:
            raise ValueError("kd_weight > 0 needs a teacher")
        self.teacher = teacher
        self.temperature = cfg.temperature
        self.kd_weight = cfg.kd_weight
        self.ce_weight = cfg.ce_weight

    def loss(self, student: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor | float]]:
        s = student(images)  # (B, K)
        total = s.new_zeros(())
        logs: dict[str, Tensor | float] = {}
        if self.kd_weight > 0:
            with torch.no_grad():
                t = self.teacher(images)  # (B, K)
            kd = kd_kl(s.float(), t.float(), self.temperature)
            total = total + self.kd_weight * kd
            logs["kd"] = kd.detach()  # a tensor: the trainer syncs once per epoch, not per step
        if self.ce_weight > 0:
            ce = F.cross_entropy(s.float(), labels)
            total = total + self.ce_weight * ce
            logs["ce"] = ce.detach()
        return total, logs


# -- attention transfer (Zagoruyko & Komodakis 2017, as ZSKT uses it) ----------------------------------------------
def attention_map(x: Tensor) -> Tensor:
    """Spatial attention map of a stage output x (B, C, H, W), as ZSKT computes it (``ZSKT:solver.py:200-205``):
    a = normalize(mean_c x²), flattened to (B, H·W) and L2-normalised over the H·W positions of each image."""
    a = x.float().pow(2).mean(1)  # (B, H, W)
    return F.normalize(a.flatten(1), dim=1)  # (B, H·W), unit L2 norm per image


def attention_transfer(student_feats: list[Tensor], teacher_feats: list[Tensor]) -> Tensor:
    """ZSKT's attention-transfer term over paired stage outputs (``ZSKT:solver.py:207-243``)::

        L_at = Σ_l mean((a_S,l − a_T,l)²)

    the mean over the B·H_l·W_l elements of each pair; pairs need equal H_l, W_l (channels may differ)."""
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"attention transfer pairs stages: {len(student_feats)} student, {len(teacher_feats)} teacher")
    terms = [
        (attention_map(s) - attention_map(t)).pow(2).mean()  # mean over (B, H·W)
        for s, t in zip(student_feats, teacher_feats, strict=True)
    ]
    return torch.stack(terms).sum()


class StageOutputs:
    """Context manager that records the output of each of a model's residual stages
    (:func:`dfkd.models.stages.stage_modules`, forward order) at every forward; the hooks are removed on exit::

        with StageOutputs(teacher) as rec:
            teacher(x)
        feats = rec.outputs  # [(B, C_1, H_1, W_1), …]
    """

    def __init__(self, model: nn.Module):
        self.model_name = type(model).__name__
        stages = stage_modules(model)
        self._outputs: list[Tensor | None] = [None] * len(stages)
        self._handles = [m.register_forward_hook(partial(self._hook, i)) for i, m in enumerate(stages)]

    def _hook(self, index: int, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self._outputs[index] = output

    @property
    def outputs(self) -> list[Tensor]:
        """The stage outputs of the last forward, in stage order."""
        if any(o is None for o in self._outputs):
            raise RuntimeError(f"the stages of {self.model_name} did not run: call the hooked module inside the block")
        return list(self._outputs)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> StageOutputs:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _sizes(feats: list[Tensor]) -> str:
    return ", ".join(f"{f.shape[-2]}×{f.shape[-1]}" for f in feats)


class ATDistiller(KDDistiller):
    """KD plus ZSKT's attention transfer on the same batch (Micaelli & Storkey 2019, ``ZSKT:solver.py:200-243``)::

        L = kd_weight · KL(p_t^T ‖ p_s^T)·T² + ce_weight · CE(s, y) + at_weight · Σ_l mean((a_S,l − a_T,l)²)

    The first two terms are :class:`KDDistiller`'s; a_·,l is :func:`attention_map` of stage l's output
    (:func:`dfkd.models.stages.stage_modules`), the teacher's under no_grad. The student's stages are paired with the
    teacher's one to one: equal counts (checked here) and equal spatial sizes (checked at the first forward), else a
    ConfigError. The original asserts a shared architecture family (``ZSKT:main.py:73``); here any pair whose stages
    line up is accepted (e.g. resnet8 with wrn16_1). Its KD term is ``F.kl_div`` with the 'mean' reduction, i.e.
    batch mean / K: with this class's batch-mean KL the original's balance of the two terms is at_weight = 250·K.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, cfg: DistillConfig, at_weight: float):
        if teacher is None:
            raise ValueError("attention transfer needs a teacher")
        super().__init__(teacher, cfg)
        self.at_weight = at_weight
        n_t, n_s = len(stage_modules(teacher)), len(stage_modules(student))
        if n_t != n_s:
            raise ConfigError(
                f"attention transfer (at_weight > 0) pairs residual stages, but the teacher {type(teacher).__name__} "
                f"has {n_t} and the student {type(student).__name__} {n_s}: set at_weight=0, or use a student of "
                "the teacher's family"
            )
        self._sizes_checked = False

    def loss(self, student: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor | float]]:
        # hooks on the module itself: a DDP wrapper calls it, so they fire either way
        module = student.module if isinstance(student, DistributedDataParallel | nn.DataParallel) else student
        with StageOutputs(module) as s_rec, StageOutputs(self.teacher) as t_rec:
            total, logs = super().loss(student, images, labels)  # runs the teacher under no_grad when kd_weight > 0
            if self.kd_weight <= 0:
                with torch.no_grad():
                    self.teacher(images)
        s_feats, t_feats = s_rec.outputs, t_rec.outputs  # [(B, C_l, H_l, W_l)] each
        if not self._sizes_checked:
            if [f.shape[-2:] for f in s_feats] != [f.shape[-2:] for f in t_feats]:
                raise ConfigError(
                    "attention transfer (at_weight > 0) pairs stage outputs of equal spatial size, but the teacher "
                    f"{type(self.teacher).__name__} gives {_sizes(t_feats)} and the student {type(module).__name__} "
                    f"{_sizes(s_feats)}: set at_weight=0, or use a student of the teacher's family"
                )
            self._sizes_checked = True
        at = attention_transfer(s_feats, t_feats)
        logs["at"] = at.detach()
        return total + self.at_weight * at, logs
