"""Options shared by the verbs that build a run configuration."""

from __future__ import annotations

import argparse
from pathlib import Path
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


# `-o` means the same in every verb: the output FOLDER. Verbs that write one file also take `--out FILE`.
def add_output_options(p: argparse.ArgumentParser, file_name: str, default_dir: str) -> None:
    """``-o/--output-dir DIR`` (the file goes to DIR/``file_name``) and ``--out FILE`` (an exact file)."""
    p.add_argument(
        "--output-dir", "-o", metavar="DIR", help=f"folder to write {file_name} into (default {default_dir})"
    )
    p.add_argument("--out", metavar="FILE", help=f"exact file to write instead of DIR/{file_name}")


def output_file(args: argparse.Namespace, file_name: str, default_dir: str | Path) -> Path:
    """The file ``add_output_options`` asked for."""
    if args.out:
        return Path(args.out).expanduser()
    return Path(args.output_dir or default_dir).expanduser() / file_name
