"""The diffusion models this package builds itself: component configs and builders of random-weight models.

* ``tiny`` (``GeneratorConfig(path="tiny")`` / ``"tiny:<seed>"``): a small random U-Net / VAE / CLIP text encoder from
  the ``TINY_*`` configs (CPU-fast, offline, 16×16×4 latents → 32×32 images) for the embedded default and the tests;
  :func:`save_tiny_pretrained` writes it as a diffusers folder, loaded by the very same ``from_pretrained`` code as a
  Hub id or any local folder.
* ``sd15-random``: the Stable Diffusion v1.5 architecture (its published component configs) with random weights, for
  speed and memory benchmarks: no download, the real model's FLOPs and activations, meaningless images.
* ``SD15_SCHEDULER_CONFIG``: SD-1.5's scheduler config, used by both and by the glyph generator's build
  (``dfkd/synthesis/glyphs/build.py``); :func:`scheduler_from_dict` makes a DDPM or DDIM scheduler of any such dict.

The runtime backend that loads and runs every generator is ``dfkd.synthesis.diffusion``.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch

TINY = "tiny"  # GeneratorConfig.path of the tiny model ("tiny:<seed>": weights from another seed)

# Stable Diffusion v1.5's scheduler/scheduler_config.json (its _class_name is PNDMScheduler; every
# scheduler picks the keys it knows). DDPM, not PNDM, is what DiffDFKD samples with.
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# The tiny generator: sizes chosen so one guided step (batch 8) takes a fraction of a second on 2 CPU cores.
TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 2,  # heads (diffusers' name): 16-wide at 32 channels; 8-wide heads cost 30 % more on CPU
    "norm_num_groups": 32,
}
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 32,
}
TINY_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
    "projection_dim": 32,
}
TINY_VERSION = 2  # bump when a tiny config above changes: it names synthetic stores through identity()


def scheduler_from_dict(kind: str, config: dict[str, Any]):
    """A DDPM or DDIM scheduler from a (possibly foreign, e.g. PNDM) scheduler config dict."""
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[kind]
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return cls.from_config({k: v for k, v in config.items() if k in known})  # drop keys of other schedulers


def build_tiny_components(seed: int = 0) -> dict[str, Any]:
    """Small random U-Net / VAE / CLIP text encoder (weights from ``torch.manual_seed(seed)``), SD-1.5 scheduler
    config, offline CLIP tokenizer. Keys: unet, vae, text_encoder, tokenizer, scheduler (DDPM). Float32, CPU.

    The global RNG state is left untouched (``torch.random.fork_rng``).
    """
    parts = _random_components(TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_TEXT_CONFIG, seed)
    return {**parts, "scheduler": scheduler_from_dict("ddpm", SD15_SCHEDULER_CONFIG)}


def _random_components(unet_config: dict, vae_config: dict, text_config: dict, seed: int) -> dict[str, Any]:
    """U-Net / VAE / CLIP text encoder built from configs with weights from ``torch.manual_seed(seed)``, the
    offline CLIP tokenizer; eval mode, float32, CPU; the global RNG state is left untouched."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dfkd.synthesis.tokenizer import clip_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": clip_tokenizer()}


# The Stable Diffusion v1.5 architecture (its published component configs), for speed and memory benchmarks
# with random weights: no download, same FLOPs and activations as the real model, meaningless images.
SD15_RANDOM = "sd15-random"  # its GeneratorConfig.path
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SD15_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD15_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}


def build_sd15_random_components(seed: int = 0) -> dict[str, Any]:
    """The SD-1.5 U-Net / VAE / CLIP ViT-L text encoder with random weights (benchmarks only)."""
    return _random_components(SD15_UNET_CONFIG, SD15_VAE_CONFIG, SD15_TEXT_CONFIG, seed)


def save_tiny_pretrained(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny model as a diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/).

    ``GeneratorConfig(path=str(directory))`` then loads it through the same ``from_pretrained`` code as a Hub
    id, and gives the same outputs as ``GeneratorConfig(path="tiny:<seed>")``.
    """
    import diffusers

    root = Path(directory)
    parts = build_tiny_components(seed)
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        parts[name].save_pretrained(root / name)
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    scheduler_config = {"_class_name": "DDPMScheduler", "_diffusers_version": diffusers.__version__}
    scheduler_config.update(SD15_SCHEDULER_CONFIG)  # the full SD-1.5 dict, so DDIM gets set_alpha_to_one etc.
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=2) + "\n")
    (root / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": diffusers.__version__,
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "scheduler": ["diffusers", "DDPMScheduler"],
            },
            indent=2,
        )
        + "\n"
    )
    return root
