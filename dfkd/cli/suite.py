"""bench suite: run a grid of benchmark cells from a YAML file, whole or as one shard of a job array."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "suite",
        help="run a suite (methods x data sets x teacher/student pairs x seeds), or one shard of it",
        description="A suite is a YAML grid of `bench run` cells (see dfkd/benchmark/suite.py and the shipped "
        "suites: `bench suite ls`). Cells whose record.json exists are skipped; --shard i/n takes cells i, i+n, … "
        "so a job array splits a suite across machines; `bench leaderboard --runs OUTPUT_DIR` merges the records.",
    )
    verbs = p.add_subparsers(dest="suite_verb", metavar="ACTION", required=True)
    r = verbs.add_parser("run", help="run the cells of a suite that have no record yet")
    r.add_argument("suite", metavar="SUITE", help="a suite YAML file or a shipped suite name (cifar-table, imagenet…)")
    r.add_argument("--shard", metavar="i/n", help="only cells i, i+n, i+2n, … (0 <= i < n), e.g. 0/4")
    r.add_argument("--dry-run", action="store_true", help="list the cells, their status and shard; run nothing")
    r.add_argument("--output-dir", "-o", help="where records go (default: the suite's output_dir)")
    r.add_argument("--fail-fast", action="store_true", help="stop at the first failing cell")
    r.add_argument("--quiet", "-q", action="store_true", help="no per-cell progress output")
    r.set_defaults(func=run_main)
    ls = verbs.add_parser("ls", help="the suites shipped with dfkd-bench")
    ls.set_defaults(func=ls_main)


def ls_main(args: argparse.Namespace) -> int:
    from dfkd.benchmark.suite import builtin_suites, load_suite

    for name, path in sorted(builtin_suites().items()):
        suite = load_suite(str(path))
        print(f"{name:<14} {len(suite.cells):>4} cells  {suite.description}")
    return 0


def run_main(args: argparse.Namespace) -> int:
    import sys

    from dfkd.benchmark.suite import load_suite, parse_shard, record_path

    index, count = parse_shard(args.shard)
    suite = load_suite(args.suite, output_dir=args.output_dir)
    mine = {c.index for c in suite.shard(index, count)}
    done = {c.index for c in suite.cells if record_path(c).is_file()}
    todo = [c for c in suite.cells if c.index in mine and c.index not in done]
    shard_note = f", shard {index}/{count}: {len(mine)} cells" if count > 1 else ""
    summary = f"suite {suite.name}: {len(suite.cells)} cells, {len(done)} done{shard_note}, {len(todo)} to run"
    if args.dry_run:
        print(summary)
        print(
            f"{'cell':>4}  {'shard':<7} {'status':<11} {'images':>9} {'kd steps':>9} {'T':>5} {'lr':>6} "
            f"{'epochs':>6} {'batch':>5} {'schedule':<8} run"
        )
        # images: stored synthetic images; "fresh": a generator in the loop, a new batch every student step;
        # "real": the real training split
        for c in suite.cells:
            status = "done" if c.index in done else ("todo" if c.index in mine else "other shard")
            b = c.budget()
            images = f"{b['images']:,}" if b["images"] is not None else ("real" if b["kd_steps"] is None else "fresh")
            steps = "-" if b["kd_steps"] is None else f"{b['kd_steps']:,}"
            print(
                f"{c.index:>4}  {c.index % count:>3}/{count:<3} {status:<11} {images:>9} {steps:>9} {b['T']:>5g} "
                f"{b['lr']:>6g} {b['epochs']:>6} {b['batch']:>5} {b['schedule']:<8} {c.label}"
            )
        print(f"records: {suite.output_dir}")
        return 0

    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.runner import run
    from dfkd.errors import UserError

    print(summary, file=sys.stderr)
    failed: list[tuple[str, str]] = []
    for n, cell in enumerate(todo, 1):
        print(f"[{n}/{len(todo)}] {cell.label}", file=sys.stderr)
        try:
            run(cell.config, reporter=Reporter(quiet=args.quiet))
        except UserError as e:
            if args.fail_fast:
                raise
            failed.append((cell.label, str(e)))
            print(f"error: {cell.label}: {e}", file=sys.stderr)
    for label, message in failed:
        print(f"failed: {label}: {message}", file=sys.stderr)
    print(f"records: {suite.output_dir} (bench leaderboard --runs {suite.output_dir})", file=sys.stderr)
    return 1 if failed else 0
