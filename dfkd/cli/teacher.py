"""bench teacher train|eval: the one place the suite touches training data."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("teacher", help="train or evaluate a teacher on real data")
    tsub = p.add_subparsers(dest="teacher_verb", metavar="ACTION", required=True)
    t = tsub.add_parser(
        "train",
        help="train a teacher with the documented recipe and save it where `bench run` looks",
        description="Cross-entropy training on the real training split with the recipe in `teacher_train` "
        "(CMI's train_scratch.py: SGD 0.1, wd 1e-4, x0.1 at 120/150/180, 200 epochs; presets shorten it for digits). "
        "Saves <cache>/teachers/<dataset>_<arch>.pth unless --out is given. Resumes if interrupted.",
    )
    e = tsub.add_parser("eval", help="top-1/top-5 of a teacher on the real test set")
    for q in (t, e):
        q.add_argument("--dataset", "-d", required=True)
        q.add_argument("--arch", help="architecture (`bench ls models`); default: the data set's default teacher")
        q.add_argument("--data-root")
        q.add_argument("--device", default="auto")
        q.add_argument(
            "--set",
            "-s",
            dest="sets",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override the recipe, e.g. --set teacher_train.epochs=50",
        )
    t.add_argument("--out", help="checkpoint path (default <cache>/teachers/<dataset>_<arch>.pth)")
    t.add_argument("--seed", type=int, default=0)
    e.add_argument("--checkpoint", help="checkpoint path (default: the cached one)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from dfkd.benchmark.assembly import resolve_run_config
    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.teachers import build_teacher, resolve_teacher, teacher_accuracy, test_loader, train_teacher
    from dfkd.datasets import get_dataset
    from dfkd.distributed import resolve_device

    spec = get_dataset(args.dataset)
    device = resolve_device(args.device)
    cfg = resolve_run_config(dataset=args.dataset, sets=args.sets, flags={"data_root": args.data_root})
    arch = args.arch or spec.default_teacher
    if args.teacher_verb == "train":
        ref = resolve_teacher(arch, None, spec)
        out = args.out or ref.path
        path = train_teacher(
            spec, arch, cfg.teacher_train, out, device, args.data_root, args.seed, Reporter().epoch_line("teacher")
        )
        print(path)
        return 0
    ref = resolve_teacher(args.checkpoint or arch, arch if args.checkpoint else None, spec)
    model = build_teacher(ref, spec, device, train_if_missing=False)
    acc, _ = teacher_accuracy(model, ref, spec, test_loader(spec, args.data_root), device)
    print(f"{ref.name} on {spec.name}: top-1 {acc['top1']:.2f}%  top-5 {acc['top5']:.2f}%")
    return 0
