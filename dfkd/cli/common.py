"""Options shared by the verbs that build a run configuration."""

from __future__ import annotations

import argparse
from typing import Any


def add_set_option(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--set KEY=VALUE`` (repeatable), collected in ``args.sets``."""
    p.add_argument(
        "--set", "-s", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=f"{help_text} (repeatable)"
    )


def add_config_options(p: argparse.ArgumentParser, *, method_default: str | None = None) -> None:
    p.add_argument("--method", "-m", default=method_default, help="method name (`bench ls methods`)")
    p.add_argument("--dataset", "-d", help="data set name (`bench ls datasets`); default digits")
    p.add_argument("--teacher", help="teacher: arch (resnet34), bundle stem (cifar10_resnet34), PATH.pth, timm/NAME")
    p.add_argument("--student", help="student architecture (`bench ls models`)")
    p.add_argument(
        "--protocol",
        metavar="{matched,published,custom}",
        help="matched (default): one KD recipe and budget for every method; published: each method's released "
        "recipe and budget; custom: the preset's shared settings only",
    )
    p.add_argument("--config", "-c", dest="config_file", help="YAML config file (over the preset)")
    add_set_option(p, "override one key, e.g. --set distill.epochs=10 --set generator.path=/models/sd15")
    p.add_argument("--seed", type=int, help="run seed (default 0)")
    p.add_argument("--device", help="cpu | cuda | cuda:N | auto (default)")
    p.add_argument("--data-root", help="where data sets live (default $DFKD_DATA or ~/.cache/dfkd/data)")


def resolve(args: argparse.Namespace, **extra_flags: Any):
    from dfkd.benchmark.assembly import resolve_run_config

    flags = {
        "teacher": args.teacher,
        "student": args.student,
        "seed": args.seed,
        "device": args.device,
        "data_root": args.data_root,
        "protocol": getattr(args, "protocol", None),
        **extra_flags,
    }
    return resolve_run_config(
        method=args.method, dataset=args.dataset, config_file=args.config_file, sets=args.sets, flags=flags
    )
