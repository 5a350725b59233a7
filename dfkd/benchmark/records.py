"""Run records: one typed JSON per run, raw numbers only, with provenance.

Layout: ``<output_dir>/<dataset>/<teacher>-<student>/<method>/<run-id>/record.json``. Teacher and
student names containing ``/`` (zoo models) are written with ``__`` in the path.

:class:`RunRecord` is the one reader and writer of ``record.json``: the runner writes it, and the leaderboard
(:func:`load_records`), the report and ``bench synth`` read it through :meth:`RunRecord.read` /
:meth:`RunRecord.from_dict`, whose validation (:func:`check_record`) is derived from the dataclass's own fields and
types, so the schema cannot drift between them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import subprocess
import sys
import types
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from dfkd.errors import UserError, one_line
from dfkd.paths import atomic_write_text, safe_name

SCHEMA_VERSION = 1
SCHEMA_MAJOR = 1  # the major schema version this package reads; records of another are skipped with a warning
# Field metadata: present in every schema-1 record ever written (a record without it is malformed). Fields without a
# default are required too; the other fields came later and may be missing from older records.
REQUIRED: typing.Mapping[str, bool] = types.MappingProxyType({"required": True})
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
    method_card: dict[str, Any] | None = None  # the method's MethodCard: paper, version, what is reconstructed
    extra: dict[str, float] = field(default_factory=dict)  # further metrics (precision, recall, dg/...)
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch train loss / test accuracy
    diagnostics: dict[str, Any] = field(default_factory=dict)  # histograms, class counts, per-class top-1 (diagnose)
    store: str | None = None  # synthetic store folder
    config: dict[str, Any] = field(default_factory=dict, metadata=REQUIRED)
    env: dict[str, Any] = field(default_factory=dict, metadata=REQUIRED)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"), metadata=REQUIRED
    )
    schema_version: int = field(default=SCHEMA_VERSION, metadata=REQUIRED)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: str | Path) -> Path:
        # all or nothing, and durable: a full disk leaves no half-written record nor temporary file behind
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n", durable=True)

    @classmethod
    def from_dict(cls, data: Any, path: str | Path = "<record>") -> RunRecord:
        """A record from parsed JSON, checked (:func:`check_record`; ``RecordError`` names ``path`` and the field).
        Keys this version does not know are ignored; fields added after a record was written get their defaults."""
        check_record(data, Path(path))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        """``record.json`` at ``path``; ``RecordError`` (one line) if it cannot be read or is not a valid record."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RecordError(f"{path}: not a readable run record ({one_line(e)})") from None
        record = cls.from_dict(data, path)
        record._folder = path.parent
        return record

    def load_student(self, run_folder: str | Path | None = None, device: str = "cpu") -> Any:
        """The trained student of this run (its last checkpoint, ``checkpoints/last.pt`` in the run folder), built
        with its architecture and in eval mode. ``run_folder``: where the record lives (known when it was read)."""
        import torch

        from dfkd.datasets import get_dataset
        from dfkd.models import create_model

        folder = Path(run_folder) if run_folder is not None else getattr(self, "_folder", None)
        if folder is None:
            raise UserError("RunRecord.load_student: pass run_folder (this record was not read from a file)")
        checkpoint = folder / "checkpoints" / "last.pt"
        if not checkpoint.is_file():
            raise UserError(f"{checkpoint} does not exist: the run's checkpoints were deleted or moved")
        model = create_model(self.student, get_dataset(self.dataset).num_classes)
        state = torch.load(checkpoint, map_location=device, weights_only=True)["student"]
        model.load_state_dict(state)
        return model.to(device).eval()


class RecordError(UserError):
    """A run record that is present but does not follow the schema (names the file and the field)."""


def _major(version: Any) -> int | None:
    """Major part of a schema version (``1``, ``"1"``, ``"1.2"`` → 1); None if it is not one."""
    if isinstance(version, bool):
        return None
    if isinstance(version, int):
        return version
    if isinstance(version, str):
        head = version.split(".", 1)[0]
        return int(head) if head.isdigit() else None
    return None


def _accepted(tp: Any) -> tuple[tuple[type, ...], bool]:
    """(the JSON types a field of annotation ``tp`` accepts, whether null is accepted)."""
    nullable = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(tp))
        tp = args[0]
    base = typing.get_origin(tp) or tp
    if base is float:
        return (int, float), nullable
    return (base,), nullable


