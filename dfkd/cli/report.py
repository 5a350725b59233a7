"""bench report: one run's synthetic images, metrics, curves and histograms as a self-contained HTML page."""

from __future__ import annotations

import argparse

from dfkd.cli.common import add_output_options, output_file


def add_grid_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", type=int, help="classes in the image grid (default: the run's diagnose.grid_classes)")
    p.add_argument("--images", type=int, help="images per class and side in the grid (default diagnose.grid_images)")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="HTML report of a run: image grid, metrics, training curves, histograms",
        description="Write one self-contained HTML page for RUN_DIR (a folder with record.json): per-class grid of "
        "real test vs synthetic images, the metrics table, training curves, confidence/energy histograms and "
        "per-class top-1; the figures are also written as PNG files beside it. `bench run` writes it itself.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (runs/<dataset>/<teacher>-<student>/<method>/<id>)")
    add_output_options(p, "report.html", "RUN_DIR")
    add_grid_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dfkd.benchmark.report import write_report

    out = output_file(args, "report.html", Path(args.run_dir).expanduser())
    path = write_report([args.run_dir], out, grid_classes=args.classes, grid_images=args.images)
    print(path)
    return 0
