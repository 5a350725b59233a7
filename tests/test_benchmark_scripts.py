"""The pure parts of the performance benchmarks (benchmarks/ is scripts, not a package): which generator config each
synthesis variant runs, and the Markdown page rendered from benchmark rows. The timings themselves are never
tested (they are figures, written to results/performance.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dfkd.synthesis.diffusion import NAIVE_SWITCHES, GeneratorConfig

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OPTIMISED = {
    "path": "tiny",
    "dtype": "bfloat16",
    "resolution": None,
    "attention": "sdpa",
    "gradient_checkpointing": False,
    "channels_last": True,
    "compile": False,
    "cfg_batch": True,
    "prompt_cache": True,
    "max_batch": None,
}


def test_synthesis_variants_change_exactly_the_named_switch():
    speed = _script("synthesis_speed")
    naive = speed.generator_for("naive", OPTIMISED)
    assert {k: naive[k] for k in NAIVE_SWITCHES} == NAIVE_SWITCHES and naive["path"] == "tiny"
    assert speed.generator_for("optimised", OPTIMISED) == OPTIMISED
    for switch in speed.SWITCHES:
        plus = speed.generator_for(f"naive+{switch}", OPTIMISED)
        assert {k for k in plus if plus[k] != naive[k]} <= {switch} and plus[switch] == OPTIMISED[switch]
        minus = speed.generator_for(f"optimised-{switch}", OPTIMISED)
        assert {k for k in minus if minus[k] != OPTIMISED[k]} <= {switch} and minus[switch] == naive[switch]
    for bad in ("fast", "naive-max_batch", "optimised+dtype", "naive+colour"):
        with pytest.raises(SystemExit):
            speed.generator_for(bad, OPTIMISED)
    GeneratorConfig(**speed.generator_for("naive+max_batch", OPTIMISED))  # every variant is a valid config


def test_performance_page_renders_every_group_with_its_ratios():
    report = _script("performance_report")
    switches = {**OPTIMISED, "dtype": "float32"}
    rows = [
        {"group": "synthesis", "benchmark": "synthesis", "command": "python benchmarks/synthesis_speed.py --x",
         "method": "diffdfkd", "variant": "naive", "generator": "tiny", "resolution": 32, "steps": 10, "batch": 10,
         "device": "cpu", "threads": 2, "dtype": "float32", "switches": {**switches, **NAIVE_SWITCHES},
         "trajectories_per_s": 1.0, "stored_images_per_s": 5.0, "seconds": 10.0, "peak_memory_mib": 900.0,
         "speedup_vs_naive": 1.0},
        {"group": "synthesis", "benchmark": "synthesis", "command": "python benchmarks/synthesis_speed.py --x",
         "method": "diffdfkd", "variant": "optimised", "generator": "tiny", "resolution": 32, "steps": 10,
         "batch": 10, "device": "cpu", "threads": 2, "dtype": "float32", "switches": switches,
         "trajectories_per_s": 2.5, "stored_images_per_s": 12.5, "seconds": 4.0, "peak_memory_mib": 950.0,
         "speedup_vs_naive": 2.5},
        {"group": "synthesis", "benchmark": "synthesis", "method": "diffdfkd", "variant": "optimised",
         "generator": "tiny", "batch": 10, "dtype": "bfloat16", "skipped": "no native bfloat16"},
        {"group": "kd", "benchmark": "kd", "command": "python benchmarks/kd_speed.py", "source": "store",
         "teacher": "resnet20", "student": "resnet8", "images": 1000, "batch": 64, "device": "cpu", "threads": 2,
         "images_per_s": 950.0, "epoch_seconds": 1.05, "ratio_vs_memory": 0.95, "ratio_vs_memory_noaug": 0.8,
         "channels_last": True, "speedup_channels_last": 1.4},
        {"group": "run", "benchmark": "bench_run", "command": "python benchmarks/bench_run_time.py",
         "method": "diffdfkd", "dataset": "digits", "sets": [], "wall_seconds": 170.0,
         "teacher_and_setup_seconds": 70.0, "synthesis_seconds": 60.0, "distill_seconds": 40.0,
         "student_top1": 50.0},
    ]  # fmt: skip
    page = report.render(rows, {"cpu": "Test CPU", "logical_cpus": 2})
    assert "| `optimised` | float32 | max_batch=all, attention=sdpa, cfg_batch, prompt_cache, channels_last |" in page
    assert "| 2.5 | 12.5 | 4.0 | 950.0 | 2.50× |" in page
    assert "max_batch=1, attention=eager |" in page  # the naive row lists no fast switch
    assert "| `store` | on | 950.0 | 1.05 | 0.95× | 0.80× | 1.40× |" in page
    assert "| diffdfkd | digits | defaults | 170.0 | 70.0 | 60.0 | 40.0 | 50.0 |" in page
    assert "| cpu | Test CPU |" in page and "python benchmarks/kd_speed.py" in page
    assert "optimised 2.5 vs naive 1 trajectories/s = **2.50×** (target ≥ 2×: met)" in page
    assert "| `optimised` | bfloat16 |  |  |  |  |  |  | skipped: no native bfloat16 |" in page
    assert "(diffdfkd, `tiny`, bfloat16): not measured: no native bfloat16" in page
    assert "**0.95×** the in-memory rate" in page and "(target ≥ 0.9×: met)" in page
    assert "**170 s** wall (target < 180 s: met)" in page
    order = ["## Against the targets", "## Guided synthesis, DiffDFKD", "## KD trainer", "## Machine"]
    assert [page.index(h) for h in order] == sorted(page.index(h) for h in order)
