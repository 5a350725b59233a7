"""Run every built-in method on the embedded default (digits) and write results/leaderboard-digits.{csv,md}.

    python benchmarks/digits_table.py                 # seed 0, all built-in methods, both protocols
    python benchmarks/digits_table.py --seeds 0 1 2   # mean/std over seeds
    python benchmarks/digits_table.py --seeds 0 1 2 --runs runs/digits-suite   # reuse `bench suite run digits`
    python benchmarks/digits_table.py --seeds 0 1 2 --methods cmi nayer --keep  # add rows to the committed table

Each cell is an ordinary `bench run` (same presets, same records); finished records are reused. At the end it
prints a compact Markdown table (the README's): last-epoch top-1 mean ± std, best epoch, images, the synthetic
set's precision / recall / density / coverage / teacher FD, the teacher's agreement with the target class, and
synthesis + distillation seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    from dfkd.benchmark.assembly import resolve_run_config
    from dfkd.benchmark.leaderboard import (
        build_leaderboard,
        combine_leaderboards,
        load_records,
        load_reference,
        read_leaderboard,
        write_leaderboard,
        write_paper_view,
    )
    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.runner import run
    from dfkd.methods import list_methods
    from dfkd.registry import METHODS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=[m for m in list_methods() if METHODS.source(m) == "dfkd"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--protocols", nargs="+", default=["matched", "published"], choices=["matched", "published"])
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="results")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the rows of the CSV already in --out for the (method, protocol) cells not run here "
        "(their records need not be on this machine); without it the table holds only the records under --runs",
    )
    args = p.parse_args()
    for protocol in args.protocols:
        for method in args.methods:
            for seed in args.seeds:
                flags = {"seed": seed, "output_dir": args.runs, "protocol": protocol}
                cfg = resolve_run_config(method=method, dataset="digits", flags=flags)
                t0 = time.perf_counter()
                record = run(cfg, reporter=Reporter(quiet=True))
                print(
                    f"{protocol:9s} {method:14s} seed {seed}: student top-1 {record.student_top1:6.2f}%"
                    f" (best {record.student_top1_best:.2f}%)"
                    f"  teacher {record.teacher_top1:.2f}%  images {record.num_synthetic_images}"
                    f"  wall {time.perf_counter() - t0:.0f}s",
                    flush=True,
                )
    records = [
        r
        for r in load_records(args.runs)
        if r["dataset"] == "digits" and r["method"] in args.methods and r.get("protocol") in args.protocols
    ]
    df = build_leaderboard(records, dataset="digits", reference=load_reference())
    csv = Path(args.out) / "leaderboard-digits.csv"
    if args.keep and csv.is_file():
        df = combine_leaderboards(read_leaderboard(csv), df)
    for path in [*write_leaderboard(df, csv), *write_paper_view(df, args.out)]:
        print(path)
    print(summary_markdown(df))


def _cell(value, fmt: str = "{:.2f}") -> str:
    import math

    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def summary_markdown(df) -> str:
    """The README's table: one row per measured (protocol, method)."""
    head = (
        "| protocol | method | top-1 (last), mean ± std | best | seeds | images | precision | recall | density "
        "| coverage | teacher FD | teacher agrees | synthesis s | distill s | KD: T, lr, epochs |\n|" + "---|" * 15
    )
    rows = [head]
    recipes = _recipes(df)
    for _, r in df[df["kind"] == "measured"].iterrows():
        std = r.get("student_top1_std")
        top1 = _cell(r["student_top1_mean"]) + (f" ± {_cell(std)}" if std == std and std is not None else "")
        images = "real train split" if r["method"] == "real_kd" else _cell(r["num_synthetic_images"], "{:.0f}")
        rows.append(
            f"| {r['protocol']} | {r['method']} | {top1} | {_cell(r['student_top1_best_mean'])} "
            f"| {int(r['n_seeds'])} | {images} "
            f"| {_cell(r.get('precision_mean'))} | {_cell(r.get('recall_mean'))} | {_cell(r.get('density_mean'))} "
            f"| {_cell(r.get('coverage_mean'))} | {_cell(r.get('teacher_fd_mean'))} "
            f"| {_cell(r.get('synthetic/teacher_target_top1'), '{:.1f} %')} "
            f"| {_cell(r['synthesis_seconds_mean'], '{:.0f}')} | {_cell(r['distill_seconds_mean'], '{:.0f}')} "
            f"| {recipes.get((r['protocol'], r['method']), '')} |"
        )
    return "\n".join(rows)


def _recipes(df) -> dict:
    """(protocol, method) → "T 4, lr 0.05, 20 ep": the KD recipe each row was distilled with."""
    from dfkd.benchmark.assembly import resolve_run_config

    out = {}
    for _, r in df[df["kind"] == "measured"].iterrows():
        if r["protocol"] in ("matched", "published"):
            d = resolve_run_config(method=r["method"], dataset="digits", flags={"protocol": r["protocol"]}).distill
            out[(r["protocol"], r["method"])] = f"T {d.temperature:g}, lr {d.lr:g}, {d.epochs} ep"
    return out


if __name__ == "__main__":
    main()
