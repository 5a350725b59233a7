"""Feature spaces for comparing synthetic and real images.

* ``teacher``: the teacher's penultimate features (``model(x, return_features=True)``), on the images exactly as
  the teacher sees them (data-set normalisation). Always available: the default space of every DFKD run.
* ``clip``: open_clip image-tower embeddings (L2-normalised), a space no method optimises against, when the user
  names a CLIP model *with weights* (``diagnose.clip_model`` / ``clip_pretrained``). Random CLIP weights would give
  numbers that mean nothing, so they are refused.

Every extractor takes float images in [0, 1], (B, 3, S, S), not normalised, and returns float32 (B, D) on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfkd.datasets.base import DatasetSpec
from dfkd.errors import UserError

Extractor = Callable[[Tensor], Tensor]

_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def teacher_extractor(teacher: nn.Module, spec: DatasetSpec, device: torch.device) -> Extractor:
    """Penultimate features of ``teacher`` (the layer before its classifier), float32 (B, D)."""

    @torch.no_grad()
    def extract(images: Tensor) -> Tensor:
        x = spec.normalize(images.to(device).float())  # (B, C, S, S)
        _, feats = teacher(x, return_features=True)
        return feats.flatten(1).float().cpu()  # (B, D)

    return extract


def clip_extractor(model_name: str, pretrained: str | None, device: torch.device) -> Extractor:
    """open_clip image embeddings (L2-normalised float32 (B, D)) with the model's own resize and normalisation.

    ``model_name``: an open_clip architecture ("ViT-B-32"), "hf-hub:org/repo" or "local-dir:/folder" (weights
    ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin`` inside); ``pretrained``: a tag or a
    checkpoint path (not used with those schemas). Weights that cannot be loaded raise ``UserError``.
    """
    import open_clip

    from dfkd.errors import one_line

    schema = model_name.startswith(("hf-hub:", "local-dir:"))
    if model_name.startswith("local-dir:"):
        folder = Path(model_name.removeprefix("local-dir:")).expanduser()
        if not any((folder / name).is_file() for name in _OPEN_CLIP_WEIGHTS):
            raise UserError(
                f"diagnose.clip_model {model_name!r} has no weights ({' or '.join(_OPEN_CLIP_WEIGHTS)} in {folder}); "
                "CLIP metrics need trained weights: add them, or unset diagnose.clip_model"
            )
    elif not pretrained and not schema:
        raise UserError(
            f"diagnose.clip_model {model_name!r} needs diagnose.clip_pretrained (an open_clip tag such as "
            "'laion2b_s34b_b79k', or a checkpoint path): CLIP metrics with random weights mean nothing"
        )
    try:
        model = open_clip.create_model(
            model_name, pretrained=None if schema else pretrained, device=device, require_pretrained=not schema
        )
    except Exception as e:
        raise UserError(
            f"Cannot load open_clip {model_name} (pretrained={pretrained!r}) for the CLIP metrics: {one_line(e)}; "
            "connect once to fetch the weights, give a checkpoint path as diagnose.clip_pretrained, or unset "
            "diagnose.clip_model"
        ) from e
    model.eval().requires_grad_(False)
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre["size"] if isinstance(pre["size"], (tuple, list)) else (pre["size"], pre["size"])
    mean = torch.tensor(pre["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"], device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def extract(images: Tensor) -> Tensor:
        x = images.to(device).float()  # (B, C, S, S) in [0, 1]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, S, S)
        x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        feats = model.encode_image((x - mean) / std).float()  # (B, D)
        return F.normalize(feats, dim=-1).cpu()

    return extract
