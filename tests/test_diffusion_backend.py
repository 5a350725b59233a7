"""The diffusion backend and the offline CLIP tokenizer, on the tiny random generator (CPU, offline)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dfkd.errors import ConfigError, UserError
from dfkd.synthesis.diffusion import DiffusionBackend, GeneratorConfig
from dfkd.synthesis.diffusion_configs import build_tiny_components, save_tiny_pretrained
from dfkd.synthesis.tokenizer import clip_tokenizer

PROMPT = "A realistic photo."
PROMPT_IDS = [49406, 320, 16157, 1125, 269, 49407]  # Stable Diffusion v1.x's CLIP tokenizer


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    """Keep the tokenizer files (and anything else cached) out of the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFKD_CACHE", str(tmp_path_factory.mktemp("dfkd-cache")))
        yield


@pytest.fixture(scope="module")
def backend() -> DiffusionBackend:
    return DiffusionBackend.from_config(GeneratorConfig(path="tiny", dtype="float32"))


@pytest.fixture(scope="module")
def text(backend):
    return backend.encode_prompts([PROMPT]), backend.encode_prompts([""])  # (1, 77, 32) each


def _latents(backend, batch=2, seed=0):
    return backend.initial_latents(batch, torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ tokenizer


def test_tokenizer_gives_stable_diffusion_ids(tmp_path):
    tok = clip_tokenizer(tmp_path / "tok")
    ids = tok(PROMPT, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    assert tok.model_max_length == 77
    assert ids == PROMPT_IDS + [49407] * (77 - len(PROMPT_IDS))
    assert len(tok) == 49408
    assert tok.pad_token_id == tok.eos_token_id == 49407 and tok.bos_token_id == 49406


def test_tokenizer_files_are_written_once(tmp_path):
    clip_tokenizer(tmp_path / "tok")
    vocab = tmp_path / "tok" / "vocab.json"
    stamp = vocab.stat().st_mtime_ns
    clip_tokenizer(tmp_path / "tok")
    assert vocab.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]  # no temporary folder left behind


# ------------------------------------------------------------------------------------------ tiny backend


def test_shapes_and_range(backend, text):
    cond, uncond = text
    assert cond.shape == (1, 77, 32) and cond.dtype == torch.float32
    assert (backend.latent_channels, backend.latent_size, backend.image_size, backend.vae_scale_factor) == (
        4,
        16,
        32,
        2,
    )
    t = backend.timesteps(10)[0]
    z = _latents(backend, 3)  # (3, 4, 16, 16)
    assert z.shape == (3, 4, 16, 16) and z.dtype == torch.float32
    eps = backend.predict_noise(z, t, cond, uncond, 3.0)
    assert eps.shape == z.shape and eps.dtype == torch.float32
    images = backend.decode(backend.predict_x0(z, eps, t))
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1


def test_encode_prompts_is_cached(backend):
    calls = []
    handle = backend.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        first = backend.encode_prompts(["a cached prompt", "another one", "a cached prompt"])
        assert len(calls) == 1 and first.shape == (3, 77, 32)
        assert torch.equal(first[0], first[2])
        again = backend.encode_prompts(["another one", "a cached prompt"])
        assert len(calls) == 1  # nothing re-encoded
        assert torch.equal(again, first[[1, 0]])
        assert not again.requires_grad
    finally:
        handle.remove()


def test_batched_cfg_matches_two_calls(backend, text):
    cond, uncond = text
    t = backend.timesteps(10)[3]
    z = _latents(backend, 4)
    batched = backend.predict_noise(z, t, cond, uncond, 3.0)
    eps_c, eps_u = backend._unet(z, t, cond.expand(4, -1, -1)), backend._unet(z, t, uncond.expand(4, -1, -1))
    naive = eps_u + 3.0 * (eps_c - eps_u)  # two separate U-Net calls (cfg_batch=False), (4, C, h, w)
    torch.testing.assert_close(batched, naive, atol=1e-5, rtol=0)
    per_sample = backend.predict_noise(z, t, cond.expand(4, -1, -1), uncond.expand(4, -1, -1), 3.0)
    torch.testing.assert_close(batched, per_sample, atol=1e-5, rtol=0)
    # guidance 1 or no unconditional embedding: the conditional prediction alone
    torch.testing.assert_close(
        backend.predict_noise(z, t, cond, uncond, 1.0), backend.predict_noise(z, t, cond, None, 3.0)
    )


def test_gradient_reaches_latent(backend, text):
    cond, uncond = text
    t = backend.timesteps(10)[2]
    z = _latents(backend, 2).requires_grad_(True)
    images = backend.decode(backend.predict_x0(z, backend.predict_noise(z, t, cond, uncond, 3.0), t))
    (grad,) = torch.autograd.grad(images.mean(), z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert not any(p.requires_grad for p in backend.unet.parameters())


def test_ddpm_step_is_reproducible(backend, text):
    cond, uncond = text
    t = backend.timesteps(10)[0]
    z = _latents(backend, 2)
    with torch.no_grad():
        eps = backend.predict_noise(z, t, cond, uncond, 3.0)
    a = backend.step(eps, t, z, generator=torch.Generator().manual_seed(7))
    b = backend.step(eps, t, z, generator=torch.Generator().manual_seed(7))
    c = backend.step(eps, t, z, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)  # ancestral sampling: the noise comes from the generator
    assert torch.equal(_latents(backend, 2, seed=3), _latents(backend, 2, seed=3))


def test_ddim_is_selectable(text):
    from diffusers import DDIMScheduler, DDPMScheduler

    ddim = DiffusionBackend.from_config(GeneratorConfig(path="tiny", dtype="float32", scheduler="ddim"))
    assert isinstance(ddim.scheduler, DDIMScheduler)
    assert ddim.scheduler.config.steps_offset == 1 and not ddim.scheduler.config.set_alpha_to_one
    ts = ddim.timesteps(5)
    assert ts.tolist() == [801, 601, 401, 201, 1]  # "leading" spacing + steps_offset, as SD v1.5 samples
    cond, uncond = text
    z = _latents(ddim, 2)
    with torch.no_grad():
        eps = ddim.predict_noise(z, ts[0], cond, uncond, 3.0)
    a = ddim.step(eps, ts[0], z, generator=torch.Generator().manual_seed(1))
    b = ddim.step(eps, ts[0], z, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)  # eta = 0: deterministic
    assert ddim.identity() != DiffusionBackend.from_config(GeneratorConfig(path="tiny", dtype="float32")).identity()
    assert isinstance(build_tiny_components()["scheduler"], DDPMScheduler)


def test_alpha_bar_and_x0(backend):
    t = backend.timesteps(10)[4]
    ab = backend.alpha_bar(t)
    assert ab.dtype == torch.float32 and ab.ndim == 0
    assert ab.item() == pytest.approx(backend.scheduler.alphas_cumprod[int(t)].item())
    x0 = torch.randn(2, 4, 16, 16)
    eps = torch.randn(2, 4, 16, 16)
    z = ab.sqrt() * x0 + (1 - ab).sqrt() * eps  # forward process q(z_t | x0)
    torch.testing.assert_close(backend.predict_x0(z, eps, t), x0, atol=1e-5, rtol=1e-5)


def test_memory_switches_keep_the_numbers(backend, text):
    cond, uncond = text
    lean = DiffusionBackend.from_config(
        GeneratorConfig(
            path="tiny",
            dtype="float32",
            attention="sliced",
            vae_slicing=True,
            gradient_checkpointing=True,
            channels_last=True,
        )
    )
    assert lean.identity() == backend.identity()
    t = backend.timesteps(10)[1]
    lean.timesteps(10)
    results = []
    for b in (backend, lean):
        z = _latents(b, 3).requires_grad_(True)
        images = b.decode(b.predict_x0(z, b.predict_noise(z, t, cond, uncond, 3.0), t))
        (grad,) = torch.autograd.grad(images.square().mean(), z)
        results.append((images.detach(), grad))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-7, rtol=1e-3)


def test_tiny_build_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_components(seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_v_prediction_is_converted_to_epsilon(text):
    from diffusers import DDPMScheduler

    parts = build_tiny_components()
    config = dict(parts["scheduler"].config) | {"prediction_type": "v_prediction"}
    backend = DiffusionBackend(
        parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"], config, GeneratorConfig(dtype="float32")
    )
    assert isinstance(backend.scheduler, DDPMScheduler) and backend.scheduler.config.prediction_type == "epsilon"
    cond, _ = text
    t = backend.timesteps(10)[3]
    z = _latents(backend, 2)
    with torch.no_grad():
        v = backend.unet(z, t, encoder_hidden_states=cond.expand(2, -1, -1)).sample
        eps = backend.predict_noise(z, t, cond, None, 1.0)
    ab = backend.alpha_bar(t)
    torch.testing.assert_close(backend.predict_x0(z, eps, t), ab.sqrt() * z - (1 - ab).sqrt() * v, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ loading


def test_local_folder_loads_like_tiny(tmp_path, backend, text):
    folder = save_tiny_pretrained(tmp_path / "tiny-sd")
    assert {p.name for p in folder.iterdir()} >= {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    loaded = DiffusionBackend.from_config(GeneratorConfig(path=str(folder), dtype="float32"))
    assert loaded.identity()["path"] == str(folder.resolve()) != backend.identity()["path"]
    cond, uncond = text
    torch.testing.assert_close(loaded.encode_prompts([PROMPT]), cond, atol=0, rtol=0)
    t = loaded.timesteps(10)[2]
    assert torch.equal(t, backend.timesteps(10)[2])
    z = _latents(backend, 2)
    eps = [b.predict_noise(z, t, cond, uncond, 3.0) for b in (backend, loaded)]
    torch.testing.assert_close(eps[0], eps[1], atol=0, rtol=0)
    torch.testing.assert_close(backend.decode(z), loaded.decode(z), atol=0, rtol=0)
    gen = [b.step(e, t, z, generator=torch.Generator().manual_seed(0)) for b, e in zip((backend, loaded), eps)]
    torch.testing.assert_close(gen[0], gen[1], atol=0, rtol=0)


def _assert_one_line_user_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message and message
    for needle in needles:
        assert needle in message


def test_missing_local_folder_is_a_user_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError) as excinfo:
        DiffusionBackend.from_config(GeneratorConfig(path=str(missing)))
    _assert_one_line_user_error(excinfo, str(missing), "local diffusers folder")


def test_folder_without_components_is_a_user_error(tmp_path):
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(UserError) as excinfo:
        DiffusionBackend.from_config(GeneratorConfig(path=str(tmp_path / "empty-model")))
    _assert_one_line_user_error(excinfo, "unet", "empty-model")


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")  # diffusers → hub 1.x
def test_unreachable_hub_id_is_a_user_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time; patch the live value too
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(UserError) as excinfo:
        DiffusionBackend.from_config(GeneratorConfig(path="dfkd-bench-tests/no-such-model"))
    _assert_one_line_user_error(excinfo, "dfkd-bench-tests/no-such-model", "download", "HF_HUB_OFFLINE")


# ------------------------------------------------------------------------------------------ config & identity


def test_identity_tracks_what_changes_outputs(backend):
    bf16 = DiffusionBackend.from_config(GeneratorConfig(path="tiny", dtype="bfloat16"))
    assert bf16.identity() != backend.identity()
    assert bf16.identity()["dtype"] == "bfloat16" and backend.identity()["dtype"] == "float32"
    # float16 on CPU runs in float32: same outputs, same identity
    assert DiffusionBackend.from_config(GeneratorConfig(path="tiny")).identity() == backend.identity()
    assert (
        DiffusionBackend.from_config(GeneratorConfig(path="tiny:1", dtype="float32")).identity() != backend.identity()
    )
    assert DiffusionBackend.from_config(GeneratorConfig(path="tiny", resolution=64)).identity() != backend.identity()
    # the bf16 model takes and returns float32
    t = bf16.timesteps(10)[0]
    z = _latents(bf16, 2)
    eps = bf16.predict_noise(z, t, bf16.encode_prompts([PROMPT]), bf16.encode_prompts([""]), 3.0)
    assert eps.dtype == torch.float32 and bf16.decode(z).dtype == torch.float32


@pytest.mark.parametrize(
    "field,value",
    [("dtype", "float64"), ("scheduler", "pndm"), ("attention", "flash"), ("resolution", 0), ("path", "tiny:x")],
)
def test_bad_config_values(field, value):
    with pytest.raises(ConfigError):
        DiffusionBackend.from_config(dataclasses.replace(GeneratorConfig(path="tiny"), **{field: value}))


def test_resolution_must_fit_the_latent_grid():
    with pytest.raises(ConfigError, match="multiple of 4"):
        DiffusionBackend.from_config(GeneratorConfig(path="tiny", resolution=34))
    big = DiffusionBackend.from_config(GeneratorConfig(path="tiny", resolution=48))
    assert (big.latent_size, big.image_size) == (24, 48)
    assert big.decode(_latents(big, 1)).shape == (1, 3, 48, 48)
