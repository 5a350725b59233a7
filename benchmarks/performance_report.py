"""Run the performance benchmarks and write results/performance.md (+ the raw rows in results/performance.jsonl).

    python benchmarks/performance_report.py                  # run every benchmark below (~15 min on 2 CPU cores)
    python benchmarks/performance_report.py --only kd run    # some of them (the others keep their old rows)
    python benchmarks/performance_report.py --render         # rewrite the Markdown from the JSONL only

Each benchmark is a script in benchmarks/ that prints JSON lines; this file runs them as subprocesses, tags
every row with the command that made it, and renders the tables, the machine and the commands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name → (title, arguments of `python benchmarks/...`)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "synthesis": (
        "Guided synthesis, DiffDFKD, tiny generator (digits preset sizes): naive vs optimised and each switch alone",
        [
            "benchmarks/synthesis_speed.py",
            "--generator", "tiny", "--dataset", "digits", "--batch", "10", "--steps", "10",
            "--dtype", "float32", "bfloat16", "--ablate", "--repeats", "3",
        ],
    ),
    "synthesis_prism": (
        "Guided synthesis, PRISM, tiny generator: naive vs optimised",
        [
            "benchmarks/synthesis_speed.py", "--method", "prism",
            "--generator", "tiny", "--dataset", "digits", "--batch", "10", "--steps", "10",
            "--variants", "naive", "optimised", "--repeats", "3",
        ],
    ),
    "synthesis_sd15": (
        "Guided synthesis, DiffDFKD, SD-1.5 architecture (random weights) at 256², CPU",
        [
            "benchmarks/synthesis_speed.py",
            "--generator", "sd15-random", "--dataset", "cifar10", "--resolution", "256", "--batch", "2", "--steps", "2",
            "--dtype", "float32", "bfloat16", "--variants", "naive", "optimised", "--repeats", "1",
        ],
    ),
    "kd": (
        "KD trainer: synthetic store vs tensors in memory, trainer channels_last on/off",
        ["benchmarks/kd_speed.py", "--channels-last", "on", "off"],
    ),
    "run": ("`bench run` end to end on the embedded default, fresh cache", ["benchmarks/bench_run_time.py"]),
}  # fmt: skip


def machine() -> dict:
    import torch

    from dfkd.benchmark.records import cpu_info

    mem_gib = None
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = next(int(x.split()[1]) for x in meminfo.splitlines() if x.startswith("MemTotal"))
        mem_gib = round(kib / 2**20, 1)
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        commit_id = commit.stdout.strip() or None
    except OSError:
        commit_id = None
    import diffusers

    return {
        "cpu": cpu_info()["name"],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the widest vector ISA torch's CPU kernels use
        "cpu_bf16": cpu_info()["bf16"],  # native bfloat16 (AVX512-BF16/AMX); otherwise torch emulates it
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": mem_gib,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "commit": commit_id,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def run_benchmark(name: str) -> list[dict]:
    argv = BENCHMARKS[name][1]
    command = "python " + shlex.join(argv)
    print(f"# {command}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{command} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        row.update(group=name, command=command)
    print(f"#   {len(rows)} rows in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    return rows


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return out


def _nhwc_gain(row: dict) -> str:
    """The trainer's channels_last on/off ratio, shown on the 'on' row only."""
    return f"{row['speedup_channels_last']:.2f}×" if row.get("channels_last") and "speedup_channels_last" in row else ""


def _switches(row: dict) -> str:
    s = row.get("switches", {})
    on = [f"max_batch={s.get('max_batch') or 'all'}", f"attention={s.get('attention')}"]
    on += [k for k in ("cfg_batch", "prompt_cache", "channels_last", "compile", "gradient_checkpointing") if s.get(k)]
    return ", ".join(on)


def _reason(row: dict) -> str:
    """Why a row was not measured (rows written before the wording change start with "skipped: ")."""
    return row["skipped"].removeprefix("skipped: ")


def summary(by_group: dict[str, list[dict]]) -> list[str]:
    """One line per target of the performance issue, from the measured rows."""
    out = []
    for group in by_group.values():
        if group[0]["benchmark"] != "synthesis":
            continue
        for r in group:
            if r.get("variant") != "optimised":
                continue
            label = f"- guided synthesis ({r['method']}, `{r['generator']}`, {r['dtype']}):"
            if "skipped" in r:
                out.append(f"{label} not measured: {_reason(r)}")
            elif "speedup_vs_naive" in r:
                verdict = "met" if r["speedup_vs_naive"] >= 2 else "NOT met"
                naive = r["trajectories_per_s"] / r["speedup_vs_naive"]
                out.append(
                    f"{label} optimised {r['trajectories_per_s']} vs naive {naive:.4g} trajectories/s = "
                    f"**{r['speedup_vs_naive']:.2f}×** (target ≥ 2×: {verdict})"
                )
    for r in by_group.get("kd", []):
        if r["source"] == "store" and r.get("channels_last", True):
            verdict = "met" if r["ratio_vs_memory"] >= 0.9 else "NOT met"
            out.append(
                f"- KD from the store: {r['images_per_s']} images/s = **{r['ratio_vs_memory']:.2f}×** the in-memory "
                f"rate with the same augmentation, {r['ratio_vs_memory_noaug']:.2f}× pre-augmented tensors "
                f"(target ≥ 0.9×: {verdict})"
            )
    for r in by_group.get("run", []):
        verdict = "met" if r["wall_seconds"] < 180 else "NOT met"
        out.append(
            f"- `bench run` ({r['method']} on {r['dataset']}, fresh cache): **{r['wall_seconds']:.0f} s** wall "
            f"(target < 180 s: {verdict})"
        )
    return out


