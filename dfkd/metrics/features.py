"""Feature spaces for comparing synthetic and real images, and the open_clip text tower for comparing prompts.

* ``teacher``: the teacher's penultimate features (``model(x, return_features=True)``), on the images exactly as
  the teacher sees them (data-set normalisation). Always available: the default space of every DFKD run.
* ``clip``: open_clip image-tower embeddings (L2-normalised), a space no method optimises against, when the user
  names a CLIP model *with weights* (``diagnose.clip_model`` / ``clip_pretrained``). Random CLIP weights would give
  numbers that mean nothing, so they are refused.
* :func:`open_clip_text_encoder`: open_clip text-tower embeddings of strings (PRISM's coverage selection of prompts).

Every image extractor takes float images in [0, 1], (B, 3, S, S), not normalised, and returns float32 (B, D) on the
CPU. Both open_clip towers are loaded by :func:`load_open_clip`, the one open_clip loader.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfkd.datasets.base import DatasetSpec
from dfkd.errors import UserError

Extractor = Callable[[Tensor], Tensor]

_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def load_open_clip(
    model_name: str,
    pretrained: str | None,
    device: str | torch.device,
    *,
    fix: str,
    purpose: str = "",
    cache_dir: str | None = None,
    seed: int | None = None,
    tokenizer: bool = False,
) -> tuple[nn.Module, Any]:
    """An open_clip model (eval mode, no grad) and, with ``tokenizer``, its tokenizer (else None).

    ``model_name``: an open_clip architecture ("ViT-B-32"), "hf-hub:org/repo" or "local-dir:/folder" (the schema
    names the weights, so ``pretrained`` is not used with it); ``pretrained``: a tag ("laion2b_s34b_b79k", from the
    Hub or open_clip's ``cache_dir``), a checkpoint path, or None for random weights; a tag that gives no weights is
    an error. ``seed``: the random initialisation comes from it, the global RNG left untouched (None: drawn from
    the global RNG). A model that cannot be loaded (no network, unknown tag or folder) raises one ``UserError``:
    "Cannot load open_clip <model> (pretrained=...)<purpose>: <why>; connect once to fetch the weights, <fix>".
    """
    import open_clip

    from dfkd.errors import one_line

    schema = model_name.startswith(("hf-hub:", "local-dir:"))
    try:
        with torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(seed)  # random weights (pretrained=None) are the same every time
            model = open_clip.create_model(
                model_name,
                pretrained=None if schema else pretrained,
                device=device,
                cache_dir=cache_dir,
                require_pretrained=bool(pretrained) and not schema,
            )
        tok = open_clip.get_tokenizer(model_name, cache_dir=cache_dir) if tokenizer else None
    except Exception as e:
        raise UserError(
            f"Cannot load open_clip {model_name} (pretrained={pretrained!r}){purpose}: {one_line(e)}; connect once to "
            f"fetch the weights, {fix}"
        ) from e
    model.eval().requires_grad_(False)
    return model, tok


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
    model, _ = load_open_clip(
        model_name,
        pretrained,
        device,
        purpose=" for the CLIP metrics",
        fix="give a checkpoint path as diagnose.clip_pretrained, or unset diagnose.clip_model",
    )
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


def open_clip_text_encoder(
    model_name: str = "ViT-B-32",
    pretrained: str | None = "laion2b_s34b_b79k",
    device: str | torch.device = "cpu",
    *,
    cache_dir: str | None = None,
    batch_size: int = 256,
    seed: int = 0,
    fix: str = "give a checkpoint path as pretrained, or use another encoder",
) -> Callable[[list[str]], Tensor]:
    """An open_clip text tower as ``encoder(texts) → (N, D)`` L2-normalised float32 CPU embeddings (no grad).

    ``model_name``: an open_clip architecture ("ViT-B-32"), "hf-hub:org/repo" or "local-dir:/folder";
    ``pretrained``: a tag ("laion2b_s34b_b79k", from the Hub or open_clip's cache), a checkpoint path, or
    None for random weights (initialised from ``seed``, so reproducible). Weights that cannot be loaded (no
    network, unknown tag) raise ``UserError``, whose last words are ``fix`` (what the caller's user can do).
    """
    model, tokenizer = load_open_clip(
        model_name, pretrained, device, fix=fix, cache_dir=cache_dir, seed=seed, tokenizer=True
    )
    if isinstance(getattr(model, "visual", None), nn.Module):
        model.visual = nn.Identity()  # text tower only: free the image tower

    def encode(texts: list[str]) -> Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                tokens = tokenizer(list(texts[i : i + batch_size])).to(device)  # (b, context_length)
                feats = model.encode_text(tokens).float()  # (b, D)
                out.append(F.normalize(feats, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)  # (N, D)

    return encode
