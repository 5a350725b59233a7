"""bench run: synthesize, distil, evaluate and record one benchmark cell."""

from __future__ import annotations

import argparse

from dfkd.cli.common import add_config_options, resolve


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run a method end to end (default: diffdfkd on digits, CPU)",
        description="Provision the teacher, synthesize, distil the student, evaluate on the real test set, "
        "write runs/<dataset>/<teacher>-<student>/<method>/<run-id>/record.json and update the leaderboard. "
        "Running the same command again resumes an interrupted run. Progress and the result table go to "
        "stderr; stdout gets the record's path (or the record with --json), e.g. RECORD=$(bench run -q).",
        epilog="examples:\n  bench run --method prism --dataset digits\n"
        "  bench run --method deepinversion --set distill.epochs=5 --seed 1\n"
        "  RECORD=$(bench run -q)                      # stdout: the record's path\n"
        "  bench run -q --json | jq .student_top1\n"
        "  bench run --report-to tensorboard,wandb     # TensorBoard events + a W&B run (WANDB_MODE=offline: local)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_options(p)
    p.add_argument("--output-dir", "-o", help="where run folders and leaderboards go (default ./runs)")
    p.add_argument("--force", action="store_true", help="run again even if the record exists")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output (stderr)")
    p.add_argument("--json", action="store_true", help="print the record as JSON on stdout instead of its path")
    p.add_argument(
        "--report-to",
        metavar="TRACKERS",
        help="experiment trackers, comma-separated: tensorboard (events in the run folder), wandb "
        '(project $WANDB_PROJECT, default dfkd-bench); pip install "dfkd-bench[track]"',
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import yaml

    trackers = tuple(n.strip() for n in args.report_to.split(",") if n.strip()) if args.report_to else None
    cfg = resolve(args, output_dir=args.output_dir, report_to=trackers)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    import json

    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.records import record_path
    from dfkd.benchmark.runner import run

    record = run(cfg, reporter=Reporter(quiet=args.quiet), force=args.force)
    if args.json:
        print(json.dumps(record.to_dict(), default=str))
    else:
        print(record_path(cfg.output_dir, record))
    return 0
