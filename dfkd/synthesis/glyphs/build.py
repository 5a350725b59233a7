"""Build the embedded ``glyphs`` generator: a Stable-Diffusion-shaped latent diffusion model of typeset characters.

``bench generator build glyphs --out DIR`` (or ``build_glyph_generator(GlyphBuildConfig(), DIR)``) runs four
stages, each resumable from checkpoints in ``DIR.build/`` (every ``checkpoint_every`` steps, written
atomically); every training step draws its batch, noise and timesteps from ``seed_for(seed, stage, step)``
alone, so an interrupted build continues to the same weights as an uninterrupted one:

1. **vae** — a diffusers ``AutoencoderKL`` with 4× downsampling (32×32×3 ↔ 8×8×4), trained on renders
   (``render.sample_batch``) with L1 reconstruction + ``vae_kl_weight``·KL (Rombach et al. 2022, §3);
   its ``scaling_factor`` is set to 1 / std of the latents of ``scale_images`` renders (SD's 0.18215 rule).
2. **diffusion** — a ``UNet2DConditionModel`` with cross-attention and a 2-layer ``CLIPTextModel`` trained
   together from scratch with the ε-prediction loss ‖ε − ε_θ(z_t, t, c)‖² (Ho et al. 2020, Eq. 14) on SD's
   DDPM schedule (scaled-linear β 0.00085 → 0.012, 1 000 steps), captions from ``render.caption`` with
   ``caption_dropout`` empty captions for classifier-free guidance; AdamW, linear warm-up then cosine decay,
   an EMA of the U-Net and text-encoder weights (what is saved).
   The tokenizer is CLIP's BPE restricted to the caption vocabulary (``restricted_vocab_and_merges``): the
   caption words tokenize exactly as with CLIP's, and the text encoder's embedding table is 735 rows, not 49 408.
3. **classifier** — a CIFAR ResNet-8 trained on renders to recognise the 76 characters: the generic judge of
   the generator's **caption accuracy** (never the digits teacher, never digit data).
4. **evaluate** — VAE reconstruction error on held-out renders; class-prompted samples ("the digit seven",
   CFG ``eval_guidance``, DDIM ``eval_steps``) from the *saved* folder, judged by the classifier, per class.

The output is a standard diffusers folder (``unet/ vae/ text_encoder/ tokenizer/ scheduler/``, safetensors in
float16; ``model_index.json``) plus ``classifier/`` (the judge) and ``recipe.json`` (fonts with digests and
licences, character set, augmentation ranges, caption grammar, this config, losses, evaluation, versions).
The build reads no data set: only font files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dfkd.errors import UserError
from dfkd.paths import atomic_writer
from dfkd.synthesis.glyphs import render
from dfkd.synthesis.glyphs.render import CHARSET, AugmentRanges, GlyphBank, seed_for

logger = logging.getLogger(__name__)

RECIPE_VERSION = 1

GLYPH_VAE_CONFIG: dict[str, Any] = {  # 32×32×3 ↔ 8×8×4 (three levels: 4× downsampling)
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (16, 32, 64),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 32,
    "mid_block_add_attention": False,
}
GLYPH_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (48, 96),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 64,
    "attention_head_dim": 4,  # heads (diffusers' name): 12- and 24-wide
    "norm_num_groups": 16,
}
GLYPH_TEXT_CONFIG: dict[str, Any] = {  # vocab_size is filled in from the restricted tokenizer
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 64,
}


@dataclass(frozen=True)
class GlyphBuildConfig:
    """Every setting of a glyph-generator build (recorded in recipe.json)."""

    seed: int = 0
    system_fonts: bool = True  # also use the installed fonts of render.DEBIAN_FONT_PACKAGES (recorded)
    vae_steps: int = 2400
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6  # SD's KL-f8 weight
    scale_images: int = 1024  # renders whose latent std sets vae.scaling_factor
    unet_steps: int = 4000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup_steps: int = 200  # linear warm-up, then cosine decay to lr_floor·lr
    lr_floor: float = 0.1
    ema_decay: float = 0.999  # EMA of U-Net and text encoder (with the usual (1+k)/(10+k) ramp)
    caption_dropout: float = 0.1  # empty captions: the unconditional branch of CFG
    caption_mention: float = 0.6  # probability that a caption names each attribute
    caption_category: float = 0.1  # probability that it names only the kind ("a digit")
    classifier_steps: int = 800
    classifier_batch: int = 128
    classifier_lr: float = 0.05
    eval_images: int = 512  # held-out renders for the VAE reconstruction error
    eval_per_class: int = 8  # class-prompted samples per character for caption accuracy
    eval_steps: int = 25  # DDIM steps of those samples
    eval_guidance: float = 3.0
    checkpoint_every: int = 250
    augment: AugmentRanges = field(default_factory=AugmentRanges)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and not math.isfinite(value):
                raise UserError(f"glyph build: {f.name} must be finite, got {value!r}")
        for name in (
            "vae_steps",
            "unet_steps",
            "classifier_steps",
            "vae_batch",
            "unet_batch",
            "classifier_batch",
            "eval_images",
            "eval_per_class",
            "eval_steps",
            "checkpoint_every",
            "scale_images",
        ):
            if getattr(self, name) <= 0:
                raise UserError(f"glyph build: {name} must be a positive integer, got {getattr(self, name)!r}")


# ------------------------------------------------------------------------------------------------ helpers


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_writer(path) as f:
        torch.save(obj, f)


def _lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``floor`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class _Progress:
    """A rich bar on a terminal; otherwise a plain line every ``every`` steps (logs under a scheduler)."""

    def __init__(self, every: int = 100):
        self.every = every
        self._bar = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
            )
            self._bar.start()
        self._task = None

    def stage(self, name: str, total: int, done: int) -> None:
        self.name, self.total, self.t0 = name, total, time.time()
        if self._bar is not None:
            self._task = self._bar.add_task(name, total=total, completed=done, info="")
        elif done:
            print(f"[glyphs] {name}: resuming at step {done}/{total}", file=sys.stderr, flush=True)

    def step(self, step: int, info: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif step % self.every == 0 or step == self.total:
            print(
                f"[glyphs] {self.name} {step}/{self.total} {info} ({time.time() - self.t0:.0f}s)",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class _Checkpoints:
    """``DIR.build/<stage>.pt``: the state of an unfinished stage, or the result of a finished one."""

    def __init__(self, root: Path):
        self.root = root
        self.seconds: dict[str, float] = {}  # training seconds per stage, summed over every process that worked on it
        root.mkdir(parents=True, exist_ok=True)

    def load(self, stage: str) -> dict | None:
        path = self.root / f"{stage}.pt"
        return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None

    def save(self, stage: str, state: dict) -> None:
        _atomic_save(state, self.root / f"{stage}.pt")


def _train_loop(
    name: str,
    total: int,
    ckpt: _Checkpoints,
    state: dict[str, Any],
    step_fn: Callable[[int], dict[str, float]],
    every: int,
    progress: _Progress,
) -> list[dict[str, float]]:
    """Run ``step_fn(step)`` for the steps not done yet; ``state`` maps names to objects with ``state_dict``."""
    saved = ckpt.load(name)
    history: list[dict[str, float]] = []
    start, seconds = 0, 0.0
    if saved is not None:
        for key, obj in state.items():
            obj.load_state_dict(saved["state"][key])
        start, history, seconds = saved["step"], saved["history"], saved.get("seconds", 0.0)
    progress.stage(name, total, start)
    for step in range(start, total):
        t0 = time.perf_counter()
        logs = step_fn(step)
        seconds += time.perf_counter() - t0
        ckpt.seconds[name] = seconds
        if step % 50 == 0 or step == total - 1:
            history.append({"step": step, **logs})
        done = step + 1
        progress.step(done, " ".join(f"{k} {v:.4f}" for k, v in logs.items()))
        if done % every == 0 or done == total:
            states = {k: o.state_dict() for k, o in state.items()}
            ckpt.save(name, {"step": done, "history": history, "state": states, "seconds": seconds})
    ckpt.seconds[name] = seconds
    return history


class _EMA:
    """Exponential moving average of a set of parameters (decay ramped as min(d, (1+k)/(10+k)))."""

    def __init__(self, params: list[Tensor], decay: float):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]
        self.updates = 0

    @torch.no_grad()
    def update(self, params: list[Tensor]) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for s, p in zip(self.shadow, params):
            s.mul_(d).add_(p.detach(), alpha=1 - d)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow = [t.clone() for t in state["shadow"]]
        self.updates = state["updates"]


def _to_vae_range(images: Tensor) -> Tensor:
    return images * 2 - 1  # (B, 3, 32, 32) in [-1, 1]


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**GLYPH_VAE_CONFIG)


def build_text_and_unet(vocab_size: int):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dfkd.synthesis.tokenizer import BOS_TOKEN, EOS_TOKEN  # noqa: F401  (ids: the last two rows)

    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
            **GLYPH_TEXT_CONFIG,
        )
    )
    return text, UNet2DConditionModel(**GLYPH_UNET_CONFIG)


# ------------------------------------------------------------------------------------------------ stages


def _train_vae(cfg: GlyphBuildConfig, bank: GlyphBank, ckpt: _Checkpoints, progress: _Progress):
    torch.manual_seed(seed_for(cfg.seed, "vae-init"))
    vae = build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)

    def step(k: int) -> dict[str, float]:
        images, _, _ = render.sample_batch(bank, cfg.vae_batch, seed_for(cfg.seed, "vae", k), cfg.augment)
        x = _to_vae_range(images)  # (B, 3, 32, 32)
        posterior = vae.encode(x).latent_dist
        torch.manual_seed(seed_for(cfg.seed, "vae-noise", k))
        recon = vae.decode(posterior.sample()).sample  # (B, 3, 32, 32)
        l1 = (recon - x).abs().mean()
        kl = posterior.kl().mean()
        loss = l1 + cfg.vae_kl_weight * kl
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * _lr_factor(k, cfg.vae_steps, cfg.warmup_steps, cfg.lr_floor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"l1": l1.item(), "kl": kl.item()}

    history = _train_loop("vae", cfg.vae_steps, ckpt, {"vae": vae, "opt": opt}, step, cfg.checkpoint_every, progress)
    vae.eval().requires_grad_(False)
    images, _, _ = render.sample_batch(bank, cfg.scale_images, seed_for(cfg.seed, "vae-scale"), cfg.augment)
    with torch.no_grad():
        latents = vae.encode(_to_vae_range(images)).latent_dist.mode()  # (N, 4, 8, 8)
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae, history


def _train_diffusion(cfg: GlyphBuildConfig, bank: GlyphBank, vae, tokenizer, ckpt: _Checkpoints, progress: _Progress):
    from diffusers import DDPMScheduler

    from dfkd.synthesis.diffusion_configs import SD15_SCHEDULER_CONFIG, scheduler_from_dict

    scheduler: DDPMScheduler = scheduler_from_dict("ddpm", SD15_SCHEDULER_CONFIG)
    alphas = scheduler.alphas_cumprod.float()  # (1000,)
    torch.manual_seed(seed_for(cfg.seed, "diffusion-init"))
    text, unet = build_text_and_unet(len(tokenizer))
    params = [*unet.parameters(), *text.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    ema = _EMA(params, cfg.ema_decay)
    scale = vae.config.scaling_factor

    def step(k: int) -> dict[str, float]:
        seed = seed_for(cfg.seed, "diffusion", k)
        images, _, captions = render.sample_batch(
            bank,
            cfg.unet_batch,
            seed,
            cfg.augment,
            mention=cfg.caption_mention,
            category=cfg.caption_category,
            dropout=cfg.caption_dropout,
        )
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            mean, logvar = vae.encode(_to_vae_range(images)).latent_dist.parameters.chunk(2, dim=1)  # (B, 4, 8, 8)
            z0 = (mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=g)) * scale
        t = torch.randint(0, len(alphas), (cfg.unet_batch,), generator=g)  # (B,)
        eps = torch.randn(z0.shape, generator=g)  # (B, 4, 8, 8)
        ab = alphas[t][:, None, None, None]
        zt = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
        ids = tokenizer(
            captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids  # (B, 77)
        pred = unet(zt, t, encoder_hidden_states=text(ids)[0]).sample  # (B, 4, 8, 8)
        loss = F.mse_loss(pred, eps)
        for group in opt.param_groups:
            group["lr"] = cfg.unet_lr * _lr_factor(k, cfg.unet_steps, cfg.warmup_steps, cfg.lr_floor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(params)
        return {"loss": loss.item()}

    state = {"unet": unet, "text": text, "opt": opt, "ema": ema}
    history = _train_loop("diffusion", cfg.unet_steps, ckpt, state, step, cfg.checkpoint_every, progress)
    with torch.no_grad():
        for p, s in zip(params, ema.shadow):
            p.copy_(s)
    return unet.eval(), text.eval(), history


def build_classifier():
    from dfkd.models import create_model

    return create_model("resnet8", num_classes=len(CHARSET))


def _train_classifier(cfg: GlyphBuildConfig, bank: GlyphBank, ckpt: _Checkpoints, progress: _Progress):
    torch.manual_seed(seed_for(cfg.seed, "classifier-init"))
    net = build_classifier()
    opt = torch.optim.SGD(net.parameters(), lr=cfg.classifier_lr, momentum=0.9, weight_decay=5e-4, nesterov=True)

    def step(k: int) -> dict[str, float]:
        images, labels, _ = render.sample_batch(
            bank, cfg.classifier_batch, seed_for(cfg.seed, "classifier", k), cfg.augment
        )
        net.train()
        loss = F.cross_entropy(net(images), labels)
        for group in opt.param_groups:
            group["lr"] = cfg.classifier_lr * _lr_factor(k, cfg.classifier_steps, 50, 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"ce": loss.item()}

    history = _train_loop(
        "classifier", cfg.classifier_steps, ckpt, {"net": net, "opt": opt}, step, cfg.checkpoint_every, progress
    )
    return net.eval(), history


# ------------------------------------------------------------------------------------------------ folder


def write_folder(out: Path, vae, unet, text, tokenizer, classifier, recipe: dict[str, Any]) -> None:
    """The diffusers folder (float16 safetensors), ``classifier/`` and ``recipe.json``."""
    import diffusers
    from safetensors.torch import save_file

    from dfkd.synthesis.diffusion_configs import SD15_SCHEDULER_CONFIG

    out.mkdir(parents=True, exist_ok=True)
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        module.to(torch.float16).save_pretrained(out / name, safe_serialization=True)
        module.to(torch.float32)
    tokenizer.save_pretrained(out / "tokenizer")
    (out / "scheduler").mkdir(exist_ok=True)
    scheduler = {"_class_name": "DDPMScheduler", "_diffusers_version": diffusers.__version__, **SD15_SCHEDULER_CONFIG}
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2) + "\n")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "classifier").mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, out / "classifier" / "model.safetensors")
    (out / "classifier" / "config.json").write_text(
        json.dumps(
            {
                "arch": "resnet8",
                "num_classes": len(CHARSET),
                "charset": "".join(g.char for g in CHARSET),
                "input": "RGB 32x32 in [0, 1], no normalisation",
            },
            indent=2,
        )
        + "\n"
    )
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=False) + "\n")


def load_classifier(folder: str | os.PathLike):
    """The render classifier shipped in a glyph generator folder (eval mode, CPU, float32)."""
    from safetensors.torch import load_file

    net = build_classifier()
    net.load_state_dict(load_file(Path(folder) / "classifier" / "model.safetensors"))
    return net.eval()


@torch.no_grad()
def sample_class_prompts(
    folder: str | os.PathLike, labels: list[int], seed: int, steps: int, guidance: float
) -> Tensor:
    """Images (N, 3, 32, 32) in [0, 1] for ``labels`` (indices into CHARSET) prompted with the class prompt,
    sampled from the folder through the suite's own diffusion backend (DDIM, ``steps`` steps, CFG ``guidance``)."""
    from dfkd.synthesis.diffusion import DiffusionBackend, GeneratorConfig

    backend = DiffusionBackend.from_config(GeneratorConfig(path=str(folder), dtype="float32", scheduler="ddim"))
    g = torch.Generator().manual_seed(seed)
    z = backend.initial_latents(len(labels), g)  # (N, 4, 8, 8)
    cond = backend.encode_prompts([CHARSET[i].class_prompt() for i in labels])  # (N, 77, D)
    uncond = backend.encode_prompts([""])  # (1, 77, D)
    for t in backend.timesteps(steps):
        eps = backend.predict_noise(z, t, cond, uncond, guidance)
        z = backend.step(eps, t, z, generator=g)
    return backend.decode(z)


