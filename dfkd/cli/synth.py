"""bench synth export / info: a synthetic store as a PNG ImageFolder or a Hugging Face dataset (optionally pushed to
the Hub), and a store's summary."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("synth", help="work with synthetic stores")
    ssub = p.add_subparsers(dest="synth_verb", metavar="ACTION", required=True)
    e = ssub.add_parser("export", help="export a store (or the store of a run) as a PNG ImageFolder or HF dataset")
    e.add_argument("source", help="a store folder, or a run folder holding record.json")
    e.add_argument("out", help="output folder")
    e.add_argument(
        "--format",
        choices=("imagefolder", "hf"),
        default="imagefolder",
        help="imagefolder: PNGs in <label>_<class>/ folders (default); hf: a Hugging Face dataset (save_to_disk) "
        "with the per-image table (label, unit, kept, seed, prompt, teacher logits, …)",
    )
    e.add_argument("--push-to-hub", metavar="REPO_ID", help="also push the dataset to this Hub repository (hf)")
    e.add_argument("--all", action="store_true", help="also images the method filtered out")
    e.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    i = ssub.add_parser("info", help="summary of a store: images, units, per-class counts")
    i.add_argument("source", help="a store folder, or a run folder holding record.json")
    i.add_argument(
        "--verify",
        action="store_true",
        help="check every shard's sha256 against the store's index; damaged shards are moved aside for regeneration",
    )
    p.set_defaults(func=main)


def _store(source: str):
    from pathlib import Path

    from dfkd.benchmark.records import RunRecord
    from dfkd.errors import UserError
    from dfkd.synthesis.store import SyntheticStore

    path = Path(source)
    if (path / "record.json").is_file():
        store = RunRecord.read(path / "record.json").store
        if not store:
            raise UserError(f"The run in {path} has no synthetic store (method trains on real data)")
        path = Path(store)
    if not (path / "manifest.json").is_file():
        raise UserError(f"{path} is neither a synthetic store (no manifest.json) nor a run folder (no record.json)")
    store = SyntheticStore.open_existing(path)
    return store, store.manifest


def main(args: argparse.Namespace) -> int:
    import json

    store, manifest = _store(args.source)
    if args.synth_verb == "info":
        print(json.dumps(store.summary(), indent=2, default=str))
        if args.verify:
            from dfkd.errors import UserError

            problems = store.verify(digests=True)
            if problems:
                store.reopen(problems)  # damaged shards aside, store incomplete: the next run regenerates them
                raise UserError(
                    f"{store.root} is damaged: {'; '.join(problems[:5])}; the damaged shards were moved aside. "
                    "Fix: run the same `bench run` again, which regenerates exactly those units"
                )
            print(f"verified: {len(store.manifest.get('index') or {})} shards match their sha256")
        return 0
    from pathlib import Path

    from dfkd.errors import UserError

    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder. Fix: give an output folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UserError(
            f"{out} is not empty: exporting would mix its files with this store's. "
            "Fix: give an empty or new folder, or pass --overwrite to write into it"
        )
    if args.push_to_hub and args.format != "hf":
        raise UserError("--push-to-hub pushes a Hugging Face dataset: add --format hf")
    class_names = None
    dataset = (manifest.get("meta") or {}).get("key", {}).get("dataset")
    if dataset:
        from dfkd.datasets import get_dataset

        class_names = get_dataset(dataset).class_names
    if args.format == "hf":
        from dfkd.benchmark.share import push_dataset, synthetic_dataset

        if class_names is None:
            raise UserError(f"{store.root} does not name its data set (meta.key.dataset): use --format imagefolder")
        ds = synthetic_dataset(store, class_names, kept_only=not args.all)
        ds.save_to_disk(str(out))
        print(f"wrote a Hugging Face dataset of {len(ds)} images to {out} (datasets.load_from_disk)")
        if args.push_to_hub:
            print(f"pushed to {push_dataset(ds, args.push_to_hub)}")
        return 0
    n = store.export_imagefolder(args.out, class_names, kept_only=not args.all)
    print(f"wrote {n} images to {args.out}")
    return 0
