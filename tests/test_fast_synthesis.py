"""The speed switches of the diffusion backend change how the work is batched, never the result: the naive mode
(one trajectory per call, float32, eager attention, two CFG calls, text encoder on every call) and the optimised
defaults give the same images on the tiny generator in float32, for every diffusion method."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dfkd.config import DistillConfig
from dfkd.datasets import get_dataset
from dfkd.errors import ConfigError
from dfkd.methods import create_method
from dfkd.methods.base import BuildContext
from dfkd.models import create_model
from dfkd.synthesis.diffusion import NAIVE_SWITCHES, DiffusionBackend, GeneratorConfig, naive_config
from dfkd.synthesis.sampling import teacher_view

TINY = GeneratorConfig(path="tiny", dtype="float32")
FAST = dataclasses.replace(TINY, channels_last=True)  # every switch at its fast setting (compile aside)
NAIVE = naive_config(TINY)
ATOL = 3e-5  # images in [0, 1] after 5 guided steps: float32 rounding of differently batched kernels


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFKD_CACHE", str(tmp_path_factory.mktemp("dfkd-cache")))
        yield


def _teacher():
    torch.manual_seed(0)
    model = create_model("resnet8", 10)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 32, 32))  # non-trivial BN running statistics, so L_bn guides
    return model.eval().requires_grad_(False)


class _Calls:
    """Counts forward calls of a module and the batch sizes they saw."""

    def __init__(self, module: torch.nn.Module):
        self.batches: list[int] = []
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.batches.append(int(args[0].shape[0]))

    def remove(self) -> None:
        self.handle.remove()


def test_naive_config_sets_every_switch_and_keeps_the_model():
    cfg = GeneratorConfig(path="tiny:3", dtype="bfloat16", scheduler="ddim", resolution=48, channels_last=True)
    naive = naive_config(cfg)
    assert {k: getattr(naive, k) for k in NAIVE_SWITCHES} == NAIVE_SWITCHES
    assert (naive.path, naive.scheduler, naive.resolution) == ("tiny:3", "ddim", 48)
    assert (naive.max_batch, naive.cfg_batch, naive.prompt_cache, naive.attention) == (1, False, False, "eager")
    defaults = GeneratorConfig()
    assert (defaults.max_batch, defaults.cfg_batch, defaults.prompt_cache) == (None, True, True)


@pytest.mark.parametrize("value", [0, -2, 1.5, "4"])
def test_max_batch_must_be_a_positive_integer(value):
    with pytest.raises(ConfigError, match="max_batch"):
        GeneratorConfig(path="tiny", max_batch=value)


def test_the_switches_change_the_calls():
    """Naive: B × 2 U-Net calls of one latent, B decoder calls, the text encoder on every encode; fast: one each."""
    fast, naive = DiffusionBackend.from_config(FAST), DiffusionBackend.from_config(NAIVE)
    calls = {}
    for name, be in (("fast", fast), ("naive", naive)):
        unet, dec, text = _Calls(be.unet), _Calls(be.vae.decoder), _Calls(be.text_encoder)
        cond, uncond = be.encode_prompts(["A realistic photo."]), be.encode_prompts([""])
        be.encode_prompts(["A realistic photo.", ""])
        t = be.timesteps(10)[1]
        z = be.initial_latents(3, torch.Generator().manual_seed(0))  # (3, 4, 16, 16)
        be.decode(be.predict_x0(z, be.predict_noise(z, t, cond, uncond, 3.0), t))
        calls[name] = (unet.batches, dec.batches, len(text.batches))
        for hook in (unet, dec, text):
            hook.remove()
    assert calls["fast"] == ([6], [3], 2)  # one CFG call on [z, z]; the third encode is a cache hit
    assert calls["naive"] == ([1] * 6, [1, 1, 1], 3)
    for be, processor in ((fast, "AttnProcessor2_0"), (naive, "AttnProcessor")):  # SDPA / eager, U-Net and VAE
        used = [*be.unet.attn_processors.values(), *be.vae.attn_processors.values()]
        assert {type(p).__name__ for p in used} == {processor}


# every speed switch of GeneratorConfig but compile (tested below without compiling) at a setting the naive mode lacks
SWITCHED = {
    "max_batch": None,
    "cfg_batch": True,
    "prompt_cache": True,
    "attention": "sdpa",
    "channels_last": True,
    "vae_slicing": True,
    "gradient_checkpointing": True,
}


def test_every_speed_switch_is_covered():
    """Each field marked ``SPEED`` (left out of run ids and store names) has its numbers checked here."""
    speed = {f.name for f in dataclasses.fields(GeneratorConfig) if f.metadata.get("speed")}
    assert speed == set(SWITCHED) | {"compile"}
    assert set(NAIVE_SWITCHES) - {"dtype"} <= speed  # dtype changes the numbers: it names the store


@pytest.mark.parametrize("switch", [*SWITCHED, "attention=sliced"])
def test_each_switch_alone_keeps_the_numbers(switch):
    """Naive with one switch made fast: the same ε, decode and gradient w.r.t. the latent as the naive mode."""
    name, _, value = switch.partition("=")
    one = dataclasses.replace(NAIVE, **{name: value or SWITCHED[name]})
    results = []
    for cfg in (NAIVE, one):
        be = DiffusionBackend.from_config(cfg)
        cond = be.encode_prompts(["A realistic photo.", "a photo of a seven", "x"])  # one prompt per latent
        uncond = be.encode_prompts([""])
        t = be.timesteps(10)[2]
        z = be.initial_latents(3, torch.Generator().manual_seed(1)).requires_grad_(True)  # (3, 4, 16, 16)
        eps = be.predict_noise(z, t, cond, uncond, 3.0)
        images = be.decode(be.predict_x0(z, eps, t))  # (3, 3, 32, 32)
        (grad,) = torch.autograd.grad(images.square().mean(), z)
        results.append((eps.detach(), images.detach(), grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _build(method: str, generator: GeneratorConfig, **overrides):
    spec = get_dataset("digits")
    cfg = {"generator": dataclasses.asdict(generator), "num_steps": 5, "batch_size": 3, **overrides}
    if method == "diffdfkd":
        cfg["trajectories_per_class"] = 3
    else:
        cfg["images_per_class"] = 3
    if method == "prism":
        cfg["generator"]["scheduler"] = "ddim"
        cfg.update(filter=False, bn_weight=0.1, prompts={"prompts_per_class": 3, "candidates_per_class": 6})
    ctx = BuildContext(_teacher(), create_model("resnet8", 10), spec, torch.device("cpu"), 0, DistillConfig())
    return create_method(method, **cfg).build_synthesizer(ctx)


@pytest.mark.parametrize("method", ["diffdfkd", "prism", "diffusion_kd"])
def test_naive_and_optimised_modes_give_the_same_images(method):
    fast, naive = _build(method, FAST), _build(method, NAIVE)
    assert fast.identity() == naive.identity()  # same store: the switches do not name the images
    unit = fast.plan()[4]
    a, b = fast.generate(unit), naive.generate(unit)
    assert a.images.shape == b.images.shape and a.images.shape[0] >= 3
    torch.testing.assert_close(a.images, b.images, atol=ATOL, rtol=0)  # measured: ≤ 6e-6 apart
    assert torch.equal(a.labels, b.labels)
    # without guidance the same unit is ≥ 10× the tolerance away (measured: ~6e-4): guidance is not below it
    if method != "diffusion_kd":
        off = {"bn_weight": 0.0, "ce_weight": 0.0} if method == "diffdfkd" else {"energy_scale": 0.0}
        unguided = _build(method, FAST, **off).generate(unit)
        assert (unguided.images - a.images).abs().max() > 10 * ATOL


def test_teacher_loss_stays_float32_with_a_bfloat16_generator():
    """The generator may run in bfloat16; the teacher sees float32 images and gives a float32 loss and gradient."""
    synth = _build("diffdfkd", dataclasses.replace(FAST, dtype="bfloat16"))
    be = synth.backend
    assert be.unet.dtype == torch.bfloat16
    from dfkd.synthesis.losses import BNStatistics

    cond, uncond = be.encode_prompts([synth.prompt_for(2)]), be.encode_prompts([""])
    t = be.timesteps(5)[1]
    z = be.initial_latents(3, torch.Generator().manual_seed(0)).requires_grad_(True)
    seen = []
    handle = synth.teacher.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    with BNStatistics(synth.teacher, per_image=True) as bn:
        loss, _ = synth.guidance_loss(z, t, cond, uncond, torch.full((3,), 2), bn)
    handle.remove()
    (grad,) = torch.autograd.grad(loss, z)
    assert seen == [torch.float32] and loss.dtype == torch.float32
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    x = teacher_view(be.decode(z.detach()), synth.spec)
    assert x.dtype == torch.float32


def test_compile_switch_compiles_the_unet_and_the_decoder(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    be = DiffusionBackend.from_config(dataclasses.replace(TINY, compile=True))
    assert compiled == ["UNet2DConditionModel", "Decoder"]
    assert be.identity() == DiffusionBackend.from_config(TINY).identity()