def render(rows: list[dict], info: dict) -> str:
    """The Markdown page: one table per benchmark group, the machine, the commands."""
    lines = [
        "# Performance",
        "",
        "Generated by `python benchmarks/performance_report.py` from its raw rows in `performance.jsonl`; do not",
        "edit by hand. Throughputs are medians of repeated timings on a shared machine, so single figures are",
        "noisy; the ratios are measured within one script run (the same machine, generator and unit).",
        "",
        "`naive` is our own loop with every speed switch slow (`NAIVE_SWITCHES` in dfkd/synthesis/diffusion.py): one",
        "trajectory per U-Net / VAE call, float32, eager attention, the two CFG branches as two U-Net calls, the text",
        "encoder on every call. `optimised` is the defaults (whole class batch per call, one batched CFG call, cached",
        "prompt embeddings, SDPA) in the dtype shown. In float32 both give the same images",
        "(tests/test_fast_synthesis.py); bfloat16 changes the numbers (and the store identity). `naive+X` is naive",
        "with switch X alone made fast.",
        "",
    ]
    by_group: dict[str, list[dict]] = {}
    for row in rows:
        by_group.setdefault(row["group"], []).append(row)
    lines += ["## Against the targets", "", *summary(by_group), ""]
    for name, (title, _) in BENCHMARKS.items():
        group = by_group.get(name)
        if not group:
            continue
        lines += [f"## {title}", "", f"`{group[0]['command']}`", ""]
        if group[0]["benchmark"] == "synthesis":
            first = next((r for r in group if "error" not in r and "skipped" not in r), group[0])
            lines.append(
                f"{first.get('method')} on `{first.get('generator')}` at {first.get('resolution')}², "
                f"{first.get('steps')} steps, batch {first.get('batch')} trajectories of one class, "
                f"{first.get('device')} ({first.get('threads')} threads)."
            )
            lines.append("")
            table = []
            for r in group:
                if "error" in r or "skipped" in r:
                    table.append(
                        [
                            f"`{r['variant']}`",
                            r.get("dtype", ""),
                            "",
                            "",
                            "",
                            "",
                            "",
                            "",
                            r.get("error") or f"skipped: {_reason(r)}",
                        ]
                    )
                    continue
                table.append(
                    [
                        f"`{r['variant']}`",
                        r["dtype"],
                        _switches(r),
                        r["trajectories_per_s"],
                        r["stored_images_per_s"],
                        r["seconds"],
                        r["peak_memory_mib"],
                        f"{r['speedup_vs_naive']:.2f}×" if "speedup_vs_naive" in r else "",
                        "",
                    ]
                )
            header = ["variant", "dtype", "switches", "trajectories/s", "stored images/s", "s per unit"]
            lines += _table([*header, "peak MiB (RSS on CPU)", "vs naive", "note"], table)
        elif group[0]["benchmark"] == "kd":
            lines.append(
                f"{group[0]['teacher']} → {group[0]['student']} KD, {group[0]['images']} images, batch "
                f"{group[0]['batch']}, {group[0]['device']} ({group[0]['threads']} threads); median epoch time."
            )
            lines.append("")
            table = [
                [
                    f"`{r['source']}`",
                    "on" if r.get("channels_last", True) else "off",
                    r["images_per_s"],
                    r["epoch_seconds"],
                    f"{r['ratio_vs_memory']:.2f}×",
                    f"{r['ratio_vs_memory_noaug']:.2f}×",
                    _nhwc_gain(r),
                ]
                for r in group
            ]
            header = ["source", "channels_last", "images/s", "s per epoch", "vs memory", "vs memory_noaug"]
            lines += _table([*header, "channels_last on/off"], table)
        elif group[0]["benchmark"] == "bench_run":
            table = [
                [
                    r["method"],
                    r["dataset"],
                    " ".join(r["sets"]) or "defaults",
                    r["wall_seconds"],
                    r["teacher_and_setup_seconds"],
                    r["synthesis_seconds"],
                    r["distill_seconds"],
                    round(r["student_top1"], 2),
                ]
                for r in group
            ]
            header = ["method", "dataset", "overrides", "wall s", "teacher + setup s", "synthesis s", "distill s"]
            lines += _table([*header, "student top-1 %"], table)
        lines.append("")
    lines += ["## Machine", ""]
    lines += _table(["key", "value"], [[k, v] for k, v in info.items()])
    lines += ["", "## Commands", "", "```"]
    lines += ["python " + shlex.join(argv) for _, argv in BENCHMARKS.values()]
    lines += ["```", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run these; keep the other rows")
    p.add_argument("--render", action="store_true", help="only rewrite the Markdown from the JSONL")
    p.add_argument("--out", default=str(ROOT / "results"))
    args = p.parse_args()
    out = Path(args.out)
    jsonl, md = out / "performance.jsonl", out / "performance.md"
    old = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()] if jsonl.is_file() else []
    if args.render:
        rows = old
        info = next((r["machine"] for r in old if "machine" in r), {})
        rows = [r for r in rows if "machine" not in r]
    else:
        names = args.only or list(BENCHMARKS)
        rows = [r for r in old if "machine" not in r and r.get("group") not in names]
        for name in names:
            rows += run_benchmark(name)
        info = machine()
        rows.sort(key=lambda r: list(BENCHMARKS).index(r["group"]))
        out.mkdir(parents=True, exist_ok=True)
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in [{"machine": info}, *rows]))
    md.write_text(render(rows, info))
    print(md)


if __name__ == "__main__":
    main()
