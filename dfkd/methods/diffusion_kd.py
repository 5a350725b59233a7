"""Diffusion KD without teacher guidance — the DM-KD-style ablation of DiffDFKD.

Li et al., "Is Synthetic Data From Diffusion Models Ready for Knowledge Distillation?" (DM-KD),
arXiv 2305.12954, distil on images an off-the-shelf diffusion model samples for each class name.
Here: the same Stable Diffusion backbone, scheduler and CFG machinery as DiffDFKD, a class-name
prompt ("a photo of an aquarium fish") and **no** gradient from the teacher, so the gap to ``diffdfkd``
on one protocol is what teacher guidance buys. (DM-KD itself samples a class-conditional DiT-XL/2;
that model is not part of this backend.)

    ε = ε_u + s·(ε_c − ε_u);   z_{t−1} = scheduler.step(ε, t, z_t);   image = D(z_0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dfkd.errors import ConfigError
from dfkd.methods.base import BuildContext, Method, MethodCard, SynthesisOutput, SynthesisUnit, Synthesizer
from dfkd.synthesis.diffusion import GeneratorConfig
from dfkd.synthesis.losses import resize_for_teacher
from dfkd.synthesis.sampling import get_backend, trajectory_units


class DiffusionKD(Method):
    @dataclass(frozen=True)
    class Config:
        generator: GeneratorConfig = field(default_factory=GeneratorConfig)  # same backbone as diffdfkd
        prompt_template: str = "a photo of {a_name}"  # {name}: class name, spaces for "_"; {a_name}: with article
        negative_prompt: str = ""  # the unconditional prompt of CFG
        num_steps: int = 50  # denoising steps
        guidance_scale: float = 3.0  # CFG scale; equal to diffdfkd's so the ablation changes one thing
        images_per_class: int = 500  # final images per class (= diffdfkd's 100 trajectories × 5 kept)
        batch_size: int = 8  # trajectories per unit

    card = MethodCard(
        title="Is Synthetic Data From Diffusion Models Ready for Knowledge Distillation? (ablation form)",
        authors="Li, Li, Zhao, Song, Li, Yang",
        year=2023,
        arxiv="2305.12954",
        summary="Class-name prompts, no teacher guidance: what DiffDFKD's guidance is measured against.",
        reconstructed="Uses the DiffDFKD text-to-image backbone instead of DM-KD's class-conditional DiT.",
    )

    smoke = (
        "generator={path: tiny, dtype: float32}",
        "num_steps=2",
        "images_per_class=2",
        "batch_size=2",
    )

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        if self.config.num_steps < 1 or self.config.batch_size < 1:
            raise ConfigError("diffusion_kd.num_steps and batch_size must be ≥ 1")

    def build_synthesizer(self, ctx: BuildContext) -> Synthesizer:
        return DiffusionKDSynthesizer(self.config, ctx)


class DiffusionKDSynthesizer(Synthesizer):
    def __init__(self, cfg: DiffusionKD.Config, ctx: BuildContext):
        self.cfg, self.spec, self.seed = cfg, ctx.spec, ctx.seed
        self.backend = get_backend(cfg.generator, ctx.device)

    def plan(self) -> list[SynthesisUnit]:
        return trajectory_units(self.spec.num_classes, self.cfg.images_per_class, self.cfg.batch_size, self.seed)

    def identity(self) -> dict[str, Any]:
        return {"backend": self.backend.identity(), "input_size": self.spec.input_size}

    def prompt_for(self, label: int) -> str:
        """``prompt_template`` with the class name: "a photo of an aquarium fish", "the digit seven"."""
        name = str(self.spec.class_names[label]).replace("_", " ").strip()
        article = "an" if name[:1].lower() in "aeiou" else "a"
        return self.cfg.prompt_template.format(name=name, a_name=f"{article} {name}")

    @torch.no_grad()
    def generate(self, unit: SynthesisUnit, student: nn.Module | None = None) -> SynthesisOutput:
        cfg, be = self.cfg, self.backend
        g = torch.Generator(device="cpu").manual_seed(unit.seed)
        prompt = self.prompt_for(unit.label)
        cond, uncond = be.encode_prompts([prompt]), be.encode_prompts([cfg.negative_prompt])  # (1, 77, D) each
        z = be.initial_latents(unit.size, g)  # (B, c, h, w)
        for t in be.timesteps(cfg.num_steps):
            eps = be.predict_noise(z, t, cond, uncond, cfg.guidance_scale)
            z = be.step(eps, t, z, generator=g)
        images = resize_for_teacher(be.decode(z), self.spec.input_size).cpu()  # (B, 3, S, S)
        first = unit.info.get("first", 0)
        return SynthesisOutput(
            images=images,
            labels=torch.full((unit.size,), unit.label, dtype=torch.long),
            extras={"trajectory": torch.arange(first, first + unit.size), "prompt": [prompt] * unit.size},
        )
