"""Run configuration: frozen dataclasses are the single source of defaults.

Layering, lowest to highest priority::

    dataclass defaults < preset YAML (dfkd/presets/<dataset>.yaml) < --config FILE < --set key=value / CLI flags

A preset holds the run-level defaults of one data set and, under ``methods:``, per-method overrides.
YAML files are read with ``yaml.safe_load``; one ``include: other.yaml`` key (relative to the file)
pulls in a base file. Keys that are not run-level fields belong to the active method's config, so
``--set bn_weight=0.2`` and ``--set diffdfkd.bn_weight=0.2`` are the same thing. Unknown keys are
errors that name the valid ones. The resolved config is saved with the run as ``config.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dfkd.errors import ConfigError, did_you_mean

PRESETS_DIR = Path(__file__).parent / "presets"

# Field metadata of a *speed switch*: it changes speed or memory, never what a run computes (the same numbers up to
# float rounding, which a test checks for each switch). ``semantic()`` leaves such fields out, so run ids, config
# ids and synthetic-store names do not change when a user turns one on, and an interrupted run may resume with it.
SPEED: Mapping[str, bool] = types.MappingProxyType({"speed": True})


def speed_switch(default: Any) -> Any:
    """A dataclass field with default ``default`` marked as a speed switch (see ``SPEED``)."""
    return field(default=default, metadata=SPEED)


@dataclass(frozen=True)
class DistillConfig:
    """Training of the student (also of teachers, with CE only). Defaults: the classic CIFAR DFKD recipe."""

    epochs: int = 200  # passes over the training set (online methods: synthesis rounds)
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.1
    momentum: float = 0.9  # SGD momentum / Adam beta1
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step | constant (stepped once per epoch)
    milestones: tuple[int, ...] = ()  # epochs where the step schedule multiplies lr by gamma
    gamma: float = 0.1
    min_lr: float = 0.0  # floor of the cosine schedule
    warmup_epochs: int = 0  # linear warm-up from lr/10 before the schedule
    temperature: float = 4.0  # KD temperature T; loss is KL(p_t^T || p_s^T)·T²
    kd_weight: float = 1.0  # weight of the KD term
    ce_weight: float = 0.0  # weight of CE to the image's label (target class for synthetic images)
    amp: str = "auto"  # auto (bf16 on CUDA when supported, else fp16; off on CPU) | off | bf16 (CPU too) | fp16
    eval_every: int = 1  # evaluate on the real test set every N epochs (and always at the last)
    num_workers: int = speed_switch(0)  # DataLoader workers
    sync_bn: bool = True  # several GPUs: SyncBatchNorm over the global batch (CUDA only; CPU ranks keep per-rank BN)
    channels_last: bool = speed_switch(True)  # student and batches in NHWC memory format (faster convolutions)

    def validate(self, prefix: str = "distill.") -> None:
        """Range and choice checks (ConfigError naming ``prefix + field``), before any work starts."""
        check_positive_ints(self, prefix, "epochs", "batch_size", "eval_every")
        check_finite(
            self, prefix, "lr", "momentum", "weight_decay", "gamma", "min_lr", "temperature", "kd_weight", "ce_weight"
        )
        check_choices(
            self,
            prefix,
            optimizer=("sgd", "adam"),
            schedule=("cosine", "step", "constant"),
            amp=("auto", "off", "bf16", "fp16"),
        )
        if self.lr <= 0:
            raise ConfigError(f"{prefix}lr must be > 0, got {self.lr!r}")
        for name in ("weight_decay", "min_lr", "kd_weight", "ce_weight", "momentum"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{prefix}{name} must be ≥ 0, got {getattr(self, name)!r}")
        if self.temperature <= 0:
            raise ConfigError(f"{prefix}temperature must be > 0, got {self.temperature!r}")
        if self.kd_weight == 0 and self.ce_weight == 0:
            raise ConfigError(f"{prefix}kd_weight and {prefix}ce_weight are both 0: nothing to train on")
        if not isinstance(self.warmup_epochs, int) or not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"{prefix}warmup_epochs must be an integer in [0, epochs), got {self.warmup_epochs!r}")
        if self.num_workers < 0:
            raise ConfigError(f"{prefix}num_workers must be ≥ 0, got {self.num_workers!r}")
        if any(not isinstance(m, int) or m < 1 for m in self.milestones):
            raise ConfigError(f"{prefix}milestones must be positive epoch numbers, got {list(self.milestones)!r}")

    def unusual(self, prefix: str = "distill.") -> list[str]:
        """Valid values far outside what DFKD recipes use, each one line (the runner prints them once, as notes)."""
        notes = []
        lr_top = 1.0 if self.optimizer == "sgd" else 0.01
        if self.lr > lr_top:
            notes.append(f"{prefix}lr {self.lr:g} is large for {self.optimizer} (DFKD recipes use ≤ {lr_top:g})")
        if not 0.5 <= self.temperature <= 100:
            notes.append(f"{prefix}temperature {self.temperature:g} is outside the 1–30 that KD recipes use")
        if self.weight_decay > 0.01:
            notes.append(f"{prefix}weight_decay {self.weight_decay:g} is large (recipes use 1e-4 to 5e-4)")
        if self.momentum >= 1:
            notes.append(f"{prefix}momentum {self.momentum:g} is ≥ 1: the optimiser's steps will not decay")
        if self.gamma > 1:
            notes.append(f"{prefix}gamma {self.gamma:g} > 1 makes the step schedule raise the learning rate")
        if self.schedule == "step" and not self.milestones:
            notes.append(f"{prefix}schedule step without {prefix}milestones keeps the learning rate constant")
        if any(m >= self.epochs for m in self.milestones) and self.schedule == "step":
            late = [m for m in self.milestones if m >= self.epochs]
            notes.append(f"{prefix}milestones {late} are at or after the last epoch ({self.epochs}): never reached")
        return notes


@dataclass(frozen=True)
class DiagnoseConfig:
    """What a run measures about its synthetic set after distillation, and its report (no effect on the student)."""

    enabled: bool = True  # precision/recall/density/coverage, Fréchet distance, histograms, per-class accuracy
    k: int = 3  # neighbours of the k-NN manifolds (Kynkäänniemi et al. 2019; Naeem et al. 2020 use k = 5 too)
    max_images: int = 10_000  # per side (synthetic, real test), a seeded random subset; 0 = every image
    chunk: int = 2048  # side of one block of pairwise distances (memory: chunk² floats)
    batch_size: int = 256  # feature extraction batch
    clip_model: str | None = None  # open_clip architecture for a second feature space ("ViT-B-32", "local-dir:…")
    clip_pretrained: str | None = None  # its weights: open_clip tag or checkpoint path (needed with clip_model)
    histogram_bins: int = 20  # bins of the confidence and energy histograms in the record
    report: bool = True  # write report.html (+ PNG figures) into the run folder at the end of `bench run`
    grid_classes: int = 10  # classes in the report's image grid (evenly spaced over the label range)
    grid_images: int = 6  # images per class and side (real test | synthetic) in the grid

    def validate(self, prefix: str = "diagnose.") -> None:
        check_positive_ints(self, prefix, "k", "chunk", "batch_size", "histogram_bins", "grid_classes", "grid_images")
        if not isinstance(self.max_images, int) or self.max_images < 0:
            raise ConfigError(f"{prefix}max_images must be an integer ≥ 0 (0 = every image), got {self.max_images!r}")
        if self.clip_model and not self.clip_pretrained:
            raise ConfigError(f"{prefix}clip_model needs {prefix}clip_pretrained (an open_clip tag or a checkpoint)")


def check_positive_ints(obj: Any, prefix: str, *names: str) -> None:
    """ConfigError unless each field ``names`` of ``obj`` is a positive integer (message names ``prefix + field``)."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{prefix}{name} must be a positive integer, got {value!r}")


