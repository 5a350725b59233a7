"""Guided-synthesis speed and peak memory of a diffusion DFKD method (a benchmark, not a test).

Prints one JSON line per configuration::

    python benchmarks/synthesis_speed.py --generator tiny --dataset digits --batch 2 8 --steps 10
    python benchmarks/synthesis_speed.py --generator sd15-random --dataset cifar10 --device cuda \
        --batch 1 4 8 --dtype float16 bfloat16 --checkpointing off on --steps 50

``sd15-random`` is the full Stable Diffusion v1.5 architecture with random weights (no download): the
cost of DiffDFKD's loop at 512² — two U-Net forwards, one U-Net backward, a VAE decode and its backward
and the teacher per step — without its images. The teacher is the data set's default architecture
with random weights. ``trajectories_per_s`` counts finished trajectories (final images);
``stored_images_per_s`` counts everything the method keeps (final + intermediate x̂0).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import resource
import time

import torch


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # CPU: peak RSS of the whole process so far (Linux reports KiB): run one configuration per process to isolate it
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(args, batch: int, dtype: str, checkpointing: bool) -> dict:
    from dfkd.config import DistillConfig
    from dfkd.datasets import get_dataset
    from dfkd.methods import create_method
    from dfkd.methods.base import BuildContext, SynthesisUnit
    from dfkd.models import create_model

    device = torch.device(args.device)
    spec = get_dataset(args.dataset)
    teacher = create_model(args.teacher or spec.default_teacher, spec.num_classes).to(device).eval()
    teacher.requires_grad_(False)
    generator = {
        "path": args.generator,
        "dtype": dtype,
        "gradient_checkpointing": checkpointing,
        "resolution": args.resolution,
    }
    overrides = {"generator": generator, "num_steps": args.steps, "batch_size": max(batch, 2)}
    if args.method == "diffdfkd":
        overrides["trajectories_per_class"] = max(batch, 2)
    else:
        overrides["images_per_class"] = batch
    if args.method == "prism":
        overrides["generator"] = {**generator, "scheduler": "ddim"}
        overrides["filter"] = False  # the filter runs once after synthesis; it is not part of the per-unit cost
    method = create_method(args.method, **overrides)
    ctx = BuildContext(teacher, create_model(spec.default_student, spec.num_classes), spec, device, 0, DistillConfig())
    synth = method.build_synthesizer(ctx)
    unit = SynthesisUnit("bench", 0, 0, label=0, size=batch, info={"first": 0})
    if args.method == "diffdfkd" and batch < 2:
        synth.cfg = type(synth.cfg)(**{**synth.cfg.__dict__, "latent_cutmix": False})  # CutMix needs B ≥ 2
    warm = SynthesisUnit("warm", 0, 1, label=0, size=batch, info={"first": 0})
    steps = synth.cfg.num_steps
    synth.cfg = type(synth.cfg)(**{**synth.cfg.__dict__, "num_steps": 2})
    synth.generate(warm)  # warm-up: kernels, caches, prompt embeddings
    synth.cfg = type(synth.cfg)(**{**synth.cfg.__dict__, "num_steps": steps})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    out = synth.generate(unit)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return {
        "method": args.method,
        "generator": args.generator,
        "resolution": synth.backend.resolution,
        "dataset": args.dataset,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "dtype": str(synth.backend.dtype).removeprefix("torch."),
        "gradient_checkpointing": checkpointing,
        "batch": batch,
        "steps": steps,
        "seconds": round(seconds, 3),
        "trajectories_per_s": round(batch / seconds, 4),
        "stored_images_per_s": round(out.images.shape[0] / seconds, 4),
        "seconds_per_step": round(seconds / steps, 4),
        "peak_memory_mib": round(peak_memory_mib(device), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="diffdfkd", choices=["diffdfkd", "prism", "diffusion_kd"])
    p.add_argument("--generator", default="tiny", help="tiny | sd15-random | a Hub id or local folder")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--teacher", help="teacher architecture (random weights); default: the data set's")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[8])
    p.add_argument("--dtype", nargs="+", default=["float32"])
    p.add_argument("--checkpointing", nargs="+", default=["off"], choices=["off", "on"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--resolution", type=int, default=None)
    args = p.parse_args()
    for batch, dtype, ckpt in itertools.product(args.batch, args.dtype, args.checkpointing):
        try:
            row = measure(args, batch, dtype, ckpt == "on")
        except torch.cuda.OutOfMemoryError:
            row = {"batch": batch, "dtype": dtype, "gradient_checkpointing": ckpt == "on", "error": "out of memory"}
            torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
