"""The latent-diffusion backend shared by every diffusion DFKD method (DiffDFKD, PRISM, ...).

A thin, differentiable wrapper around the diffusers components of a Stable-Diffusion-style model
(``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel`` + ``CLIPTokenizer``, a scheduler).
The methods write their own denoising loops on top of it, because the stock pipeline's ``__call__``
runs under ``no_grad`` and guidance needs the gradient of a teacher loss w.r.t. the noisy latent z_t:

    eps   = eps_u + s·(eps_c − eps_u)                      predict_noise (one batched U-Net call)
    x0lat = (z_t − sqrt(1−ᾱ_t)·eps) / sqrt(ᾱ_t)            predict_x0
    img   = clamp(D(x0lat / scaling_factor)/2 + 0.5, 0, 1)  decode (VAE decoder D)
    z_t−1 = scheduler.step(eps, t, z_t)                     step

Dtypes: the U-Net, VAE and text encoder run in ``config.dtype`` (inputs are cast inside the methods);
every tensor handed back is float32, so the caller's teacher loss and latent update are float32.

Speed switches are the ``GeneratorConfig`` fields declared with ``speed_switch``: each keeps the numbers up to
float rounding (tests/test_fast_synthesis.py). ``naive_config`` sets them (and the dtype) to the slow baseline that
benchmarks/synthesis_speed.py measures every optimisation against.

``GeneratorConfig(path="glyphs")`` loads the pretrained generator the package ships (``SHIPPED``: a diffusers folder
under ``dfkd/synthesis/pretrained/``, built by ``bench generator build glyphs``; see ``dfkd/synthesis/glyphs``)
through the same ``from_pretrained`` code as a Hub id, named in store identities by its content digest.

``GeneratorConfig(path="tiny")`` builds a small random model (CPU-fast, offline, 16×16×4 latents → 32×32 images) for
the embedded default and the tests, ``"sd15-random"`` the SD-1.5 architecture with random weights for benchmarks: their
configs and builders are in ``dfkd.synthesis.diffusion_configs`` (``save_tiny_pretrained`` writes the tiny model as a
diffusers folder, loaded by the very same ``from_pretrained`` code as a Hub id or any local folder).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dfkd.config import speed_switch
from dfkd.errors import ConfigError, UserError, one_line
from dfkd.synthesis.diffusion_configs import (
    SD15_RANDOM,
    SD15_SCHEDULER_CONFIG,
    TINY,
    TINY_VERSION,
    build_sd15_random_components,
    build_tiny_components,
    scheduler_from_dict,
)

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# Pretrained generators shipped as package data: short name → folder under dfkd/synthesis/pretrained/
SHIPPED: dict[str, str] = {"glyphs": "glyphs"}

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_SCHEDULERS = ("ddpm", "ddim")
_ATTENTION = ("sdpa", "eager", "sliced")
_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass(frozen=True)
class GeneratorConfig:
    """Which text-to-image latent diffusion model to load and how to run it."""

    # Hub id, local diffusers folder, "glyphs" (shipped, pretrained, offline), "tiny" (random, offline; "tiny:<seed>"),
    # "sd15-random" (benchmarks)
    path: str = DEFAULT_MODEL
    revision: str | None = None  # Hub branch, tag or commit ("revision" in from_pretrained)
    variant: str | None = None  # weight-file variant on the Hub, e.g. "fp16" ("variant" in from_pretrained)
    dtype: str = "float16"  # float16 | bfloat16 | float32 for U-Net / VAE / text encoder; float16 on CPU → float32
    scheduler: str = "ddpm"  # ddpm | ddim; its config comes from the model's scheduler/ folder (DDPM for DiffDFKD)
    resolution: int | None = None  # image side; None → native (unet.config.sample_size × VAE scale factor)
    # Speed switches (``dfkd.config.SPEED``): how the work is batched and laid out, never what is computed (the same
    # numbers up to float rounding, tests/test_fast_synthesis.py), so they are left out of run ids and store names.
    # sdpa (torch scaled_dot_product_attention) | eager (matmul + softmax) | sliced (diffusers' attention slicing)
    attention: str = speed_switch("sdpa")
    vae_slicing: bool = speed_switch(False)  # decode one image at a time ("enable_vae_slicing" in diffusers)
    # U-Net and VAE decoder recompute activations in the backward: less memory while the guidance gradient flows
    gradient_checkpointing: bool = speed_switch(False)
    channels_last: bool = speed_switch(False)  # U-Net and VAE in torch.channels_last memory format
    cfg_batch: bool = speed_switch(True)  # CFG as one U-Net call on [z, z] with [uncond, cond]; False: two calls
    prompt_cache: bool = speed_switch(True)  # text embeddings once per prompt (LRU); False: encoder on every call
    max_batch: int | None = speed_switch(None)  # latents per U-Net / VAE call: None = the whole batch, 1 = one each
    compile: bool = speed_switch(False)  # torch.compile the U-Net and the VAE decoder (minutes; for long runs)

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ConfigError(f"generator.dtype {self.dtype!r} is not one of {', '.join(_DTYPES)}")
        if self.scheduler not in _SCHEDULERS:
            raise ConfigError(f"generator.scheduler {self.scheduler!r} is not one of {', '.join(_SCHEDULERS)}")
        if self.attention not in _ATTENTION:
            raise ConfigError(f"generator.attention {self.attention!r} is not one of {', '.join(_ATTENTION)}")
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution <= 0):
            raise ConfigError(f"generator.resolution must be a positive integer or null, got {self.resolution!r}")
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError("generator.path must be a Hub id, a local folder or 'tiny'")
        if self.max_batch is not None and (not isinstance(self.max_batch, int) or self.max_batch <= 0):
            raise ConfigError(f"generator.max_batch must be a positive integer or null, got {self.max_batch!r}")
        _tiny_seed(self.path)  # "tiny:<not an integer>" fails here, before any work
        if _looks_local(self.path) and not os.path.isdir(os.path.expanduser(self.path)):
            raise ConfigError(
                f"generator.path {self.path!r} is not an existing folder. Fix: point it at a local diffusers folder "
                f"({'/ '.join(_SUBFOLDERS)}/), a Hub id such as {DEFAULT_MODEL!r}, 'glyphs' or 'tiny'"
            )


# Every speed switch at its slow setting: one trajectory per call, float32, eager attention, two CFG calls, text
# encoder on every call, no compile. The same algorithm and the same images (float32); the benchmarks' baseline.
NAIVE_SWITCHES: dict[str, Any] = {
    "dtype": "float32",
    "attention": "eager",
    "channels_last": False,
    "cfg_batch": False,
    "prompt_cache": False,
    "max_batch": 1,
    "compile": False,
}


def naive_config(config: GeneratorConfig) -> GeneratorConfig:
    """``config`` with every speed switch at its naive setting (``NAIVE_SWITCHES``); model and schedule kept."""
    return replace(config, **NAIVE_SWITCHES)


# ------------------------------------------------------------------------------------------ tiny and shipped


def _tiny_seed(path: str) -> int | None:
    """``"tiny"`` → 0, ``"tiny:<seed>"`` → seed, anything else → None."""
    if path == TINY:
        return 0
    if path.startswith(TINY + ":"):
        try:
            return int(path[len(TINY) + 1 :])
        except ValueError:
            raise ConfigError(f"generator.path {path!r}: write 'tiny' or 'tiny:<integer seed>'") from None
    return None


def shipped_path(name: str) -> Path:
    """The folder of a shipped generator (``SHIPPED``), e.g. ``shipped_path("glyphs")``."""
    folder = Path(__file__).resolve().parent / "pretrained" / SHIPPED[name]
    if not (folder / "model_index.json").is_file():
        raise UserError(
            f"the shipped generator {name!r} is missing from {folder} (an incomplete install or checkout). "
            f"Fix: reinstall dfkd-bench, or rebuild it with `bench generator build {name} --out {folder}`"
        )
    return folder


# ------------------------------------------------------------------------------------------ loading


def _looks_local(path: str) -> bool:
    """A path the user meant as a folder (not a Hub ``owner/name`` id)."""
    return (
        os.path.isdir(path)
        or path.startswith((".", "~", "/", "\\"))
        or os.path.isabs(path)
        or path.count("/") > 1
        or "\\" in path
    )


def _load_failed(config: GeneratorConfig, part: str, exc: BaseException) -> UserError:
    local = os.path.isdir(os.path.expanduser(config.path))
    where = f"local folder {config.path!r}" if local else f"Hub id {config.path!r}"
    if config.revision:
        where += f" (revision {config.revision!r})"
    if config.variant:
        where += f" (variant {config.variant!r})"
    from huggingface_hub import constants as hub_constants

    if local:
        fix = (
            f"make sure {config.path!r} is a diffusers folder with {'/ '.join(_SUBFOLDERS)}/ subfolders "
            "(e.g. from `hf download` or `pipeline.save_pretrained`), or set generator.path to a Hub id"
        )
    elif hub_constants.HF_HUB_OFFLINE:
        fix = (
            "HF_HUB_OFFLINE is set, so only models already in the Hugging Face cache load: download it once where "
            f"there is network (`hf download {config.path}`, formerly `huggingface-cli download`), "
            "or set generator.path to a local diffusers folder"
        )
    else:
        fix = (
            f"check the id and the network, or pre-download it (`hf download {config.path}`, formerly "
            "`huggingface-cli download`) and run with HF_HUB_OFFLINE=1, "
            "or set generator.path to a local diffusers folder"
        )
    return UserError(
        f"Could not load the diffusion model's {part}/ from {where}: "
        f"{type(exc).__name__}: {one_line(exc, 300).rstrip('.')}. Fix: {fix}."
    )


def _load_components(config: GeneratorConfig, dtype: torch.dtype) -> dict[str, Any]:
    """Each component with ``from_pretrained(path, subfolder=...)``: the same code for a Hub id and a local folder."""
    path = config.path
    if _looks_local(path) and not os.path.isdir(os.path.expanduser(path)):
        resolved = os.path.abspath(os.path.expanduser(path))
        raise UserError(
            f"generator.path {path!r} is not an existing folder (resolved to {resolved!r}). Fix: point it at a local "
            f"diffusers folder ({'/ '.join(_SUBFOLDERS)}/), a Hub id such as {DEFAULT_MODEL!r}, or 'tiny'."
        )
    path = os.path.expanduser(path)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from huggingface_hub.errors import HfHubHTTPError
    from transformers import CLIPTextModel, CLIPTokenizer

    errors = (OSError, ValueError, HfHubHTTPError, ConnectionError, TimeoutError)
    hub = {"revision": config.revision}  # every component
    weights = {**hub, "variant": config.variant}  # the three networks
    loaders = {
        "unet": lambda: UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, **weights),
        "vae": lambda: AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, **weights),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **weights),  # cast later
        "tokenizer": lambda: CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **hub),
        "scheduler": lambda: DDPMScheduler.load_config(path, subfolder="scheduler", **hub),  # only its config
    }
    parts: dict[str, Any] = {}
    for name, load in loaders.items():
        try:
            parts[name] = load()
        except errors as exc:
            raise _load_failed(config, name, exc) from exc
    parts["scheduler"] = dict(parts["scheduler"])  # a config dict; the scheduler class is chosen by the backend
    return parts


# ------------------------------------------------------------------------------------------ backend


class DiffusionBackend:
    """Differentiable building blocks of a text-to-image latent diffusion model (see the module docstring)."""

    def __init__(
        self,
        unet,
        vae,
        text_encoder,
        tokenizer,
        scheduler_config: dict[str, Any],
        config: GeneratorConfig,
        device: str | torch.device = "cpu",
        source: dict[str, Any] | None = None,
        prompt_cache_size: int = 4096,
    ):
        self.config = config
        self.device = torch.device(device)
        self.dtype = self.resolve_dtype(config.dtype, self.device)
        if self.dtype != _DTYPES[config.dtype]:
            logger.info("generator.dtype %s on %s: running the diffusion model in float32", config.dtype, self.device)
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self._source = dict(source or {"path": config.path})
        self._scheduler_config = dict(scheduler_config)
        prediction = self._scheduler_config.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction"):
            raise UserError(
                f"{config.path!r} predicts {prediction!r}; only epsilon and v_prediction models are supported. "
                "Fix: choose a Stable Diffusion 1.x/2.x model."
            )
        self.prediction_type = prediction  # the U-Net's; the scheduler always receives epsilon (see predict_noise)
        self.scheduler = scheduler_from_dict(config.scheduler, {**self._scheduler_config, "prediction_type": "epsilon"})
        self._alphas_cumprod = self.scheduler.alphas_cumprod.to(self.device, torch.float32)  # (T,)
        self._prompt_cache: OrderedDict[str, Tensor] = OrderedDict()  # prompt → (77, D) float32, LRU
        self.prompt_cache_size = prompt_cache_size

        for module in (self.unet, self.vae, self.text_encoder):
            if any(p.dtype != self.dtype for p in module.parameters()):
                if getattr(module, "_keep_in_fp32_modules", None):
                    module.to(self.dtype)
                else:  # diffusers' .to(dtype) warns about an empty keep-in-fp32 list; the cast is the same
                    torch.nn.Module.to(module, self.dtype)
            module.to(self.device)
            module.eval()
            module.requires_grad_(False)
        self._apply_memory_switches()

        native = self.unet.config.sample_size * self.vae_scale_factor
        self.resolution = config.resolution or native
        multiple = self.vae_scale_factor * 2 ** (len(self.unet.config.down_block_types) - 1)
        if self.resolution % multiple:
            raise ConfigError(
                f"generator.resolution {self.resolution} must be a multiple of {multiple} for {config.path!r} "
                f"(native {native})"
            )

    # ---- construction

    @staticmethod
    def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
        """``config.dtype`` on ``device``: float16 on CPU becomes float32 (half convolutions are slow or missing)."""
        dtype = _DTYPES[name]
        return torch.float32 if dtype == torch.float16 and device.type == "cpu" else dtype

    @classmethod
    def from_config(cls, config: GeneratorConfig, device: str | torch.device = "cpu") -> DiffusionBackend:
        """Load (or, for ``"tiny"``, build) the components and apply the memory switches.

        Loading failures (no network, missing folder or subfolder) raise ``UserError`` with one line that says
        what was tried and how to fix it.
        """
        device = torch.device(device)
        dtype = cls.resolve_dtype(config.dtype, device)
        seed = _tiny_seed(config.path)
        if seed is not None:
            parts = build_tiny_components(seed)
            scheduler_config = dict(SD15_SCHEDULER_CONFIG)
            source = {"path": TINY, "tiny_seed": seed, "tiny_version": TINY_VERSION}
        elif config.path == SD15_RANDOM:
            parts = build_sd15_random_components()
            scheduler_config = dict(SD15_SCHEDULER_CONFIG)
            source = {"path": SD15_RANDOM}
        elif config.path in SHIPPED:
            from dfkd.hashing import folder_digest

            folder = shipped_path(config.path)
            parts = _load_components(replace(config, path=str(folder)), dtype)
            scheduler_config = parts["scheduler"]
            source = {"path": config.path, "digest": folder_digest(folder)}  # where it lies does not name stores
        else:
            parts = _load_components(config, dtype)
            scheduler_config = parts["scheduler"]
            local = os.path.isdir(os.path.expanduser(config.path))
            path = os.path.abspath(os.path.expanduser(config.path)) if local else config.path
            source = {"path": path, "revision": config.revision, "variant": config.variant}
        return cls(
            parts["unet"],
            parts["vae"],
            parts["text_encoder"],
            parts["tokenizer"],
            scheduler_config,
            config,
            device=device,
            source=source,
        )

    def _apply_memory_switches(self) -> None:
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        if self.config.attention == "sliced":
            self.unet.set_attention_slice("auto")
        else:  # the VAE's mid-block attention follows the U-Net's
            processor = AttnProcessor2_0 if self.config.attention == "sdpa" else AttnProcessor
            self.unet.set_attn_processor(processor())
            self.vae.set_attn_processor(processor())
        if self.config.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            self.vae.enable_gradient_checkpointing()
        if self.config.channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        if self.config.compile:  # in place: the modules keep their attributes (config, dtype)
            self.unet.compile()
            self.vae.decoder.compile()

    def identity(self) -> dict[str, Any]:
        """What determines the outputs (hashed into synthetic-store names): model source, dtype actually used,
        scheduler, resolution. Memory and speed switches are left out (same numbers up to rounding)."""
        return {
            **self._source,
            "dtype": str(self.dtype).removeprefix("torch."),
            "scheduler": self.config.scheduler,
            "resolution": self.resolution,
        }

    # ---- sizes

    @property
    def vae_scale_factor(self) -> int:
        """Image side / latent side (8 for SD, 2 for tiny)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_scale_factor

    @property
    def image_size(self) -> int:
        return self.resolution

    # ---- text

    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """CLIP last hidden states (P, 77, D) float32 on ``device``, no grad; cached per prompt string (LRU)
        unless ``config.prompt_cache`` is off (then the text encoder runs on every call)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if len(prompts) == 0:
            raise ValueError("encode_prompts needs at least one prompt")
        if not self.config.prompt_cache:
            unique = list(dict.fromkeys(prompts))
            hidden = dict(zip(unique, self._encode(unique)))
            return torch.stack([hidden[p] for p in prompts])  # (P, 77, D)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._prompt_cache))
        if missing:
            for prompt, h in zip(missing, self._encode(missing)):
                self._prompt_cache[prompt] = h
        for prompt in prompts:
            self._prompt_cache.move_to_end(prompt)
        out = torch.stack([self._prompt_cache[p] for p in prompts])  # (P, 77, D)
        while len(self._prompt_cache) > self.prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        return out

    def _encode(self, prompts: list[str]) -> Tensor:
        """The text encoder on ``prompts``: (M, 77, D) float32."""
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            return self.text_encoder(tokens.input_ids.to(self.device))[0].float()  # (M, 77, D)

    # ---- schedule

    def timesteps(self, num_steps: int) -> Tensor:
        """Set the scheduler's ``num_steps`` inference timesteps and return them (descending, on ``device``)."""
        self.scheduler.set_timesteps(num_steps, device=self.device)
        return self.scheduler.timesteps

    def alpha_bar(self, t: int | Tensor) -> Tensor:
        """ᾱ_t (cumulative product of 1 − β) as a float32 scalar tensor on ``device``."""
        return self._alphas_cumprod[int(t)]

    # ---- denoiser

    def _unet(self, latents: Tensor, t: int | Tensor, emb: Tensor) -> Tensor:
        """One U-Net call; returns the model output as ε in float32 (v-prediction converted)."""
        if isinstance(t, Tensor):
            t = t.to(self.device)
        model_in = self.scheduler.scale_model_input(latents, t).to(self.dtype)
        if self.config.channels_last:
            model_in = model_in.contiguous(memory_format=torch.channels_last)
        out = self.unet(model_in, t, encoder_hidden_states=emb.to(self.dtype)).sample.float()  # (B, C, h, w)
        if self.prediction_type == "v_prediction":  # ε = sqrt(ᾱ)·v + sqrt(1−ᾱ)·z_t
            ab = self.alpha_bar(t)
            out = ab.sqrt() * out + (1 - ab).sqrt() * latents.float()
        return out

    @staticmethod
    def _expand(emb: Tensor, batch: int) -> Tensor:
        if emb.shape[0] == batch:
            return emb
        if emb.shape[0] == 1:
            return emb.expand(batch, *emb.shape[1:])  # (B, 77, D)
        raise ValueError(f"text embeddings have batch {emb.shape[0]}, latents {batch}: give 1 or {batch}")

    def predict_noise(
        self, latents: Tensor, t: int | Tensor, cond: Tensor, uncond: Tensor | None, guidance_scale: float
    ) -> Tensor:
        """Classifier-free guided ε = ε_u + s·(ε_c − ε_u) (Ho & Salimans, 2022), float32 (B, C, h, w).

        One batched U-Net call on ``cat([z, z])`` with ``cat([uncond, cond])`` (two calls without
        ``config.cfg_batch``); only the conditional call when ``uncond`` is None or ``guidance_scale == 1``.
        ``config.max_batch`` splits the batch into calls of at most that many latents. ``cond``/``uncond`` are
        (B, 77, D) or (1, 77, D). Differentiable w.r.t. ``latents`` when grad is enabled.
        """
        return self._predict_noise(latents, t, cond, uncond, guidance_scale, self.config.cfg_batch)

    def _predict_noise(
        self, latents: Tensor, t: int | Tensor, cond: Tensor, uncond: Tensor | None, scale: float, cfg_batch: bool
    ) -> Tensor:
        batch = latents.shape[0]
        cond = self._expand(cond, batch)  # (B, 77, D)
        uncond = None if uncond is None or scale == 1 else self._expand(uncond, batch)  # (B, 77, D) or None
        size = self.config.max_batch or batch
        parts = []
        for i in range(0, batch, size):  # one chunk of ≤ max_batch trajectories per call
            z, c = latents[i : i + size], cond[i : i + size]  # (b, C, h, w), (b, 77, D)
            if uncond is None:
                parts.append(self._unet(z, t, c))
                continue
            u = uncond[i : i + size]  # (b, 77, D)
            if cfg_batch:
                eps_u, eps_c = self._unet(torch.cat([z, z]), t, torch.cat([u, c])).chunk(2)  # (b, C, h, w) each
            else:
                eps_c, eps_u = self._unet(z, t, c), self._unet(z, t, u)
            parts.append(eps_u + scale * (eps_c - eps_u))
        return parts[0] if len(parts) == 1 else torch.cat(parts)  # (B, C, h, w)

    def predict_x0(self, latents: Tensor, eps: Tensor, t: int | Tensor) -> Tensor:
        """Clean-latent estimate x̂0 = (z_t − sqrt(1−ᾱ_t)·ε) / sqrt(ᾱ_t), float32 (Ho et al., 2020, Eq. 15)."""
        ab = self.alpha_bar(t)
        return (latents.float() - (1 - ab).sqrt() * eps.float()) / ab.sqrt()

    def decode(self, latents: Tensor) -> Tensor:
        """Images in [0, 1], float32, (B, 3, H, W): clamp(D(z / scaling_factor)/2 + 0.5, 0, 1); differentiable.

        With ``vae_slicing`` the decoder sees one latent at a time, with ``max_batch`` at most that many.
        """
        z = latents.float() / self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None)
        if shift:
            z = z + shift
        z = z.to(self.dtype)  # (B, C, h, w)
        if self.config.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        size = 1 if self.config.vae_slicing else self.config.max_batch
        chunks = z.split(size) if size else (z,)
        images = torch.cat([self.vae.decode(c).sample for c in chunks]).float()  # (B, 3, H, W) in ~[-1, 1]
        return (images / 2 + 0.5).clamp(0, 1)

    def step(self, eps: Tensor, t: int | Tensor, latents: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z_{t−1} = scheduler.step(ε, t, z_t).prev_sample, float32. DDPM adds noise drawn from ``generator``."""
        out = self.scheduler.step(eps.float(), t, latents.float(), generator=generator)
        return out.prev_sample.float()

    def initial_latents(self, batch: int, generator: torch.Generator) -> Tensor:
        """z_T ~ N(0, I)·init_noise_sigma, float32 (B, C, h, w), drawn on the generator's device then moved."""
        shape = (batch, self.latent_channels, self.latent_size, self.latent_size)
        z = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
        return z.to(self.device) * float(self.scheduler.init_noise_sigma)

    def __repr__(self) -> str:
        return f"DiffusionBackend({asdict(self.config)}, device={self.device}, dtype={self.dtype})"