def check_record(record: Any, path: Path) -> None:
    """``RecordError`` unless ``record`` (parsed JSON) is a run record of schema ``SCHEMA_MAJOR``: the fields of
    :class:`RunRecord` without a default or marked ``REQUIRED`` present, every present field of its annotated type
    (numbers finite, null only where the annotation allows it; a NaN counts as null), ``extra`` numbers or null."""
    if not isinstance(record, dict):
        raise RecordError(f"{path}: a run record must be a JSON object, found {type(record).__name__}")
    hints = typing.get_type_hints(RunRecord)
    for f in dataclasses.fields(RunRecord):
        required = f.metadata.get("required") or (
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if f.name not in record:
            if required:
                raise RecordError(f"{path}: missing required field {f.name!r} (run-record schema {SCHEMA_MAJOR})")
            continue
        value = record[f.name]
        accepted, nullable = _accepted(hints[f.name])
        if nullable and (value is None or (isinstance(value, float) and math.isnan(value))):
            continue
        if isinstance(value, bool) or not isinstance(value, accepted):
            expected = "a number" if float in accepted else accepted[0].__name__
            raise RecordError(f"{path}: field {f.name!r} must be {expected}, found {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise RecordError(f"{path}: field {f.name!r} must be a finite number, found {value!r}")
    for key, value in (record.get("extra") or {}).items():
        if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
            raise RecordError(f"{path}: field 'extra.{key}' must be a number or null, found {value!r}")


_KEY = ("dataset", "teacher", "student", "method")


def load_records(runs_dir: str | Path | Sequence[str | Path]) -> list[dict]:
    """Every ``record.json`` under ``runs_dir`` (one folder or several, e.g. the output folders of a suite's
    shards; searched recursively), as plain dicts (:meth:`RunRecord.to_dict`), in path order.

    Files that cannot be read or parsed, records of another major ``schema_version``, and malformed
    records (a missing field, a field of the wrong type, a non-finite headline) are skipped with a
    warning naming the file and the field: one bad file never blocks the others. Each returned dict gets
    ``_path`` (the file it came from). A second record with the same (dataset, teacher, student,
    method, run_id) is skipped with a warning.
    """
    roots = [Path(runs_dir)] if isinstance(runs_dir, (str, Path)) else [Path(r) for r in runs_dir]
    for root in roots:
        if not root.is_dir():
            raise UserError(f"runs directory {str(root)!r} does not exist; run `bench run ...` first or pass --runs")
    records: list[dict] = []
    seen: dict[tuple, Path] = {}
    for path in [p for root in roots for p in sorted(root.rglob("record.json"))]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            warnings.warn(f"skipping unreadable run record {path}: {e}", stacklevel=2)
            continue
        if isinstance(data, dict) and "schema_version" in data and _major(data["schema_version"]) != SCHEMA_MAJOR:
            warnings.warn(
                f"skipping {path}: schema_version {data['schema_version']!r} is not {SCHEMA_MAJOR}.x "
                "(written by another version of dfkd-bench)",
                stacklevel=2,
            )
            continue
        try:
            record = RunRecord.from_dict(data, path).to_dict()
        except RecordError as e:
            warnings.warn(f"skipping malformed run record: {e}", stacklevel=2)
            continue
        key = (*(record[k] for k in _KEY), record["run_id"])
        if key in seen:
            warnings.warn(f"skipping {path}: same run as {seen[key]} (run_id {record['run_id']!r})", stacklevel=2)
            continue
        seen[key] = path
        records.append({**record, "_path": str(path)})
    return records


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def run_dir(output_dir: str | Path, dataset: str, teacher: str, student: str, method: str, run_id: str) -> Path:
    pair = f"{safe_name(teacher)}-{safe_name(student)}"
    return Path(output_dir) / safe_name(dataset) / pair / safe_name(method) / run_id


def record_path(output_dir: str | Path, record: RunRecord) -> Path:
    """Where ``record`` lives under ``output_dir``."""
    return (
        run_dir(output_dir, record.dataset, record.teacher, record.student, record.method, record.run_id)
        / "record.json"
    )


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
