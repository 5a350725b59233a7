"""dfkd-bench: a unified benchmark suite for data-free knowledge distillation.

Public API (imported lazily so ``import dfkd`` stays cheap)::

    import dfkd
    dfkd.list_methods("diff*")                    # ['diffdfkd', 'diffusion_kd']
    method = dfkd.create_method("deepinversion", iterations=500)
    model = dfkd.create_model("wrn40_2", num_classes=100)
    spec = dfkd.get_dataset("cifar10")
    record = dfkd.run(method="noise_kd", dataset="digits", distill={"epochs": 2})   # real values, or a RunConfig
    student = record.load_student()                                               # eval mode, on the CPU
    df = dfkd.load_runs("runs")                                                   # every record, one row each
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "create_method": "dfkd.methods",
    "list_methods": "dfkd.methods",
    "get_method_class": "dfkd.methods",
    "create_model": "dfkd.models",
    "list_models": "dfkd.models",
    "get_dataset": "dfkd.datasets",
    "list_datasets": "dfkd.datasets",
    "resolve_run_config": "dfkd.benchmark.assembly",
    "RunConfig": "dfkd.config",
    "DistillConfig": "dfkd.config",
    "run": "dfkd.api",
    "load_runs": "dfkd.api",
    "validate": "dfkd.benchmark.runner",
    "RunRecord": "dfkd.benchmark.records",
    "SyntheticStore": "dfkd.synthesis.store",
    "Method": "dfkd.methods.base",
    "MethodCard": "dfkd.methods.base",
    "Synthesizer": "dfkd.methods.base",
    "Distiller": "dfkd.methods.base",
    "SynthesisOutput": "dfkd.methods.base",
    "SynthesisUnit": "dfkd.methods.base",
    "METHODS": "dfkd.registry",
    "MODELS": "dfkd.registry",
    "DATASETS": "dfkd.registry",
    "UserError": "dfkd.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dfkd' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