def evaluate_folder(folder: Path, bank: GlyphBank, cfg: GlyphBuildConfig) -> dict[str, Any]:
    """VAE reconstruction error on held-out renders and per-class caption accuracy of the saved model."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32).eval()
    images, render_labels, _ = render.sample_batch(bank, cfg.eval_images, seed_for(cfg.seed, "eval-vae"), cfg.augment)
    with torch.no_grad():
        recon = (vae.decode(vae.encode(_to_vae_range(images)).latent_dist.mode()).sample / 2 + 0.5).clamp(0, 1)
    mse = float(F.mse_loss(recon, images))
    classifier = load_classifier(folder)
    with torch.no_grad():
        render_acc = float((classifier(images).argmax(1) == render_labels).float().mean())
    labels = [c for c in range(len(CHARSET)) for _ in range(cfg.eval_per_class)]
    samples = sample_class_prompts(
        folder, labels, seed_for(cfg.seed, "eval-samples"), cfg.eval_steps, cfg.eval_guidance
    )
    with torch.no_grad():
        pred = classifier(samples).argmax(1)  # (N,)
    hits = (pred == torch.tensor(labels)).float().view(len(CHARSET), cfg.eval_per_class).mean(1)  # (76,)
    digits = [i for i, g in enumerate(CHARSET) if g.kind == "digit"]
    return {
        "vae_recon_mse": mse,
        "vae_recon_psnr_db": 10 * math.log10(1 / max(mse, 1e-12)),
        "classifier_top1_on_renders": render_acc,
        "caption_accuracy": float(hits.mean()),
        "caption_accuracy_digits": float(hits[digits].mean()),
        "caption_accuracy_per_class": {CHARSET[i].char: round(float(h), 4) for i, h in enumerate(hits)},
        "chance": 1 / len(CHARSET),
        "samples": {
            "per_class": cfg.eval_per_class,
            "steps": cfg.eval_steps,
            "guidance": cfg.eval_guidance,
            "scheduler": "ddim",
        },
    }


def _versions() -> dict[str, str]:
    import diffusers
    import matplotlib
    import PIL
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "matplotlib": matplotlib.__version__,
        "pillow": PIL.__version__,
    }


def build_glyph_generator(cfg: GlyphBuildConfig, out: str | os.PathLike, overwrite: bool = False) -> dict[str, Any]:
    """Build (or resume building) the glyph generator into ``out``; returns the recipe written there."""
    from dfkd.synthesis.tokenizer import clip_tokenizer, restricted_vocab_and_merges, write_tokenizer_files

    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} already holds a generator. Fix: choose another --out, or pass --overwrite")
    work = out.with_name(out.name + ".build")
    ckpt = _Checkpoints(work)
    saved_cfg = work / "config.json"
    cfg_dict = asdict(cfg)
    if saved_cfg.is_file() and json.loads(saved_cfg.read_text()) != json.loads(json.dumps(cfg_dict)):
        raise UserError(f"{work} holds a build with other settings. Fix: rerun with the same settings, or delete it")
    saved_cfg.write_text(json.dumps(cfg_dict, indent=2) + "\n")
    t0 = time.time()
    threads = torch.get_num_threads()

    fonts = render.discover_fonts(system=cfg.system_fonts)
    bank = render.build_bank(fonts)
    tokenizer = clip_tokenizer(
        write_tokenizer_files(work / "tokenizer", vocab_merges=restricted_vocab_and_merges(render.caption_corpus()))
    )
    progress = _Progress()
    try:
        vae, vae_history = _train_vae(cfg, bank, ckpt, progress)
        unet, text, unet_history = _train_diffusion(cfg, bank, vae, tokenizer, ckpt, progress)
        classifier, cls_history = _train_classifier(cfg, bank, ckpt, progress)
    finally:
        progress.close()
    times = dict(ckpt.seconds)  # training seconds of each stage, over every (resumed) process
    recipe: dict[str, Any] = {
        "recipe_version": RECIPE_VERSION,
        "what": "typeset-glyph latent diffusion model (SD-shaped) for dfkd-bench's embedded default; "
        "trained on font renders only, never on a data set",
        "config": cfg_dict,
        "architecture": {
            "vae": GLYPH_VAE_CONFIG,
            "unet": GLYPH_UNET_CONFIG,
            "text_encoder": {**GLYPH_TEXT_CONFIG, "vocab_size": len(tokenizer)},
            "scheduler": "SD-1.5 DDPM (scaled_linear 0.00085-0.012, 1000 steps)",
            "scaling_factor": vae.config.scaling_factor,
            "weights_dtype": "float16",
        },
        "charset": "".join(g.char for g in CHARSET),
        "class_prompts": [g.class_prompt() for g in CHARSET],
        "fonts": [
            {
                "file": f.name,
                "source": f.source,
                "family": f.family,
                "bold": f.bold,
                "italic": f.italic,
                "sha256": f.digest(),
                "licence": f.licence,
            }
            for f in fonts
        ],
        "font_licences": render.font_licences(fonts),
        "debian_font_packages": list(render.DEBIAN_FONT_PACKAGES) if cfg.system_fonts else [],
        "bank": {"glyphs": len(bank), "mask_size": render.BANK_SIZE},
        "caption_grammar": {
            "form": "<article> [size] [weight] [slant] [family] <character phrase> [in a <family> font]"
            "[, colours][, position][, tilted][, blurry] (tails shuffled)",
            "vocabulary": {k: list(v) for k, v in render.VOCABULARY.items()},
            "mention": cfg.caption_mention,
            "category": cfg.caption_category,
            "dropout": cfg.caption_dropout,
        },
        "losses": {
            "vae": {"first": vae_history[0], "last": vae_history[-1]},
            "diffusion": {
                "first": unet_history[0],
                "last": unet_history[-1],
                "mean_last_500_logged": _tail_mean(unet_history, "loss", cfg.unet_steps - 500),
            },
            "classifier": {"first": cls_history[0], "last": cls_history[-1]},
        },
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "threads": threads,
        "machine": platform.processor() or platform.machine(),
        "versions": _versions(),
    }
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_folder(tmp, vae, unet, text, tokenizer, classifier, recipe)
    t = time.time()
    recipe["evaluation"] = evaluate_folder(tmp, bank, cfg)
    recipe["seconds"]["evaluate"] = round(time.time() - t, 1)
    recipe["seconds"]["total_this_process"] = round(time.time() - t0, 1)
    (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    shutil.rmtree(work, ignore_errors=True)
    return recipe


def _tail_mean(history: list[dict[str, float]], key: str, from_step: int) -> float:
    values = [h[key] for h in history if h["step"] >= from_step] or [history[-1][key]]
    return sum(values) / len(values)
