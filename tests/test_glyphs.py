"""The embedded glyph generator: renders and captions, the restricted tokenizer, the shipped folder (offline load,
content digest, a guided DiffDFKD step, caption accuracy), a miniature build end to end and its resume, the wheel."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dfkd.hashing import folder_digest
from dfkd.synthesis.diffusion import DiffusionBackend, GeneratorConfig, shipped_path
from dfkd.synthesis.glyphs import render
from dfkd.synthesis.glyphs.build import GlyphBuildConfig, build_glyph_generator, load_classifier, sample_class_prompts

REPO = Path(__file__).resolve().parents[1]
SHIPPED = shipped_path("glyphs")


@pytest.fixture(scope="module")
def bank():
    fonts = [f for f in render.discover_fonts(system=False) if f.name in ("DejaVuSans.ttf", "DejaVuSerif-Bold.ttf")]
    return render.build_bank(fonts)


# ------------------------------------------------------------------------------------------------ renders


def test_bank_covers_the_charset_per_font(bank):
    assert len(bank) == 2 * len(render.CHARSET)
    assert bank.masks.dtype == torch.uint8 and bank.masks.shape[1:] == (64, 64)
    # each glyph is scaled to fill the 56-pixel box: its ink spans 56 pixels along its longer side
    ys, xs = torch.nonzero(bank.masks[render.CHARSET.index(render.Glyph("7", "digit", "seven"))] > 16, as_tuple=True)
    assert max(int(ys.max() - ys.min()), int(xs.max() - xs.min())) + 1 >= 54


def test_sample_batch_is_a_function_of_its_seed(bank):
    a = render.sample_batch(bank, 16, seed=3)
    b = render.sample_batch(bank, 16, seed=3)
    c = render.sample_batch(bank, 16, seed=4)
    assert torch.equal(a[0], b[0]) and a[2] == b[2]
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (16, 3, 32, 32) and float(a[0].min()) >= 0 and float(a[0].max()) <= 1


def test_captions_describe_what_was_drawn(bank):
    index = torch.arange(len(bank))
    images, attrs = render.augment(bank, index, torch.Generator().manual_seed(0))
    rng = random.Random(0)
    for i in range(len(bank)):
        text = render.caption(attrs, i, rng, mention=1.0, category=0.0, dropout=0.0)
        glyph = render.CHARSET[attrs.label[i]]
        assert any(p in text for p in glyph.phrases()), text
        fg, bg = attrs.colours[i]
        assert f"{fg} on {bg}" in text
        # the frame's border is background: its colour matches the caption's background colour
        border = torch.cat([images[i, :, 0, :], images[i, :, -1, :], images[i, :, :, 0], images[i, :, :, -1]], 1)
        assert torch.allclose(border.median(1).values, torch.tensor(render.COLOURS[bg]), atol=0.05), (text, i)
        if attrs.weight[i] <= -1:
            assert "thin" in text
        if attrs.size[i] < 0.62:
            assert "small" in text
    assert render.caption(attrs, 0, random.Random(0), dropout=1.0) == ""


def test_stroke_weight_changes_the_ink(bank):
    g = torch.Generator().manual_seed(0)
    thin = replace(render.AugmentRanges(), stroke_probs=(1.0, 0.0, 0.0, 0.0), blur_prob=0.0)
    heavy = replace(render.AugmentRanges(), stroke_probs=(0.0, 0.0, 0.0, 1.0), blur_prob=0.0)
    index = torch.arange(8)
    a, _ = render.augment(bank, index, g.manual_seed(1), thin)
    b, _ = render.augment(bank, index, g.manual_seed(1), heavy)
    ink = lambda x: (x - x[:, :, :1, :1]).abs().sum()  # noqa: E731 (distance from the corner's background)
    assert ink(b) > 1.5 * ink(a)


def test_restricted_tokenizer_tokenizes_captions_like_clip():
    from dfkd.synthesis.tokenizer import clip_tokenizer

    tok = DiffusionBackend.from_config(GeneratorConfig(path="glyphs", dtype="float32")).tokenizer
    full = clip_tokenizer()
    for text in [
        "the bold italic serif digit seven, white on black",
        "a less-than sign, small, at the top left",
        *render.caption_corpus()[:200],
    ]:
        assert tok.tokenize(text) == full.tokenize(text)
    assert len(tok) < 1000 and tok.tokenize("an unseen word")  # other words still tokenize, into pieces


# ------------------------------------------------------------------------------------------------ shipped folder


def test_shipped_folder_loads_offline_and_is_named_by_its_content(tmp_path):
    import shutil

    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (SHIPPED / sub).is_dir()
    size = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert size <= 10 * 2**20, f"the shipped folder is {size / 2**20:.1f} MiB (≤ 10)"
    recipe = json.loads((SHIPPED / "recipe.json").read_text())
    assert recipe["fonts"] and all(len(f["sha256"]) == 64 and f["licence"] for f in recipe["fonts"])

    short = DiffusionBackend.from_config(GeneratorConfig(path="glyphs", dtype="float32"))
    assert short.identity()["path"] == "glyphs" and short.identity()["digest"] == folder_digest(SHIPPED)
    assert short.resolution == 32 and short.latent_size == 8
    copy = tmp_path / "copy"
    shutil.copytree(SHIPPED, copy)
    local = DiffusionBackend.from_config(GeneratorConfig(path=str(copy), dtype="float32"))
    assert folder_digest(copy) == folder_digest(SHIPPED)  # the digest ignores where the folder lies
    z = short.initial_latents(2, torch.Generator().manual_seed(0))
    t = short.timesteps(10)[3]
    emb = short.encode_prompts(["the digit seven"])
    assert torch.equal(short.predict_noise(z, t, emb, None, 1.0), local.predict_noise(z, t, emb, None, 1.0))


def test_one_guided_diffdfkd_step_on_the_glyph_generator_lowers_the_teacher_ce():
    from dfkd.config import DistillConfig
    from dfkd.datasets import get_dataset
    from dfkd.methods import create_method
    from dfkd.methods.base import BuildContext
    from dfkd.methods.diffdfkd import guided_update
    from dfkd.models import create_model
    from dfkd.synthesis.losses import BNStatistics

    torch.manual_seed(0)
    teacher = create_model("resnet8", 10)
    teacher.train()
    with torch.no_grad():
        teacher(torch.rand(16, 3, 32, 32))
    teacher.eval().requires_grad_(False)
    spec = get_dataset("digits")
    method = create_method(
        "diffdfkd",
        generator={"path": "glyphs", "dtype": "float32"},
        prompt="a digit",
        num_steps=10,
        batch_size=4,
        trajectories_per_class=4,
        bn_weight=0.0,
    )
    ctx = BuildContext(teacher, create_model("resnet8", 10), spec, torch.device("cpu"), 0, DistillConfig())
    synth = method.build_synthesizer(ctx)
    be = synth.backend
    t = be.timesteps(10)[2]
    z = be.initial_latents(4, torch.Generator().manual_seed(0))
    cond, uncond = be.encode_prompts(["a digit"]), be.encode_prompts([""])
    labels = torch.full((4,), 3)
    with BNStatistics(teacher, per_image=True) as bn:

        def objective(z_t):
            return synth.guidance_loss(z_t, t, cond, uncond, labels, bn)

        before = float(objective(z)[0])
        z2, _ = guided_update(z, objective, step_size=0.5)
        after = float(objective(z2)[0])
    assert after < before


def test_class_prompted_samples_are_recognised_by_the_render_classifier():
    """One sample per character, prompted with its class caption (seed 0, DDIM 20, CFG 3): the shipped render
    classifier recognises the asked character above chance (measured at this commit: 6 of 76; chance 1 of 76)."""
    labels = list(range(len(render.CHARSET)))
    images = sample_class_prompts(SHIPPED, labels, seed=0, steps=20, guidance=3.0)  # (76, 3, 32, 32)
    with torch.no_grad():
        pred = load_classifier(SHIPPED)(images).argmax(1)
    hits = int((pred == torch.tensor(labels)).sum())
    assert hits >= 4, f"{hits} of {len(labels)} class prompts recognised: at chance"


# ------------------------------------------------------------------------------------------------ build


MINI = GlyphBuildConfig(
    system_fonts=False,
    vae_steps=4,
    unet_steps=4,
    classifier_steps=2,
    warmup_steps=2,
    checkpoint_every=2,
    eval_images=8,
    eval_per_class=1,
    eval_steps=2,
    scale_images=16,
)


def test_miniature_build_writes_a_loadable_folder_and_a_recipe(tmp_path):
    recipe = build_glyph_generator(MINI, tmp_path / "g")
    folder = tmp_path / "g"
    assert not (tmp_path / "g.build").exists()  # checkpoints are removed once the folder is written
    saved = json.loads((folder / "recipe.json").read_text())
    assert saved["config"]["unet_steps"] == 4 and saved["evaluation"] == recipe["evaluation"]
    assert saved["charset"].startswith("0123456789") and saved["fonts"]
    backend = DiffusionBackend.from_config(GeneratorConfig(path=str(folder), dtype="float32"))
    assert backend.decode(backend.initial_latents(1, torch.Generator().manual_seed(0))).shape == (1, 3, 32, 32)
    assert backend.vae.config.scaling_factor != 0.18215  # measured from the latents
    with pytest.raises(Exception, match="already holds a generator"):
        build_glyph_generator(MINI, folder)


def test_interrupted_build_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from dfkd.synthesis.glyphs import build

    build_glyph_generator(MINI, tmp_path / "a")
    calls = {"n": 0}
    original = build._train_classifier

    def crash(*args, **kwargs):  # die after the VAE and diffusion stages have checkpointed
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_train_classifier", crash)
    with pytest.raises(KeyboardInterrupt):
        build_glyph_generator(MINI, tmp_path / "b")
    assert (tmp_path / "b.build" / "diffusion.pt").is_file()
    monkeypatch.setattr(build, "_train_classifier", original)
    build_glyph_generator(MINI, tmp_path / "b")
    for sub, name in (
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ):
        a = load_file(tmp_path / "a" / sub / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / sub / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub


def test_the_cli_builds_with_set_overrides(tmp_path):
    from dfkd.cli.main import main

    sets = [
        f"--set={k}={v}"
        for k, v in (
            ("system_fonts", "false"),
            ("vae_steps", 2),
            ("unet_steps", 2),
            ("classifier_steps", 2),
            ("warmup_steps", 1),
            ("eval_images", 4),
            ("eval_per_class", 1),
            ("eval_steps", 2),
            ("scale_images", 8),
        )
    ]
    assert main(["generator", "build", "glyphs", "--out", str(tmp_path / "g"), *sets]) == 0
    assert json.loads((tmp_path / "g" / "recipe.json").read_text())["config"]["unet_steps"] == 2
    assert main(["generator", "build", "glyphs", "--out", str(tmp_path / "g"), "--set", "unet_steps=0"]) == 1


def test_a_wheel_contains_the_shipped_generator(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("dfkd_bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in (
        "model_index.json",
        "recipe.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json",
        "scheduler/scheduler_config.json",
        "classifier/model.safetensors",
    ):
        assert f"dfkd/synthesis/pretrained/glyphs/{rel}" in names, rel
