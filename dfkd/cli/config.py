"""bench config show METHOD: every config field of a method (and of the KD recipe) with its default and comment."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "config",
        help="show a method's config fields with their defaults and what they mean",
        description="Print each field of a method's Config (or of the KD recipe, `distill`) with its type, its "
        "default (the dataclass's: presets and --set go on top, see `bench run --print-config`) and the comment "
        "that explains it, usually naming the upstream argparse option.",
        epilog="examples:\n  bench config show deepinversion\n  bench config show distill\n"
        "  bench config show prism --dataset digits     # with the digits preset applied",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub2 = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub2.add_parser("show", help="fields, defaults and comments")
    show.add_argument("name", help="a method (`bench ls methods`), or `distill` for the KD recipe")
    show.add_argument("--dataset", "-d", help="show the values a run on this data set resolves to (preset applied)")
    show.add_argument(
        "--protocol", metavar="{matched,published,custom}", help="with --dataset: which protocol's values"
    )
    show.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from dfkd.config import DistillConfig, field_docs, to_plain

    if args.name == "distill":
        cls, resolved = DistillConfig, None
        if args.dataset:
            from dfkd.benchmark.assembly import resolve_run_config

            flags = {"protocol": args.protocol} if args.protocol else {}
            resolved = resolve_run_config(method="noise_kd", dataset=args.dataset, flags=flags).distill
    else:
        from dfkd.methods import get_method_class

        cls = get_method_class(args.name).Config
        resolved = None
        if args.dataset:
            from dfkd.benchmark.assembly import resolve_run_config

            flags = {"protocol": args.protocol} if args.protocol else {}
            resolved = resolve_run_config(method=args.name, dataset=args.dataset, flags=flags).method_config
    table = Table("field", "type", "default", *(["resolved"] if resolved is not None else []), "meaning")
    for name, (type_, default, comment) in field_docs(cls).items():
        row = [name, type_, repr(to_plain(default))]
        if resolved is not None:
            value = to_plain(getattr(resolved, name))
            row.append(repr(value) if value != to_plain(default) else "")
        table.add_row(*row, comment)
    Console(soft_wrap=False).print(table)
    return 0