def check_finite(obj: Any, prefix: str, *names: str) -> None:
    """ConfigError unless each field ``names`` of ``obj`` is a finite number."""
    import math

    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{prefix}{name} must be a finite number, got {value!r}")


def check_choices(obj: Any, prefix: str, **choices: tuple[str, ...]) -> None:
    """ConfigError (with a did-you-mean) unless each field is one of its allowed values."""
    for name, allowed in choices.items():
        value = getattr(obj, name)
        if value not in allowed:
            hint = did_you_mean(str(value), allowed)
            raise ConfigError(f"{prefix}{name} must be one of {', '.join(allowed)}, got {value!r}.{hint}")


# How a preset's recipe and budget are chosen (``protocols:`` in dfkd/presets/<dataset>.yaml). Never mixed in a table.
TRACKERS = ("tensorboard", "wandb")  # what --report-to can name (dfkd.benchmark.tracking)

PROTOCOLS: Mapping[str, str] = types.MappingProxyType(
    {
        "matched": "every synthetic method gets the data set's one KD recipe and the same budget of synthetic "
        "images and student steps; only synthesis differs",
        "published": "each method with its own released recipe and budget, to sit beside its paper's row",
        "custom": "the preset's shared settings only, no protocol layer (and any run that changes a protocol's "
        "recipe or budget)",
    }
)

