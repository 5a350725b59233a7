"""Guided-synthesis speed and peak memory of a diffusion DFKD method, naive vs optimised (a benchmark, not a test).

Prints one JSON line per (variant, batch, dtype, checkpointing)::

    python benchmarks/synthesis_speed.py --generator tiny --dataset digits --batch 10 --steps 10
    python benchmarks/synthesis_speed.py --generator tiny --batch 10 --variants naive optimised --ablate
    python benchmarks/synthesis_speed.py --generator sd15-random --dataset cifar10 --device cuda \
        --batch 1 4 8 --dtype float16 bfloat16 --checkpointing off on --steps 50

Variants (the same method, unit, seed and generator weights; only the execution switches differ):

* ``naive``: every speed switch at its slow setting (``dfkd.synthesis.diffusion.NAIVE_SWITCHES``): one
  trajectory per U-Net / VAE call, float32, eager attention, the CFG branches as two U-Net calls, the text
  encoder on every call. The same algorithm, and in float32 the same images (tests/test_fast_synthesis.py).
* ``optimised``: the defaults (the whole class batch per call, one batched CFG call, cached prompt embeddings,
  SDPA attention) with the ``--dtype`` / ``--checkpointing`` / ``--channels-last`` / ``--compile`` given.
* ``naive+SWITCH``: naive with that one switch optimised; ``optimised-SWITCH``: optimised with that one switch
  naive. SWITCH is one of max_batch, cfg_batch, prompt_cache, attention, channels_last, dtype, compile.
  ``--ablate`` adds naive and every ``naive+SWITCH`` that differs from naive.

Every row runs in its own subprocess (so the CPU peak RSS is its own) and reports the median of
``--repeats`` timed units after a 2-step warm-up; ``speedup_vs_naive`` divides its images/s by the naive
row's of the same batch in this run. ``sd15-random`` is the full Stable Diffusion v1.5 architecture with
random weights (no download): the cost of DiffDFKD's loop — two U-Net forwards, one U-Net backward, a VAE
decode and its backward and the teacher per step — without its images. The teacher is the data set's default
architecture with random weights. ``trajectories_per_s`` counts final images; ``stored_images_per_s``
everything the method keeps (final + intermediate x̂0).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from dfkd.benchmark.records import cpu_info

SWITCHES = ("max_batch", "cfg_batch", "prompt_cache", "attention", "channels_last", "dtype", "compile")


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # CPU: peak RSS of this process (Linux reports KiB); every row runs in its own process
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generator_for(variant: str, optimised: dict) -> dict:
    """The generator config (as a dict) of ``variant``, from the optimised one."""
    from dfkd.synthesis.diffusion import NAIVE_SWITCHES

    naive = {**optimised, **NAIVE_SWITCHES, "gradient_checkpointing": False}
    if variant == "naive":
        return naive
    if variant == "optimised":
        return dict(optimised)
    base, sign, switch = variant.partition("+") if "+" in variant else variant.partition("-")
    if (base, sign) not in (("naive", "+"), ("optimised", "-")) or switch not in SWITCHES:
        raise SystemExit(
            f"unknown variant {variant!r}: naive, optimised, naive+SWITCH or optimised-SWITCH ({', '.join(SWITCHES)})"
        )
    return {**naive, switch: optimised[switch]} if sign == "+" else {**optimised, switch: naive[switch]}


def measure(job: dict) -> dict:
    """One row: build the method with ``job['generator']``, warm up, time ``job['repeats']`` units."""
    from dfkd.config import DistillConfig
    from dfkd.datasets import get_dataset
    from dfkd.methods import create_method
    from dfkd.methods.base import BuildContext, SynthesisUnit
    from dfkd.models import create_model

    device = torch.device(job["device"])
    spec = get_dataset(job["dataset"])
    teacher = create_model(job["teacher"] or spec.default_teacher, spec.num_classes).to(device).eval()
    teacher.requires_grad_(False)
    batch, method_name, generator = job["batch"], job["method"], dict(job["generator"])
    overrides = {"generator": generator, "num_steps": job["steps"], "batch_size": max(batch, 2)}
    if method_name == "diffdfkd":
        overrides["trajectories_per_class"] = max(batch, 2)
    else:
        overrides["images_per_class"] = batch
    if method_name == "prism":
        overrides["generator"] = {**generator, "scheduler": "ddim"}
        overrides["filter"] = False  # the filter runs once after synthesis; it is not part of the per-unit cost
    method = create_method(method_name, **overrides)
    ctx = BuildContext(teacher, create_model(spec.default_student, spec.num_classes), spec, device, 0, DistillConfig())
    synth = method.build_synthesizer(ctx)
    if method_name == "diffdfkd" and batch < 2:
        synth.cfg = type(synth.cfg)(**{**synth.cfg.__dict__, "latent_cutmix": False})  # CutMix needs B ≥ 2
    unit = SynthesisUnit("bench", 0, 0, label=0, size=batch, info={"first": 0})
    steps = synth.cfg.num_steps
    synth.cfg = type(synth.cfg)(**{**synth.cfg.__dict__, "num_steps": 2})
    t0 = time.perf_counter()
    synth.generate(SynthesisUnit("warm", 0, 1, label=0, size=batch, info={"first": 0}))  # kernels, compile
    warmup = time.perf_counter() - t0
    synth.cfg = type(synth.cfg)(**{**synth.cfg.__dict__, "num_steps": steps})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times, stored = [], 0
    for _ in range(job["repeats"]):
        t0 = time.perf_counter()
        out = synth.generate(unit)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        stored = out.images.shape[0]
    seconds = statistics.median(times)
    return {
        "benchmark": "synthesis",
        "method": method_name,
        "variant": job["variant"],
        "generator": generator["path"],
        "resolution": synth.backend.resolution,
        "dataset": job["dataset"],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_info()["name"],
        "threads": torch.get_num_threads(),
        "dtype": str(synth.backend.dtype).removeprefix("torch."),
        "switches": {k: generator[k] for k in (*SWITCHES, "gradient_checkpointing") if k in generator},
        "batch": batch,
        "steps": steps,
        "repeats": job["repeats"],
        "seconds": round(seconds, 3),
        "seconds_all": [round(t, 3) for t in times],
        "warmup_seconds": round(warmup, 2),
        "trajectories_per_s": round(batch / seconds, 4),
        "stored_images_per_s": round(stored / seconds, 4),
        "seconds_per_step": round(seconds / steps, 4),
        "peak_memory_mib": round(peak_memory_mib(device), 1),
    }


def run_isolated(job: dict) -> dict:
    """``measure(job)`` in a fresh Python process (its own peak memory, no warm caches from other rows)."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--job", json.dumps(job)], capture_output=True, text=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"benchmark": "synthesis", "variant": job["variant"], "batch": job["batch"], "error": tail[0]}
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="diffdfkd", choices=["diffdfkd", "prism", "diffusion_kd"])
    p.add_argument("--generator", default="tiny", help="tiny | sd15-random | a Hub id or local folder")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--teacher", help="teacher architecture (random weights); default: the data set's")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[8])
    p.add_argument("--dtype", nargs="+", default=["float32"], help="dtype of the optimised variants")
    p.add_argument("--checkpointing", nargs="+", default=["off"], choices=["off", "on"])
    p.add_argument("--channels-last", choices=["off", "on"], default="off", help="optimised variants")
    p.add_argument("--compile", choices=["off", "on"], default="off", help="optimised variants: torch.compile")
    p.add_argument("--attention", default="sdpa", help="attention of the optimised variants (sdpa | eager)")
    p.add_argument("--variants", nargs="+", default=["optimised"], help="naive, optimised, naive+S, optimised-S")
    p.add_argument("--ablate", action="store_true", help="also naive and every naive+SWITCH variant")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3, help="timed units per row (the median is reported)")
    p.add_argument(
        "--emulated-bf16", action="store_true", help="run bfloat16 rows on a CPU without native bfloat16 too"
    )
    p.add_argument("--job", help=argparse.SUPPRESS)  # internal: one row, in this process
    args = p.parse_args()
    if args.job:
        job = json.loads(args.job)
        try:
            row = measure(job)
        except torch.cuda.OutOfMemoryError:
            row = {"benchmark": "synthesis", "variant": job["variant"], "batch": job["batch"], "error": "out of memory"}
        print(json.dumps(row), flush=True)
        return

    ablation = ["naive", *(f"naive+{s}" for s in SWITCHES)] if args.ablate else []
    variants = list(dict.fromkeys(args.variants + ablation))
    variants.sort(key=lambda v: v != "naive")  # the naive row first: the others are divided by it
    # bfloat16 that torch only emulates on this CPU would measure the emulation, not the switch
    skip_bf16 = args.device == "cpu" and not args.emulated_bf16 and cpu_info()["bf16"] is False
    naive_speed: dict[int, float] = {}
    measured: set[str] = set()  # (batch, generator) already measured: --dtype A B repeats only what changes
    for batch, dtype, ckpt, variant in itertools.product(args.batch, args.dtype, args.checkpointing, variants):
        optimised = {
            "path": args.generator,
            "dtype": dtype,
            "resolution": args.resolution,
            "attention": args.attention,
            "gradient_checkpointing": ckpt == "on",
            "channels_last": args.channels_last == "on",
            "compile": args.compile == "on",
            "cfg_batch": True,
            "prompt_cache": True,
            "max_batch": None,
        }
        generator = generator_for(variant, optimised)
        key = json.dumps([batch, generator], sort_keys=True)
        if key in measured:
            continue  # e.g. naive, which ignores --dtype / --checkpointing: one row per batch
        measured.add(key)
        switch = variant.partition("+")[2] or variant.partition("-")[2]
        if switch and generator_for("naive", optimised)[switch] == optimised[switch]:
            print(f"# {variant}: {switch} is the same in naive and optimised here; skipped", file=sys.stderr)
            continue
        if generator["dtype"] == "bfloat16" and skip_bf16:
            reason = "this CPU has no native bfloat16 (AVX512-BF16/AMX), torch emulates it (--emulated-bf16 runs it)"
            row = {"benchmark": "synthesis", "method": args.method, "variant": variant, "generator": args.generator}
            print(json.dumps({**row, "batch": batch, "dtype": "bfloat16", "skipped": reason}), flush=True)
            continue
        job = {
            "method": args.method,
            "dataset": args.dataset,
            "teacher": args.teacher,
            "device": args.device,
            "batch": batch,
            "steps": args.steps,
            "repeats": args.repeats,
            "variant": variant,
            "generator": generator,
        }
        row = run_isolated(job)
        if "trajectories_per_s" in row:
            if variant == "naive":
                naive_speed[batch] = row["trajectories_per_s"]
            if batch in naive_speed:
                row["speedup_vs_naive"] = round(row["trajectories_per_s"] / naive_speed[batch], 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
