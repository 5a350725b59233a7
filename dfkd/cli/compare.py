"""bench compare: several runs side by side in one HTML page (e.g. diffdfkd vs prism vs diffusion_kd)."""

from __future__ import annotations

import argparse

from dfkd.cli.common import add_output_options, output_file
from dfkd.cli.report import add_grid_options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="HTML page comparing several runs of one data set side by side",
        description="Like `bench report`, for several RUN_DIRs of one data set: one metrics column, one synthetic "
        "grid column group and one curve/histogram series per run.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (each with record.json)")
    add_output_options(p, "compare.html", ".")
    add_grid_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from dfkd.benchmark.report import write_report

    print(
        write_report(
            args.run_dirs, output_file(args, "compare.html", "."), grid_classes=args.classes, grid_images=args.images
        )
    )
    return 0
