"""Worker scripts the distributed tests launch with ``torchrun`` (not collected by pytest).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_worker.py trainer OUT.pt
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_worker.py crash K -- BENCH ARGS…

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_worker.py in-loop OUT_DIR

``trainer``: one epoch of KD with the library's Trainer under DDP (gloo); rank 0 saves the student, the
history and the gathered test predictions to OUT.pt. The test runs :func:`train_once` in one process and
compares. ``crash``: ``bench`` with each rank dying (``os._exit``) as it starts its K+1-th synthesis unit.
``in-loop``: DFQ with its generator in the loop on two ranks, three epochs uninterrupted and three epochs killed
after the first and resumed by fresh objects; every rank saves its final student and generator to
OUT_DIR/rank<r>.pt.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset


class NoisyImages(Dataset):
    """Fixed images plus a random perturbation drawn at load time (an augmentation that uses torch's RNG)."""

    def __init__(self, n: int = 48):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, 8, 8, generator=g)  # (n, 3, 8, 8)
        self.y = torch.randint(0, 4, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i] + 0.1 * torch.randn(3, 8, 8), int(self.y[i])


def tiny_net() -> nn.Module:
    """No BatchNorm: per-rank batch statistics are the one thing DDP on CPU cannot make global."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4)
    )


def train_once(dist=None) -> dict:
    from dfkd.config import DistillConfig
    from dfkd.distill.trainer import Trainer
    from dfkd.distributed import SINGLE
    from dfkd.methods.base import KDDistiller

    cfg = DistillConfig(epochs=1, batch_size=8, lr=0.1, schedule="constant", kd_weight=1.0, ce_weight=0.5)
    teacher = tiny_net().eval().requires_grad_(False)
    torch.manual_seed(1)
    student = nn.Sequential(*list(tiny_net().children()))
    for p in student.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(3)
    test = TensorDataset(torch.rand(21, 3, 8, 8, generator=g), torch.randint(0, 4, (21,), generator=g))
    loader = torch.utils.data.DataLoader(test, batch_size=4)
    trainer = Trainer(
        student,
        KDDistiller(teacher, cfg),
        cfg,
        device=torch.device("cpu"),
        seed=5,
        test_loader=loader,
        reference_pred=torch.zeros(21, dtype=torch.long),
        dist=dist or SINGLE,
    )
    result = trainer.fit(NoisyImages())
    from dfkd.distill.trainer import evaluate

    ev = evaluate(trainer.student, loader, torch.device("cpu"), dist=dist or SINGLE)
    return {"state": trainer.student.state_dict(), "history": result.history, "pred": ev["pred"]}


def in_loop(out_dir: str, dist) -> dict:
    """DFQ on tiny random models (CPU): (a) three epochs; (b) killed in epoch 2, then resumed by fresh objects."""
    from pathlib import Path

    from dfkd.benchmark.assembly import resolve_run_config
    from dfkd.datasets import get_dataset
    from dfkd.distill.trainer import Trainer
    from dfkd.methods import get_method_class
    from dfkd.methods.base import BuildContext
    from dfkd.models import create_model

    sets = [*get_method_class("dfq").smoke_overrides(), "distill.epochs=3", "distill.batch_size=8"]
    cfg = resolve_run_config(method="dfq", dataset="digits", sets=sets)

    def train(folder: str, kill_at: int | None = None):
        torch.manual_seed(0)
        teacher = create_model("resnet8", 10)
        with torch.no_grad():
            teacher(torch.rand(16, 3, 32, 32))  # non-trivial BN running statistics
        teacher = teacher.eval().requires_grad_(False)
        student = create_model("resnet8", 10)
        ctx = BuildContext(teacher, student, get_dataset("digits"), torch.device("cpu"), 0, cfg.distill, dist=dist)
        method = get_method_class("dfq")(cfg.method_config)
        synth = method.build_synthesizer(ctx)
        trainer = Trainer(
            student,
            method.build_distiller(ctx),
            cfg.distill,
            device=torch.device("cpu"),
            checkpoint_dir=Path(out_dir) / folder,
            dist=dist,
        )
        if kill_at is not None:
            original = trainer.train_epoch_in_loop

            def dies(source, epoch, steps):
                if epoch >= kill_at:
                    raise KeyboardInterrupt  # on every rank at the same point, before the epoch's first collective
                return original(source, epoch, steps)

            trainer.train_epoch_in_loop = dies
        try:
            trainer.fit_in_loop(synth, steps_per_epoch=cfg.method_config.steps_per_epoch)
        except KeyboardInterrupt:
            return None
        return {"student": student.state_dict(), "generator": synth.generator.state_dict()}

    uninterrupted = train("a")
    assert train("b", kill_at=1) is None
    resumed = train("b")
    return {"uninterrupted": uninterrupted, "resumed": resumed}


def main(argv: list[str]) -> int:
    from dfkd.distributed import setup, teardown

    if argv[0] == "trainer":
        ctx, _ = setup("cpu")
        out = train_once(ctx)
        if ctx.is_main:
            torch.save(out, argv[1])
        teardown(ctx)
        return 0
    if argv[0] == "in-loop":
        ctx, _ = setup("cpu")
        out = in_loop(argv[1], ctx)
        torch.save(out, f"{argv[1]}/rank{ctx.rank}.pt")
        teardown(ctx)
        return 0
    if argv[0] == "crash":
        import dfkd.benchmark.runner as runner
        from dfkd.cli.main import main as bench

        budget, original = int(argv[1]), runner.generate_unit
        calls = {"n": 0}

        def dying(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > budget:
                os._exit(3)  # killed hard, mid-synthesis: no cleanup, no barrier
            return original(*args, **kwargs)

        runner.generate_unit = dying
        return bench(argv[argv.index("--") + 1 :])
    raise SystemExit(f"unknown worker {argv[0]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
