"""KD losses and the trainer."""

from dfkd.distill.trainer import Trainer, TrainResult, evaluate, lr_factor

__all__ = ["TrainResult", "Trainer", "evaluate", "lr_factor"]
