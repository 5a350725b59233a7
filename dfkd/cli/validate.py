"""bench validate: build a config on tiny random models, generate one synthesis unit, take one step."""

from __future__ import annotations

import argparse

from dfkd.cli.common import add_config_options, resolve


def add_parser(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="check a config in seconds: tiny models, one synthesis unit, one distillation step",
        description="Resolve the config exactly as `bench run` would, check that its teacher exists (or would be "
        "trained), then build the teacher and student architectures it names at random weights (no weights loaded, "
        "no data set download), generate ONE synthesis unit and take ONE distillation step. Nothing is written. "
        "Exit 0 means the method, config and wiring work.",
        epilog="example:\n  bench validate --method diffdfkd --dataset cifar10 --set generator.path=tiny",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.runner import validate

    cfg = resolve(args)
    report = validate(cfg, Reporter(quiet=True))
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in report.items()))
    print("ok")
    return 0
