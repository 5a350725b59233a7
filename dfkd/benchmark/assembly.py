"""Run-config assembly: the layers of ``dfkd.config`` resolved into one :class:`~dfkd.config.RunConfig` for a method
and a data set, the preset's protocols (``matched`` budget, ``published`` recipes) and how a run departs from them.

It sits beside the runner because it needs the registries (a method's ``Config`` and budget shape, a data set's
class count); ``dfkd.config`` itself holds only the dataclasses and the plain-data layering, and imports nothing
of the package above it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfkd.config import (
    PROTOCOLS,
    RunConfig,
    flatten,
    from_dict,
    load_yaml,
    merge,
    nest,
    parse_set,
    preset_path,
    route,
    semantic,
)
from dfkd.datasets import get_dataset
from dfkd.errors import ConfigError, did_you_mean
from dfkd.methods import get_method_class, list_methods


@dataclass(frozen=True)
class PresetLayer:
    """A preset resolved for one method and protocol: the config tree, and the ``matched`` budget to apply."""

    tree: dict[str, Any]
    images_per_class: int | None = None  # matched protocol: synthetic images per class every method spends


def load_preset(dataset: str, method: str, protocol: str = "custom", teacher: str | None = None) -> PresetLayer:
    """The data set's preset for ``method`` under ``protocol``.

    Layers: the preset's top level (run defaults; ``distill`` is the data set's one KD recipe) < ``methods.<m>``
    (synthesis settings shared by every protocol; no ``distill`` there) < the protocol's block:
    ``protocols.matched`` (``images_per_class``, the budget every synthetic method spends) or
    ``protocols.published.<m>`` (the method's released recipe and budget, anything the method's paper fixes), whose
    ``teachers.<name>`` entry, when the released scripts set values per teacher, goes on top for that ``teacher``
    (default: the preset's).
    """
    path = preset_path(dataset)
    if not path.is_file():
        return PresetLayer({})
    data = load_yaml(path)
    data.pop("protocol", None)
    per_method = data.pop("methods", {}) or {}
    protocols = data.pop("protocols", {}) or {}
    shared = per_method.get(method, {}) or {}
    if protocol == "matched" and "distill" in shared:
        raise ConfigError(
            f"{path}: methods.{method}.distill breaks the matched protocol (one KD recipe per data set); move it "
            f"to protocols.published.{method}"
        )
    tree = merge(data, shared)
    if protocol == "published":
        block = (protocols.get("published") or {}).get(method)
        if block is None:
            raise ConfigError(
                f"{method} has no published recipe for {dataset} (protocols.published in {path.name}); run it with "
                "--protocol matched, or --protocol custom with your own settings"
            )
        block = dict(block)
        per_teacher = block.pop("teachers", None) or {}
        return PresetLayer(merge(merge(tree, block), per_teacher.get(teacher or data.get("teacher"), None) or {}))
    if protocol == "matched":
        matched = protocols.get("matched") or {}
        per_class = matched.get("images_per_class")
        if not isinstance(per_class, int) or per_class < 1:
            raise ConfigError(f"{path}: protocols.matched.images_per_class must be a positive integer")
        return PresetLayer(tree, per_class)
    return PresetLayer(tree)


def preset_protocol(dataset: str) -> str | None:
    """The protocol a preset names at its top level (``protocol: matched``), if any."""
    path = preset_path(dataset)
    return load_yaml(path).get("protocol") if path.is_file() else None


def resolve_run_config(
    *,
    method: str | None = None,
    dataset: str | None = None,
    config_file: str | Path | None = None,
    sets: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Resolve the layers into a validated :class:`RunConfig` (see the module docstring).

    Under the ``matched`` protocol the method's budget fields (``Method.budget_overrides``) are set from the
    preset's ``images_per_class`` and the resolved ``distill``, unless the config file or ``--set`` names them."""

    file_tree = load_yaml(config_file) if config_file else {}
    set_tree: dict[str, Any] = {}
    for item in sets:
        set_tree = merge(set_tree, nest(*parse_set(item)))
    flag_tree = {k: v for k, v in (flags or {}).items() if v is not None}
    top = merge(merge(file_tree, set_tree), flag_tree)

    defaults = RunConfig()
    dataset = dataset or top.get("dataset") or defaults.dataset

    spec = get_dataset(dataset)  # unknown data set → did-you-mean, before anything else
    protocol = top.get("protocol") or preset_protocol(dataset) or defaults.protocol
    if protocol not in PROTOCOLS:
        hint = did_you_mean(str(protocol), PROTOCOLS)
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}.{hint}")
    method = method or top.get("method") or load_preset(dataset, "").tree.get("method") or defaults.method
    method_cls = get_method_class(method)
    names = list_methods()

    preset = load_preset(dataset, method, protocol, teacher=top.get("teacher"))
    user = merge(route(file_tree, method, names), route(merge(set_tree, flag_tree), method, names))
    tree = merge(route(preset.tree, method, names), user)
    tree["method"], tree["dataset"], tree["protocol"] = method, dataset, protocol

    method_section = tree.pop(method)
    method_config = from_dict(method_cls.Config, method_section, prefix=f"{method}.")
    run = from_dict(RunConfig, tree)
    if preset.images_per_class is not None:
        try:
            budget = method_cls.budget_overrides(method_config, preset.images_per_class, spec.num_classes, run.distill)
        except NotImplementedError:
            budget = {}  # a plug-in without a budget shape runs as configured; its record says custom, and why
        budget = {k: v for k, v in budget.items() if k not in user[method]}  # the user's own values win
        method_config = dataclasses.replace(method_config, **budget)
    return dataclasses.replace(run, method_config=method_config)


# distill fields that do not change what the student learns: not part of a protocol's recipe
_NOT_RECIPE = frozenset({"eval_every"})


def protocol_deviations(run: RunConfig) -> list[str]:
    """How ``run`` departs from its protocol's recipe and budget, one ``"key: value (protocol: value)"`` each.

    ``matched``: the KD recipe (``distill``, speed switches and ``eval_every`` aside) and the budget (synthetic
    images, student steps) must equal the preset's; synthesis settings are free, they are what is compared.
    ``published``: the method's whole config too. An empty list means the run keeps its protocol; the runner
    records any other run as protocol ``custom`` with this list.
    """
    if run.protocol == "custom":
        return []

    ref = resolve_run_config(
        method=run.method, dataset=run.dataset, flags={"protocol": run.protocol, "teacher": run.teacher}
    )
    mine = {k: v for k, v in flatten(semantic(run.distill)).items() if k not in _NOT_RECIPE}
    theirs = flatten(semantic(ref.distill))
    out = [f"distill.{k}: {v!r} ({run.protocol}: {theirs.get(k)!r})" for k, v in mine.items() if theirs.get(k) != v]
    method_cls, k = get_method_class(run.method), get_dataset(run.dataset).num_classes
    if method_cls.shape != "real_data":
        try:
            got = method_cls.budget(run.method_config, k, run.distill)
            want = method_cls.budget(ref.method_config, k, ref.distill)
        except NotImplementedError as e:
            return [*out, f"budget: {e}"]
        for name in ("images", "kd_steps"):
            if getattr(got, name) != getattr(want, name):
                out.append(f"budget {name}: {getattr(got, name)} ({run.protocol}: {getattr(want, name)})")
    if run.protocol == "published":
        mine, theirs = flatten(semantic(run.method_config)), flatten(semantic(ref.method_config))
        out += [
            f"{run.method}.{k}: {v!r} (published: {theirs.get(k)!r})" for k, v in mine.items() if theirs.get(k) != v
        ]
    return out
