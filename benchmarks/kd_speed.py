"""KD trainer images/s reading from the synthetic store vs from tensors in memory (a benchmark, not a test).

    python benchmarks/kd_speed.py                                   # the embedded default's distillation
    python benchmarks/kd_speed.py --images 2000 --epochs 3 --rounds 3

The same ``Trainer`` and ``KDDistiller`` (the data set's default teacher → student, random weights, the preset's
``distill`` batch size), the same images and labels, three sources:

* ``store``: a ``SyntheticStore`` of uint8 shards (``--shard`` images each, like the method's units), read
  through ``store.dataset(train_transform)`` — memory-mapped shards, per-image augmentation (what ``bench run``
  distils from);
* ``memory``: the same uint8 images held in one in-memory tensor, the same per-image augmentation;
* ``memory_noaug``: float tensors already normalised in memory, no per-image transform (the floor of the data
  cost: what the trainer costs with a free data pipeline).

``store / memory`` is the overhead of reading from the store; ``store / memory_noaug`` that of the whole data
path (reading and augmenting). ``--channels-last on off`` also measures the trainer's NHWC switch (rows of one
setting are compared with each other; ``speedup_channels_last`` is on / off for the same source). Sources
alternate for ``--rounds`` rounds; each row is the median over rounds of the median epoch (the first epoch of
every fit is a warm-up and left out). One JSON line per (source, channels_last).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset


class MemoryDataset(Dataset):
    """``(transform(x), label, index)`` from one in-memory uint8 (N, C, H, W) tensor, like ``StoreDataset``."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Any = None):
        self.images, self.targets, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        x = self.images[i]  # (C, H, W) uint8
        return (self.transform(x) if self.transform is not None else x), int(self.targets[i]), i


def build_store(root: str, images: Tensor, labels: Tensor, shard: int):
    """A complete store of ``images`` in shards of ``shard`` images, one class per shard where possible."""
    from dfkd.synthesis.store import SyntheticStore

    store = SyntheticStore.open(root, config_hash="kd-speed")
    ids = []
    for u, start in enumerate(range(0, len(images), shard)):
        ids.append(f"u{u:05d}")
        store.write_unit(ids[-1], images[start : start + shard], {"label": labels[start : start + shard]})
    store.mark_complete(ids)
    return SyntheticStore.open_existing(root)


def epoch_seconds(student0, teacher, cfg, data: Dataset, device: torch.device, seed: int, channels_last: bool) -> float:
    """Median seconds of the training epochs after the first, for a fresh copy of the student."""
    import copy

    from dfkd.distill.trainer import Trainer
    from dfkd.methods.base import KDDistiller

    student = copy.deepcopy(student0)
    cfg = dataclasses.replace(cfg, channels_last=channels_last)
    trainer = Trainer(student, KDDistiller(teacher, cfg), cfg, device=device, seed=seed)
    trainer.fit(data, resume=False)
    return statistics.median(h["seconds"] for h in trainer.history[1:])


def main() -> None:
    from dfkd.benchmark.assembly import resolve_run_config
    from dfkd.datasets import get_dataset
    from dfkd.models import create_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--images", type=int, default=1000, help="synthetic images (embedded default: 1000)")
    p.add_argument("--shard", type=int, default=50, help="images per shard (embedded default: 10 trajectories × 5)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per fit (the first is left out)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds over the sources")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels-last", nargs="+", choices=["on", "off"], default=["on"], help="trainer NHWC switch")
    args = p.parse_args()

    device = torch.device(args.device)
    spec = get_dataset(args.dataset)
    run_cfg = resolve_run_config(method="diffdfkd", dataset=args.dataset)
    cfg = dataclasses.replace(run_cfg.distill, epochs=args.epochs)
    torch.manual_seed(0)
    teacher = create_model(spec.default_teacher, spec.num_classes).to(device).eval().requires_grad_(False)
    student = create_model(spec.default_student, spec.num_classes)
    size = spec.input_size
    images = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8)  # (N, 3, S, S)
    labels = torch.arange(args.images) % spec.num_classes  # (N,)
    labels = labels.sort(stable=True).values  # class-sorted, like the store's units

    train_tf = spec.train_transform()
    with tempfile.TemporaryDirectory(prefix="kd-speed-") as tmp:
        store = build_store(tmp, images, labels, args.shard)
        sources = {
            "store": store.dataset(train_tf),
            "memory": MemoryDataset(images, labels, train_tf),
            "memory_noaug": MemoryDataset(spec.normalize(images.float() / 255), labels),  # (N, 3, S, S) float
        }
        settings = [(name, cl == "on") for cl in args.channels_last for name in sources]
        seconds: dict[tuple[str, bool], list[float]] = {key: [] for key in settings}
        for r in range(args.rounds):
            for name, cl in settings:
                seconds[name, cl].append(epoch_seconds(student, teacher, cfg, sources[name], device, r, cl))
    rows = {}
    for (name, cl), ss in seconds.items():
        s = statistics.median(ss)
        rows[name, cl] = {
            "benchmark": "kd",
            "source": name,
            "channels_last": cl,
            "dataset": args.dataset,
            "teacher": spec.default_teacher,
            "student": spec.default_student,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "images": args.images,
            "batch": cfg.batch_size,
            "epoch_seconds": round(s, 3),
            "epoch_seconds_all": [round(x, 3) for x in ss],
            "images_per_s": round(args.images / s, 1),
        }
    for (name, cl), row in rows.items():
        row["ratio_vs_memory"] = round(row["images_per_s"] / rows["memory", cl]["images_per_s"], 3)
        row["ratio_vs_memory_noaug"] = round(row["images_per_s"] / rows["memory_noaug", cl]["images_per_s"], 3)
        if (name, not cl) in rows:
            off = rows[name, False]["images_per_s"]
            row["speedup_channels_last"] = round(rows[name, True]["images_per_s"] / off, 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
