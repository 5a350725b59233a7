"""Run every built-in method on the embedded default (digits) and write results/leaderboard-digits.{csv,md}.

    python benchmarks/digits_table.py                 # seed 0, all built-in methods
    python benchmarks/digits_table.py --seeds 0 1 2   # mean/std over seeds

Each cell is an ordinary `bench run` (same presets, same records); finished records are reused.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    from dfkd.benchmark.leaderboard import build_leaderboard, load_records, load_reference, write_leaderboard
    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.runner import run
    from dfkd.config import resolve_run_config
    from dfkd.methods import list_methods
    from dfkd.registry import METHODS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=[m for m in list_methods() if METHODS.source(m) == "dfkd"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="results")
    args = p.parse_args()
    for method in args.methods:
        for seed in args.seeds:
            cfg = resolve_run_config(method=method, dataset="digits", flags={"seed": seed, "output_dir": args.runs})
            t0 = time.perf_counter()
            record = run(cfg, reporter=Reporter(quiet=True))
            print(
                f"{method:14s} seed {seed}: student top-1 {record.student_top1:6.2f}%"
                f" (best {record.student_top1_best:.2f}%)"
                f"  teacher {record.teacher_top1:.2f}%  images {record.num_synthetic_images}"
                f"  wall {time.perf_counter() - t0:.0f}s",
                flush=True,
            )
    records = [r for r in load_records(args.runs) if r["dataset"] == "digits" and r["method"] in args.methods]
    df = build_leaderboard(records, dataset="digits", reference=load_reference())
    for path in write_leaderboard(df, Path(args.out) / "leaderboard-digits.csv"):
        print(path)


if __name__ == "__main__":
    main()
