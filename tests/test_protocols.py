"""The two protocols: ``matched`` holds the KD recipe and budget equal across methods, ``published`` keeps each
method's own, records say which, and a run that changes a protocol's recipe or budget is recorded as custom."""

from __future__ import annotations

import pytest

from dfkd.benchmark.assembly import load_preset, protocol_deviations, resolve_run_config
from dfkd.config import PROTOCOLS, semantic
from dfkd.datasets import get_dataset
from dfkd.errors import ConfigError
from dfkd.methods import get_method_class, list_methods

PRESET_DATASETS = ("digits", "cifar10", "cifar100", "imagenet")
RECIPE_EXEMPT = {"eval_every", "num_workers", "channels_last"}  # not part of what the student learns


def _resolve(method: str, dataset: str, protocol: str, *sets: str):
    return resolve_run_config(method=method, dataset=dataset, flags={"protocol": protocol}, sets=sets)


def _recipe(run) -> dict:
    return {k: v for k, v in semantic(run.distill).items() if k not in RECIPE_EXEMPT}


@pytest.mark.parametrize("dataset", PRESET_DATASETS)
def test_matched_gives_every_method_the_same_recipe_and_budget(dataset: str) -> None:
    k = get_dataset(dataset).num_classes
    per_class = load_preset(dataset, "noise_kd", "matched").images_per_class
    runs = {m: _resolve(m, dataset, "matched") for m in list_methods()}
    recipes = {m: _recipe(r) for m, r in runs.items()}
    assert all(recipe == recipes["noise_kd"] for recipe in recipes.values()), recipes
    budgets = {}
    for m, run in runs.items():
        cls = get_method_class(m)
        if cls.shape != "real_data":
            budgets[m] = cls.budget(run.method_config, k, run.distill)
    stored = {m: b.images for m, b in budgets.items() if get_method_class(m).stores_images()}
    assert set(stored.values()) == {per_class * k}, budgets
    assert all(b.images is None for m, b in budgets.items() if m not in stored)  # in-loop: nothing stored
    assert len({b.kd_steps for b in budgets.values()}) == 1, budgets  # the same student steps for every method
    assert all(protocol_deviations(r) == [] for r in runs.values())


@pytest.mark.parametrize("dataset", PRESET_DATASETS)
@pytest.mark.parametrize("method", list_methods())
def test_published_is_the_methods_own_or_says_there_is_none(dataset: str, method: str) -> None:
    try:
        run = _resolve(method, dataset, "published")
    except ConfigError as e:
        assert "no published recipe" in str(e) and "--protocol matched" in str(e)
        # the only gaps, stated in the preset: no published ImageNet profile for these
        no_imagenet = {
            "deepinversion",
            "real_kd",
            "dafl",
            "zskt",
            "dfad",
            "dfq",
            "cmi",
            "fast2",
            "fast5",
            "fast10",
            "nayer",
        }
        assert dataset == "imagenet" and method in no_imagenet
        return
    assert run.protocol == "published" and protocol_deviations(run) == []


def test_published_deepinversion_is_the_cmi_pack_profile() -> None:
    for dataset in ("digits", "cifar10", "cifar100"):
        c = _resolve("deepinversion", dataset, "published").method_config
        assert (c.adv_weight, c.adv_loss, c.adv_temperature) == (1.0, "js", 3.0)
        assert (c.tv_l1_weight, c.tv_l2_weight, c.l2_weight, c.priors_on, c.keep) == (1e-3, 0.0, 0.0, "raw", "best")
    c = _resolve("deepinversion", "cifar10", "published").method_config
    assert (c.iterations, c.batch_size, c.kd_steps, c.bn_weight) == (1000, 256, 400, 10.0)


def test_published_real_kd_is_vanilla_kd() -> None:
    d = _resolve("real_kd", "cifar10", "published").distill
    assert (d.temperature, d.ce_weight, d.batch_size, d.weight_decay, d.milestones) == (
        1.0,
        0.1,
        128,
        1e-4,
        (120, 150, 180),
    )


