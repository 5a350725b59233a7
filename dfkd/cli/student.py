"""bench student export: a run's trained student as a Hugging Face model folder (safetensors, config, record, model
card), optionally pushed to the Hub."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("student", help="work with a run's trained student")
    ssub = p.add_subparsers(dest="student_verb", metavar="ACTION", required=True)
    e = ssub.add_parser(
        "export",
        help="write the student as model.safetensors + config.json + record.json + README.md (model card)",
    )
    e.add_argument("run", help="a finished run folder (holding record.json)")
    e.add_argument("out", help="output folder (created)")
    e.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub model repository")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from dfkd.benchmark.share import STUDENT_FILES, export_student, push_folder

    out = export_student(args.run, args.out)
    print(f"wrote {', '.join(STUDENT_FILES)} to {out}")
    if args.push_to_hub:
        print(f"pushed to {push_folder(out, args.push_to_hub)}")
    return 0
