"""The bad-input catalogue: what a user would mistype or try, each refused before any work starts.

Every case runs `bench run …` (or another verb) in-process and must exit 1 with exactly one line on stderr, no
traceback, and nothing written: no run folder, no teacher, no store, no cache entry.
"""

from __future__ import annotations

import pytest

from dfkd.cli.main import main

RUN = ["run", "--method", "diffdfkd"]

CASES: dict[str, list[str]] = {
    # names
    "unknown method": ["run", "--method", "prsim"],
    "unknown data set": ["run", "--dataset", "cifar11"],
    "unknown student": ["run", "--student", "resnt8"],
    "missing teacher file": ["run", "--teacher", "/nonexistent/teacher.pth"],
    "missing config file": ["run", "--config", "/nonexistent/config.yaml"],
    "unknown top-level key": [*RUN, "--set", "distil.epochs=3"],
    "unknown distill key": [*RUN, "--set", "distill.epoch=3"],
    "unknown method key": [*RUN, "--set", "diffdfkd.bn_wieght=0.2"],
    "--set without '='": [*RUN, "--set", "distill.epochs"],
    # distillation recipe: type, range, choice
    "zero epochs": [*RUN, "--set", "distill.epochs=0"],
    "negative epochs": [*RUN, "--set", "distill.epochs=-1"],
    "fractional epochs": [*RUN, "--set", "distill.epochs=1.5"],
    "boolean epochs": [*RUN, "--set", "distill.epochs=true"],
    "NaN learning rate": [*RUN, "--set", "distill.lr=.nan"],
    "infinite learning rate": [*RUN, "--set", "distill.lr=.inf"],
    "negative learning rate": [*RUN, "--set", "distill.lr=-0.1"],
    "zero learning rate": [*RUN, "--set", "distill.lr=0"],
    "text learning rate": [*RUN, "--set", "distill.lr=fast"],
    "list learning rate": [*RUN, "--set", "distill.lr=[1, 2]"],
    "zero batch size": [*RUN, "--set", "distill.batch_size=0"],
    "zero eval_every": [*RUN, "--set", "distill.eval_every=0"],
    "unknown optimiser": [*RUN, "--set", "distill.optimizer=adamw"],
    "unknown schedule": [*RUN, "--set", "distill.schedule=cos"],
    "unknown AMP dtype": [*RUN, "--set", "distill.amp=fp8"],
    "zero temperature": [*RUN, "--set", "distill.temperature=0"],
    "negative weight decay": [*RUN, "--set", "distill.weight_decay=-1e-4"],
    "warm-up longer than training": [*RUN, "--set", "distill.warmup_epochs=500"],
    "milestone zero": [*RUN, "--set", "distill.milestones=[0, 10]"],
    "nothing to train on": [*RUN, "--set", "distill.kd_weight=0", "--set", "distill.ce_weight=0"],
    "negative workers": [*RUN, "--set", "distill.num_workers=-2"],
    "teacher recipe zero epochs": [*RUN, "--set", "teacher_train.epochs=0"],
    "teacher recipe NaN lr": [*RUN, "--set", "teacher_train.lr=.nan"],
    "negative seed": [*RUN, "--set", "seed=-1"],
    "dg not a mapping": [*RUN, "--set", "dg=5"],
    # diagnose
    "diagnose k = 0": [*RUN, "--set", "diagnose.k=0"],
    "diagnose fractional k": [*RUN, "--set", "diagnose.k=2.5"],
    "diagnose negative max_images": [*RUN, "--set", "diagnose.max_images=-1"],
    "diagnose zero chunk": [*RUN, "--set", "diagnose.chunk=0"],
    "CLIP model without weights": [*RUN, "--set", "diagnose.clip_model=ViT-B-32"],
    # the method and its generator
    "DiffDFKD batch of one": [*RUN, "--set", "batch_size=1"],
    "DiffDFKD one step": [*RUN, "--set", "num_steps=1"],
    "DiffDFKD one trajectory": [*RUN, "--set", "trajectories_per_class=1"],
    "generator dtype": [*RUN, "--set", "generator.dtype=float8"],
    "generator scheduler": [*RUN, "--set", "generator.scheduler=pndm"],
    "generator attention": [*RUN, "--set", "generator.attention=flash"],
    "generator max_batch 0": [*RUN, "--set", "generator.max_batch=0"],
    "generator resolution": [*RUN, "--set", "generator.resolution=-32"],
    "generator tiny seed": [*RUN, "--set", "generator.path=tiny:abc"],
    "generator folder missing": [*RUN, "--set", "generator.path=/nonexistent/sd15"],
    "PRISM content source": ["run", "--method", "prism", "--set", "prompts.contents=web"],
    "PRISM empty prompt set": ["run", "--method", "prism", "--set", "prompts.prompts_per_class=0"],
    "PRISM vocabulary": ["run", "--method", "prism", "--set", "prompts.vocabulary=emoji"],
    "PRISM window": ["run", "--method", "prism", "--set", "guidance_start=0.9", "--set", "guidance_stop=0.1"],
    "diffusion KD zero batch": ["run", "--method", "diffusion_kd", "--set", "batch_size=0"],
    # protocols and budgets
    "unknown protocol": ["run", "--protocol", "publised"],
    "unknown protocol via --set": [*RUN, "--set", "protocol=matchd"],
    "no published recipe": ["run", "--dataset", "imagenet", "--method", "deepinversion", "--protocol", "published"],
    "budget larger than any disk": [*RUN, "--set", "trajectories_per_class=100000000000"],
    "noise budget larger than any disk": ["run", "--method", "noise_kd", "--set", "images_per_class=10000000000000"],
    "DeepInversion adversary form": ["run", "--method", "deepinversion", "--set", "adv_loss=kl"],
    "DeepInversion kept iterate": ["run", "--method", "deepinversion", "--set", "keep=last"],
    # where the output goes
    "output folder is a file": ["run", "--method", "noise_kd", "--output-dir", "/etc/hostname/runs"],
    # other verbs
    "generator build: zero steps": ["generator", "build", "glyphs", "--set", "unet_steps=0"],
    "generator build: unknown key": ["generator", "build", "glyphs", "--set", "unet_step=10"],
    "synth export of a missing store": ["synth", "export", "/nonexistent/store", "/tmp/never-written"],
    "leaderboard of a missing folder": ["leaderboard", "--runs", "/nonexistent/runs"],
}