def test_matched_budget_follows_the_recipe_and_the_user_may_still_set_it() -> None:
    run = _resolve("deepinversion", "digits", "matched")
    assert (run.method_config.batch_size, run.method_config.kd_steps) == (25, 8)  # 500 images over 20 rounds
    run = _resolve("deepinversion", "digits", "matched", "batch_size=50")
    assert run.method_config.batch_size == 50
    assert any(d.startswith("budget images: 1000") for d in protocol_deviations(run))


def test_changing_a_protocols_recipe_is_a_deviation_but_synthesis_settings_are_free() -> None:
    assert protocol_deviations(_resolve("diffdfkd", "digits", "matched", "bn_weight=0.5")) == []
    deviations = protocol_deviations(_resolve("diffdfkd", "digits", "matched", "distill.lr=0.2"))
    assert deviations == ["distill.lr: 0.2 (matched: 0.05)"]
    assert protocol_deviations(_resolve("diffdfkd", "digits", "matched", "distill.eval_every=5")) == []
    deviations = protocol_deviations(_resolve("diffdfkd", "digits", "published", "bn_weight=0.5"))
    assert deviations == ["diffdfkd.bn_weight: 0.5 (published: 0.001)"]
    assert protocol_deviations(_resolve("diffdfkd", "digits", "custom", "distill.lr=0.2")) == []


def test_the_protocol_is_checked_and_defaults_to_matched() -> None:
    assert resolve_run_config(method="noise_kd", dataset="digits").protocol == "matched"
    assert set(PROTOCOLS) == {"matched", "published", "custom"}
    with pytest.raises(ConfigError, match="Did you mean 'published'"):
        _resolve("noise_kd", "digits", "publised")


def test_a_preset_may_not_give_one_method_its_own_recipe_under_matched(tmp_path, monkeypatch) -> None:
    import dfkd.config as config

    (tmp_path / "digits.yaml").write_text(
        "protocols: {matched: {images_per_class: 5}}\nmethods: {noise_kd: {distill: {lr: 0.5}}}\n"
    )
    monkeypatch.setattr(config, "PRESETS_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"move it to protocols\.published\.noise_kd"):
        _resolve("noise_kd", "digits", "matched")
    assert _resolve("noise_kd", "digits", "custom").distill.lr == 0.5  # custom: the shared settings as written


def test_a_plugin_without_a_budget_shape_runs_but_is_never_recorded_as_matched() -> None:
    from dataclasses import dataclass

    from dfkd.methods.base import Method, MethodCard
    from dfkd.registry import METHODS

    class NoBudget(Method):
        @dataclass(frozen=True)
        class Config:
            strength: float = 1.0  # anything

        card = MethodCard(title="No budget", authors="Nobody", year=2026)

    METHODS.register("test_no_budget", NoBudget, source="tests")
    try:
        run = _resolve("test_no_budget", "digits", "matched")  # resolves: a plug-in is not refused by default
        deviations = protocol_deviations(run)
    finally:
        METHODS.unregister("test_no_budget")
    assert len(deviations) == 1 and "does not say how it spends a budget" in deviations[0]


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_published_takes_the_released_scripts_line_of_each_teacher(dataset: str) -> None:
    # Fast-Datafree's fast_cifar.sh: adv 1.33 / oh 0.5 for ResNet-34, adv 1.0 for VGG-11, adv 1.1 / oh 0.4 for WRN-40-2
    for teacher, (adv, oh) in {"resnet34": (1.33, 0.5), "vgg11": (1.0, 0.5), "wrn40_2": (1.1, 0.4)}.items():
        for method in ("fast2", "fast5", "fast10"):
            run = _resolve(method, dataset, "published", f"teacher={teacher}")
            assert (run.method_config.adv_weight, run.method_config.oh_weight) == (adv, oh)
            assert protocol_deviations(run) == []  # each pair's own line is the published recipe for that pair
    run = _resolve("fast2", dataset, "published", "teacher=vgg11", "adv_weight=1.33")
    assert protocol_deviations(run) == ["fast2.adv_weight: 1.33 (published: 1.0)"]
