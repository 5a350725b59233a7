"""The student's training objectives: the :class:`Distiller` interface and plain KD (Hinton et al. 2015)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfkd.config import DistillConfig


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
