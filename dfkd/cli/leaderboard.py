"""bench leaderboard: turn run records into comparison CSVs (+ Markdown)."""

from __future__ import annotations

import argparse
import sys

from dfkd.paths import safe_name


def add_parser(sub) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="build leaderboard CSV/Markdown from run records",
        description="Collect every record.json under --runs, average over seeds, add the published reference rows "
        "(flagged kind=reference) and write leaderboard-<dataset>.csv and .md.",
    )
    p.add_argument(
        "--runs", nargs="+", default=["runs"], metavar="DIR", help="folder(s) searched for record.json (default ./runs)"
    )
    p.add_argument("--dataset", "-d", help="only this data set")
    p.add_argument(
        "--output-dir", "-o", metavar="DIR", help="folder for leaderboard-<dataset>.csv/.md (default: --runs)"
    )
    p.add_argument("--out", help="output .csv file or folder (default: the --runs folder)")
    p.add_argument("--no-reference", action="store_true", help="leave out the published reference rows")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dfkd.benchmark.leaderboard import (
        build_leaderboard,
        load_records,
        load_reference,
        paper_markdown,
        paper_view,
        write_leaderboard,
        write_paper_view,
    )
    from dfkd.errors import UserError

    records = load_records(args.runs)
    datasets = sorted({r["dataset"] for r in records}) if not args.dataset else [args.dataset]
    if not datasets:
        raise UserError(f"No record.json under {' '.join(args.runs)}; run `bench run` first or pass --runs DIR")
    reference = None if args.no_reference else load_reference()
    out = Path(args.out or args.output_dir or args.runs[0])
    for dataset in datasets:
        df = build_leaderboard([r for r in records if r["dataset"] == dataset], dataset=dataset, reference=reference)
        target = out if out.suffix == ".csv" and len(datasets) == 1 else out / f"leaderboard-{safe_name(dataset)}.csv"
        for path in write_leaderboard(df, target):
            print(path)
        for path in write_paper_view(df, target.parent if target.suffix == ".csv" else target):
            print(path)
        sys.stderr.write(paper_markdown(paper_view(df)) + "\n")  # the paper view, to read now (stdout: the files)
    return 0
