"""End-to-end wall time of ``bench run`` on a fresh cache (a benchmark, not a test).

    python benchmarks/bench_run_time.py                          # the embedded default: diffdfkd on digits
    python benchmarks/bench_run_time.py --method prism
    python benchmarks/bench_run_time.py --set generator.attention=eager   # any `bench run --set`

Runs ``bench run --quiet`` as a subprocess with a fresh ``DFKD_CACHE`` and output folder (temporary, removed
afterwards), so the teacher is trained and the synthetic set generated from scratch, as on a first run. Prints
one JSON line: the wall time of the subprocess and the record's stage seconds (``teacher_and_setup_seconds`` is
the rest: start-up, teacher training and its test accuracy, the leaderboard).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="diffdfkd")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-run-time-") as tmp:
        env = {**os.environ, "DFKD_CACHE": str(Path(tmp) / "cache")}
        cmd = [sys.executable, "-m", "dfkd", "run", "--quiet", "--method", args.method, "--dataset", args.dataset]
        cmd += ["--device", args.device, "--output-dir", str(Path(tmp) / "runs")]
        for item in args.sets:
            cmd += ["--set", item]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"bench run failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        (record_path,) = Path(tmp, "runs").rglob("record.json")
        record = json.loads(record_path.read_text())
    synthesis, distill = record["synthesis_seconds"], record["distill_seconds"]
    print(
        json.dumps(
            {
                "benchmark": "bench_run",
                "method": args.method,
                "dataset": args.dataset,
                "sets": args.sets,
                "threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "wall_seconds": round(wall, 1),
                "synthesis_seconds": round(synthesis, 1),
                "distill_seconds": round(distill, 1),
                "teacher_and_setup_seconds": round(wall - synthesis - distill, 1),
                "student_top1": record["student_top1"],
                "teacher_top1": record["teacher_top1"],
                "num_synthetic_images": record["num_synthetic_images"],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
