"""bench prompts: show (and save) the diversified prompt sets PRISM would use for a data set.

    bench prompts --dataset imagenet --classes 134 517 --limit 5
    bench prompts --dataset cifar100 --set prompts.prompts_per_class=20 --out cifar100_prompts.yaml
    bench prompts --dataset digits --method prism          # the prompt settings of a prism run (preset + --set)

The saved file is a ``prompts.prompt_file`` (YAML or JSONL): edit it and feed it back with
``--set prompts.contents=file --set prompts.prompt_file=cifar100_prompts.yaml``.
"""

from __future__ import annotations

import argparse
from typing import Any

from dfkd.cli.common import add_set_option, output_file
from dfkd.paths import safe_name


def add_parser(sub) -> None:
    p = sub.add_parser("prompts", help="show or save PRISM's per-class prompt sets (diversified prompt engineering)")
    p.add_argument("--dataset", "-d", default="digits", help="data set name (`bench ls datasets`); default digits")
    p.add_argument(
        "--method",
        "-m",
        help="take the prompt settings from this method's resolved config (prism: preset, --config, --set); "
        "default: PromptConfig defaults with --set",
    )
    p.add_argument("--config", "-c", dest="config_file", help="YAML run config (implies --method prism if not given)")
    add_set_option(
        p, "prompt setting, e.g. --set prompts.prompts_per_class=20 --set 'prompts.styles=[a photo of, a sketch of]'"
    )
    p.add_argument("--classes", nargs="+", metavar="CLASS", help="class indices or names (default: all classes)")
    p.add_argument("--limit", type=int, help="prompts shown per class (default: all; --out always gets all)")
    p.add_argument("--output-dir", "-o", metavar="DIR", help="save the prompt sets as DIR/prompts-<dataset>.yaml")
    p.add_argument("--out", metavar="FILE", help="save the prompt sets as FILE.yaml or FILE.jsonl")
    p.add_argument("--device", help="where open_clip (coverage selection) and a text model run (default cpu)")
    p.set_defaults(func=main)


def prompt_config_from_sets(sets: list[str]) -> Any:
    """A ``PromptConfig`` from ``--set`` items: ``prompts.KEY=VALUE`` (also ``prism.prompts.KEY`` or ``KEY``)."""
    from dfkd.config import from_dict, merge, nest, parse_set
    from dfkd.errors import ConfigError
    from dfkd.methods.prism_prompts import PromptConfig

    tree: dict[str, Any] = {}
    for item in sets:
        path, value = parse_set(item)
        if path[:1] == ["prism"]:
            path = path[1:]
        if path[:1] == ["prompts"]:
            path = path[1:]
        if not path:
            raise ConfigError(f"--set {item!r} names no prompt setting; use e.g. --set prompts.prompts_per_class=20")
        tree = merge(tree, nest(path, value))
    return from_dict(PromptConfig, tree, prefix="prompts.")


def resolve_prompt_config(args: argparse.Namespace) -> Any:
    """The PromptConfig to show: the method's resolved ``prompts`` with --method/--config, else from --set."""
    from dfkd.errors import UserError
    from dfkd.methods.prism_prompts import PromptConfig

    if args.method is None and not args.config_file:
        return prompt_config_from_sets(args.sets)
    from dfkd.benchmark.assembly import resolve_run_config

    run = resolve_run_config(
        method=args.method or "prism", dataset=args.dataset, config_file=args.config_file, sets=args.sets
    )
    prompts = getattr(run.method_config, "prompts", None)
    if not isinstance(prompts, PromptConfig):
        raise UserError(f"Method {run.method!r} has no prompt settings (a `prompts` PromptConfig); use --method prism")
    return prompts


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from dfkd.datasets import get_dataset
    from dfkd.errors import UserError
    from dfkd.methods.prism_prompts import PromptBuilder, save_prompt_file

    spec = get_dataset(args.dataset or "digits")
    config = resolve_prompt_config(args)
    if args.limit is not None and args.limit < 0:
        raise UserError("--limit takes a number ≥ 0")
    labels = [spec.class_index(c, where="--classes") for c in args.classes] if args.classes else None
    labels = list(dict.fromkeys(labels)) if labels else list(range(spec.num_classes))

    builder = PromptBuilder(spec, config, device=args.device)
    console = Console()
    selection = f"farthest-point over {config.clip_model}" if config.coverage_selection else "seeded random"
    console.print(
        f"[bold]{escape(spec.name)}[/]: {len(labels)} of {spec.num_classes} classes; {len(config.styles)} styles, "
        f"contents from {config.contents}, {config.prompts_per_class} of {config.candidates_per_class} candidates "
        f"per class ({selection}, seed {config.seed})",
        soft_wrap=True,
    )
    sets: dict[int, list] = {}
    names = spec.class_names
    for label in labels:
        entries = builder.build(label)
        sets[label] = entries
        source = "file" if label in builder.file else ("model" if builder.model is not None else "templates")
        console.print(
            f"\n[bold]{label}[/] {escape(names[label])} → [cyan]{escape(builder.phrases[label])}[/] "
            f"[dim]({len(entries)} prompts, contents: {source})[/]",
            soft_wrap=True,
        )
        shown = entries if args.limit is None else entries[: args.limit]
        for e in shown:
            console.print(f"  {escape(e.prompt)}", soft_wrap=True, highlight=False)
        if len(shown) < len(entries):
            console.print(f"  [dim]… {len(entries) - len(shown)} more[/]")
    if args.out or args.output_dir:
        path = save_prompt_file(output_file(args, f"prompts-{safe_name(spec.name)}.yaml", "."), spec, sets)
        total = sum(len(v) for v in sets.values())
        console.print(
            f"\nwrote {total} prompts for {len(sets)} classes to {escape(str(path))}; use it with "
            f"--set prompts.contents=file --set prompts.prompt_file={escape(str(path))}",
            soft_wrap=True,
        )
    return 0
