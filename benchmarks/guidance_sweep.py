"""Choose a guidance strength by data-free criteria: the synthetic images' teacher statistics, never test accuracy.

    python benchmarks/guidance_sweep.py --method diffdfkd --key step_size --values 0 0.25 0.5 1 2
    python benchmarks/guidance_sweep.py --method prism --key energy_scale --values 0 0.5 1 2 4

For each value it synthesises a few units per class with the data set's preset (the teacher is the cached one
`bench run` trains or finds) and prints, over the images: the teacher's agreement with the target class, its mean
confidence, the mean free energy E = −T·logsumexp(f/T) (T = 1), and the mean per-image BN-statistics loss
(DeepInversion's feature prior on each image's own statistics). No test image is read. Larger agreement and lower
energy / BN loss mean images the teacher finds in-distribution for their class; where the criteria disagree, the
table shows it. Seconds per unit are printed too.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import torch

    from dfkd.benchmark.assembly import resolve_run_config
    from dfkd.benchmark.teachers import build_teacher, resolve_teacher
    from dfkd.datasets import get_dataset
    from dfkd.methods import create_method
    from dfkd.methods.base import BuildContext
    from dfkd.metrics.energy import free_energy
    from dfkd.models import create_model
    from dfkd.synthesis.losses import BNStatistics
    from dfkd.synthesis.sampling import teacher_view

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="diffdfkd")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--key", required=True, help="method config field to sweep, e.g. step_size")
    p.add_argument("--values", nargs="+", type=float, required=True)
    p.add_argument("--units-per-class", type=int, default=1, help="units of the plan per class (from its start)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()

    spec = get_dataset(args.dataset)
    device = torch.device("cpu")
    base = resolve_run_config(method=args.method, dataset=args.dataset, sets=args.sets)
    ref = resolve_teacher(base.teacher, base.teacher_arch, spec)
    teacher = build_teacher(ref, spec, device, train_if_missing=True, recipe=base.teacher_train)
    student = create_model(base.student or spec.default_student, spec.num_classes)
    print(f"| {args.key} | images | teacher agrees (%) | confidence | energy | BN loss / image | s / unit |")
    print("|---|---|---|---|---|---|---|")
    for value in args.values:
        cfg = resolve_run_config(method=args.method, dataset=args.dataset, sets=[*args.sets, f"{args.key}={value}"])
        method = create_method(args.method, cfg.method_config)
        ctx = BuildContext(teacher, student, spec, device, cfg.seed, cfg.distill)
        synth = method.build_synthesizer(ctx)
        units, seen = [], {}
        for unit in synth.plan():
            if seen.get(unit.label, 0) < args.units_per_class:
                seen[unit.label] = seen.get(unit.label, 0) + 1
                units.append(unit)
        images, labels = [], []
        t0 = time.perf_counter()
        for unit in units:
            out = synth.generate(unit)
            images.append(out.images)
            labels.append(out.labels)
        seconds = (time.perf_counter() - t0) / len(units)
        x, y = torch.cat(images), torch.cat(labels)
        with torch.no_grad(), BNStatistics(teacher, per_image=True) as bn:
            logits = teacher(teacher_view(x, spec)).float()
            bn_loss = bn.loss()  # (N,)
        prob = logits.softmax(1)
        agree = 100.0 * (logits.argmax(1) == y).float().mean().item()
        conf = prob.max(1).values.mean().item()
        energy = free_energy(logits, 1.0).mean().item()
        print(
            f"| {value:g} | {len(x)} | {agree:.1f} | {conf:.3f} | {energy:.2f} | {bn_loss.mean().item():.2f} "
            f"| {seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
