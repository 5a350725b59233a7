"""Run records: one typed JSON per run, raw numbers only, with provenance.

Layout: ``<output_dir>/<dataset>/<teacher>-<student>/<method>/<run-id>/record.json``. Teacher and
student names containing ``/`` (zoo models) are written with ``__`` in the path.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from dfkd.paths import atomic_write_text

SCHEMA_VERSION = 1
PACKAGES = ("dfkd-bench", "torch", "torchvision", "diffusers", "transformers", "open_clip_torch", "timm", "numpy")


@dataclass
class RunRecord:
    """The result of one ``bench run``. Accuracies are percentages on the real test set."""

    run_id: str
    method: str
    dataset: str
    teacher: str
    student: str
    seed: int
    student_top1: float  # headline: LAST epoch
    student_top1_best: float  # best over epochs (what most papers report), labelled as such
    student_top1_best_epoch: int
    student_top5: float  # last epoch
    teacher_top1: float
    teacher_student_agreement: float | None  # % test images where argmaxes agree, last epoch
    num_synthetic_images: int
    synthesis_seconds: float
    distill_seconds: float
    epochs: int
    config_id: str | None = None  # hash of the config without the seed: seeds of one config are averaged
    protocol: str | None = None  # matched | published | custom (dfkd.config.PROTOCOLS); None: an older record
    protocol_deviations: list[str] = field(default_factory=list)  # why a run asked for a protocol is "custom"
    distill_precision: str | None = None  # float32 | bfloat16 | float16: the student's training precision (AMP)
    teacher_file: dict[str, Any] | None = None  # source, sha256 digest, and the recipe that trained it (if ours)
    extra: dict[str, float] = field(default_factory=dict)  # further metrics (precision, recall, dg/...)
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch train loss / test accuracy
    diagnostics: dict[str, Any] = field(default_factory=dict)  # histograms, class counts, per-class top-1 (diagnose)
    store: str | None = None  # synthetic store folder
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: str | Path) -> Path:
        # all or nothing, and durable: a full disk leaves no half-written record nor temporary file behind
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n", durable=True)

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        data = json.loads(Path(path).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def safe_name(name: str) -> str:
    return name.replace("/", "__")


def run_dir(output_dir: str | Path, dataset: str, teacher: str, student: str, method: str, run_id: str) -> Path:
    return Path(output_dir) / dataset / f"{safe_name(teacher)}-{safe_name(student)}" / method / run_id


def git_hash() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def cpu_info() -> dict[str, Any]:
    """The CPU's model name and whether it computes bfloat16 natively (AVX512-BF16 or AMX flag; None where
    /proc/cpuinfo is not there). Without native support torch emulates bfloat16, several times slower than float32."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor's entries
    except OSError:
        pass
    flags = fields.get("flags")
    return {
        "name": fields.get("model name") or platform.processor() or "cpu",
        "bf16": None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags.split())),
    }


def environment(device: Any = None) -> dict[str, Any]:
    """Provenance: git hash, package versions, python, platform, device name."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    device_name = "cpu"
    try:
        import torch

        if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
            device_name = torch.cuda.get_device_name(torch.device(device))
        threads = torch.get_num_threads()
    except Exception:  # pragma: no cover
        threads = None
    return {
        "git": git_hash(),
        "packages": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device) if device is not None else None,
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
    }