@pytest.mark.parametrize("argv", list(CASES.values()), ids=list(CASES))
def test_bad_input_fails_before_work_with_one_line(argv, tmp_path, capsys, _isolated_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    if argv[0] == "run" and "--output-dir" not in argv:
        argv = [*argv, "--output-dir", str(out)]
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 1, (argv, err)
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists(), "a run folder was written"
    assert not any(_isolated_cache.rglob("*.pth")) and not (_isolated_cache / "stores").exists()
    assert not (tmp_path / "never-written").exists()


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 40


def test_a_budget_that_does_not_fit_the_free_space_is_refused_with_its_estimate(tmp_path, monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    from dfkd.benchmark.assembly import resolve_run_config
    from dfkd.benchmark.runner import check_budget_fits
    from dfkd.datasets import get_dataset
    from dfkd.errors import UserError

    cfg = resolve_run_config(method="noise_kd", dataset="digits")  # 500 images of 3×32×32: 1.5 MB
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**12, 10**12 - 10**6, 10**6))  # 1 MB free
    with pytest.raises(UserError, match=r"needs about 0\.0 GiB \(500 images .* GiB free"):
        check_budget_fits(cfg, get_dataset("digits"), tmp_path, free=True)
    check_budget_fits(cfg, get_dataset("digits"), tmp_path, free=True, done=200)  # 300 left: 0.9 MB fits
    check_budget_fits(cfg, get_dataset("digits"), tmp_path, free=False)  # the disk as a whole holds it


def test_unusual_but_valid_values_are_noted_not_refused() -> None:
    from dfkd.config import DistillConfig

    assert DistillConfig().unusual() == []
    notes = DistillConfig(lr=5.0, temperature=500.0, schedule="step", milestones=(300,)).unusual()
    assert [n.split()[0] for n in notes] == ["distill.lr", "distill.temperature", "distill.milestones"]


def test_files_the_suite_writes_get_ordinary_permissions(tmp_path) -> None:
    import os

    import torch

    from dfkd.models.checkpoint import save_weights
    from dfkd.synthesis.tokenizer import write_tokenizer_files

    mask = os.umask(0o022)
    os.umask(mask)
    weights = save_weights({"w": torch.zeros(1)}, tmp_path / "teacher.pth")
    assert weights.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
    folder = write_tokenizer_files(tmp_path / "tok", vocab_merges=({"a</w>": 0}, []))
    assert folder.stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's 0700