TEACHER_RECIPE = DistillConfig(
    # train_scratch.py of the community benchmark (CMI): SGD 0.1, wd 1e-4, ×0.1 at 120/150/180, 200 epochs
    epochs=200,
    batch_size=256,
    lr=0.1,
    weight_decay=1e-4,
    schedule="step",
    milestones=(120, 150, 180),
    kd_weight=0.0,
    ce_weight=1.0,
)


@dataclass(frozen=True)
class RunConfig:
    """Everything ``bench run`` needs. ``method_config`` is the method's own frozen Config."""

    method: str = "diffdfkd"  # registry name (`bench ls methods`)
    protocol: str = "matched"  # matched | published | custom: which preset recipe and budget (see PROTOCOLS)
    dataset: str = "digits"  # registry name (`bench ls datasets`)
    teacher: str | None = (
        None  # arch name, community file stem (cifar10_resnet34), .pth path, or timm/..., torchvision/...
    )
    teacher_arch: str | None = None  # architecture of a teacher given as a path whose name does not say it
    student: str | None = None  # model registry name; None → the data set's default student
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data_root: str | None = None  # None → $DFKD_DATA or ~/.cache/dfkd/data
    output_dir: str = "runs"  # run records go to <output_dir>/<dataset>/<teacher>-<student>/<method>/<run-id>/
    train_teacher: bool | None = None  # train a missing teacher (teacher_train recipe); None → only for digits
    dg: dict[str, str] = field(default_factory=dict)  # shifted test sets {name: path}, e.g. imagenet-r: /data/r
    report_to: tuple[str, ...] = ()  # experiment trackers: tensorboard, wandb (pip install "dfkd-bench[track]")
    distill: DistillConfig = field(default_factory=DistillConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    teacher_train: DistillConfig = TEACHER_RECIPE
    method_config: Any = None  # the method's Config instance (saved under the method's name)

    def __post_init__(self) -> None:
        self.distill.validate("distill.")
        self.teacher_train.validate("teacher_train.")
        self.diagnose.validate("diagnose.")
        check_choices(self, "", protocol=tuple(PROTOCOLS))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer ≥ 0, got {self.seed!r}")
        for name in self.report_to:
            if name not in TRACKERS:
                raise ConfigError(
                    f"report_to: unknown tracker {name!r}; choose from {', '.join(TRACKERS)}."
                    f"{did_you_mean(str(name), TRACKERS)}"
                )

    def to_dict(self, *, speed_switches: bool = True) -> dict[str, Any]:
        """Plain data, the method's config under the method's name; ``speed_switches=False`` drops ``SPEED`` fields."""
        plain = to_plain if speed_switches else semantic
        data = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "method_config"}
        data[self.method] = plain(self.method_config) if self.method_config is not None else {}
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


RUN_FIELDS = {f.name for f in dataclasses.fields(RunConfig)} - {"method_config"}


