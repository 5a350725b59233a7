"""bench ls {methods,models,datasets}: what is registered (and where it came from)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("ls", help="list registered methods, models or data sets")
    p.add_argument("what", choices=["methods", "models", "datasets"])
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'wrn*'")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if args.what == "methods":
        from dfkd.methods import list_methods
        from dfkd.registry import METHODS

        table = Table("method", "source", "entry")
        for name in list_methods(args.pattern):
            table.add_row(name, METHODS.source(name), METHODS.target_path(name))
    elif args.what == "models":
        from dfkd.models import list_models

        table = Table("model", "note")
        for name in list_models(args.pattern):
            table.add_row(name, "")
        table.add_row("timm/<name>", "any timm model, e.g. timm/resnet50.tv_in1k")
        table.add_row("torchvision/<name>", "any torchvision classifier, e.g. torchvision/resnet50")
    else:
        from dfkd.datasets import list_datasets
        from dfkd.registry import DATASETS

        table = Table("dataset", "source", "entry")
        for name in list_datasets(args.pattern):
            table.add_row(name, DATASETS.source(name), DATASETS.target_path(name))
        table.add_row("imagefolder:PATH", "by location", "PATH/train/<class>/…, PATH/test/<class>/… (val/ too)")
        table.add_row("torchvision:NAME", "by location", "a torchvision data set class, e.g. torchvision:SVHN")
        table.add_row("hf:NAME", "by location", "a Hugging Face dataset: Hub id or save_to_disk folder (the hf extra)")
    console.print(table)
    return 0