# ---------------------------------------------------------------------------------------------
# dataclass <-> plain data
# ---------------------------------------------------------------------------------------------
def to_plain(obj: Any) -> Any:
    """Dataclasses → dicts, tuples → lists (YAML/JSON friendly)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def semantic(obj: Any) -> Any:
    """``to_plain(obj)`` without the fields marked ``SPEED`` at any depth: what determines a run's results."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: semantic(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.metadata.get("speed")}
    if isinstance(obj, (list, tuple)):
        return [semantic(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: semantic(v) for k, v in obj.items()}
    return to_plain(obj)


def _unknown_key(key: str, valid: Iterable[str], where: str) -> ConfigError:
    valid = sorted(valid)
    return ConfigError(f"Unknown config key {where}{key!r}.{did_you_mean(key, valid)} Valid keys: {', '.join(valid)}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a plain value to the annotated type (int→float, list→tuple, nested dataclasses)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if isinstance(value, str) and tp in (float, int):  # YAML 1.1 reads 1e-3 and 5e+4 as strings
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{where} must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "", base: Any = None) -> Any:
    """Build the frozen dataclass ``cls`` from ``data``; unknown keys and bad types raise ConfigError.

    The fields ``data`` leaves out keep their defaults (``base``'s values when given), at any depth: a mapping for a
    nested dataclass field updates that field's *default instance*, so ``teacher_train: {epochs: 5}`` keeps the
    rest of ``TEACHER_RECIPE`` rather than falling back to ``DistillConfig``'s class defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(key, fields, prefix)
        default = getattr(base, key) if base is not None else _default(fields[key])
        if isinstance(value, Mapping) and dataclasses.is_dataclass(default) and not isinstance(default, type):
            kwargs[key] = from_dict(type(default), value, prefix=f"{prefix}{key}.", base=default)
        else:
            kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _default(f: dataclasses.Field) -> Any:
    """A dataclass field's default value (its factory's product), or None when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → ``{"a.b": value}`` (the inverse of :func:`nest`); lists and other values are leaves."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def merge(base: dict, override: Mapping) -> dict:
    """Deep-merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# YAML files and --set
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _parse_yaml(path: Path, mtime_ns: int, size: int) -> Any:
    """One file's YAML, parsed once per (path, modification time, size): a suite resolves hundreds of cells from
    the same presets. Callers get a deep copy (:func:`load_yaml`), never the cached object."""
    try:
        return yaml.load(path.read_text(), Loader=_YAML_LOADER) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's when PyYAML has it: the same documents


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config with ``safe_load``; one ``include:`` key merges a base file underneath."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist; check the path given to --config / include:")
    if path in _seen:
        raise ConfigError(f"include: cycle through {path}")
    data = copy.deepcopy(_parse_yaml(path, path.stat().st_mtime_ns, path.stat().st_size))
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    include = data.pop("include", None)
    if include is None:
        return data
    if not isinstance(include, str):
        raise ConfigError(f"{path}: include: takes one file name")
    base = load_yaml(path.parent / include, (*_seen, path))
    return merge(base, data)


def parse_set(item: str) -> tuple[list[str], Any]:
    """``"distill.lr=0.05"`` → (["distill", "lr"], 0.05); the value is parsed as YAML (``[1, 2]``, ``null``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set takes key=value, got {item!r} (e.g. --set distill.epochs=10)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def nest(path: list[str], value: Any) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value


def route(tree: Mapping[str, Any], method: str, method_names: Iterable[str]) -> dict[str, Any]:
    """Move keys that are not run fields into the active method's section.

    Sections named after other (registered) methods are kept aside: a preset may configure several
    methods, only the active one is used.
    """
    method_names = set(method_names)
    out: dict[str, Any] = {}
    section: dict[str, Any] = {}
    for key, value in tree.items():
        if key in RUN_FIELDS:
            out[key] = value
        elif key == method:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{method}: must be a mapping of the method's config fields")
            section = merge(section, value)
        elif key in method_names:
            continue  # another method's section
        else:
            section = merge(section, {key: value})
    out[method] = section
    return out


def preset_path(dataset: str) -> Path:
    return PRESETS_DIR / f"{dataset}.yaml"


def replace_path(obj: Any, path: list[str], value: Any) -> Any:
    """Functional update of a nested frozen dataclass: ``replace_path(cfg, ["distill", "lr"], 0.1)``."""
    if not path:
        return value
    head, *rest = path
    names = {f.name for f in dataclasses.fields(obj)}
    if head not in names:
        raise _unknown_key(head, names, "")
    return dataclasses.replace(obj, **{head: replace_path(getattr(obj, head), rest, value)})


def field_docs(cls: type) -> dict[str, tuple[str, Any, str]]:
    """``{field: (type, default, comment)}`` of a config dataclass, the comment read from the ``# ...`` that follows
    the field in its source (the single source of defaults documents itself; ``bench config show``)."""
    import inspect
    import re

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        source = ""
    comments = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.*)$", source, re.M)}
    out: dict[str, tuple[str, Any, str]] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        type_ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out[f.name] = (type_, default, comments.get(f.name, ""))
    return out
