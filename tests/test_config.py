"""Config layering: defaults < preset < --config file < --set; unknown keys and bad types are errors."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from dfkd.benchmark.assembly import resolve_run_config
from dfkd.config import DistillConfig, RunConfig, from_dict, load_yaml, parse_set, replace_path, semantic, to_plain
from dfkd.errors import ConfigError
from dfkd.methods import create_method


def test_defaults_are_the_dataclass_defaults_without_preset(monkeypatch, tmp_path):
    monkeypatch.setattr("dfkd.config.PRESETS_DIR", tmp_path)  # no preset files
    cfg = resolve_run_config(method="noise_kd", dataset="digits")
    assert cfg.distill == DistillConfig()
    assert cfg.method_config.images_per_class == 500


def test_preset_then_file_then_set(tmp_path):
    preset = resolve_run_config(method="noise_kd", dataset="digits")
    assert preset.distill.epochs == 20  # digits preset
    assert preset.method_config.images_per_class == 50  # preset methods: noise_kd:
    f = tmp_path / "c.yaml"
    f.write_text("distill: {epochs: 7, lr: 0.01}\nimages_per_class: 11\n")
    from_file = resolve_run_config(method="noise_kd", dataset="digits", config_file=f)
    assert (from_file.distill.epochs, from_file.distill.lr) == (7, 0.01)
    assert from_file.distill.batch_size == 64  # untouched keys keep the preset
    assert from_file.method_config.images_per_class == 11
    top = resolve_run_config(
        method="noise_kd",
        dataset="digits",
        config_file=f,
        sets=["distill.epochs=3", "noise_kd.images_per_class=5", "std=0.1"],
    )
    assert top.distill.epochs == 3 and top.distill.lr == 0.01
    assert top.method_config.images_per_class == 5 and top.method_config.std == 0.1


def test_flags_beat_sets_and_none_flags_are_ignored():
    cfg = resolve_run_config(method="noise_kd", dataset="digits", sets=["seed=4"], flags={"seed": 9, "student": None})
    assert cfg.seed == 9 and cfg.student == "resnet8"


def test_unknown_run_key_names_valid_ones():
    with pytest.raises(ConfigError) as info:
        resolve_run_config(method="noise_kd", dataset="digits", sets=["distill.epoch=3"])
    msg = str(info.value)
    assert "'epoch'" in msg and "Did you mean 'epochs'?" in msg and "batch_size" in msg


def test_unknown_method_key_is_an_error():
    with pytest.raises(ConfigError, match=r"noise_kd\.'image_per_class'.*Did you mean 'images_per_class'"):
        resolve_run_config(method="noise_kd", dataset="digits", sets=["image_per_class=3"])


def test_bad_types_are_errors():
    with pytest.raises(ConfigError, match=r"distill\.epochs must be an integer"):
        resolve_run_config(method="noise_kd", dataset="digits", sets=["distill.epochs=abc"])
    with pytest.raises(ConfigError, match="must be a number"):
        from_dict(DistillConfig, {"lr": "fast"})


def test_coercions():
    cfg = from_dict(DistillConfig, {"lr": 1, "milestones": [3, 5], "epochs": 4.0})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.milestones == (3, 5)
    assert cfg.epochs == 4 and isinstance(cfg.epochs, int)


def test_include_and_safe_load(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\ndistill: {epochs: 5, lr: 0.2}\n")
    (tmp_path / "top.yaml").write_text("include: base.yaml\ndistill: {epochs: 6}\n")
    assert load_yaml(tmp_path / "top.yaml") == {"seed": 3, "distill": {"epochs": 6, "lr": 0.2}}
    (tmp_path / "evil.yaml").write_text("x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "evil.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_parse_set_values_are_yaml():
    assert parse_set("distill.milestones=[1, 2]") == (["distill", "milestones"], [1, 2])
    assert parse_set("teacher=null") == (["teacher"], None)
    assert parse_set("teacher=cifar10_resnet34") == (["teacher"], "cifar10_resnet34")
    with pytest.raises(ConfigError, match="key=value"):
        parse_set("novalue")


def test_saved_config_round_trips(tmp_path):
    cfg = resolve_run_config(method="noise_kd", dataset="digits", sets=["distill.epochs=2"])
    cfg.save(tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["distill"]["epochs"] == 2 and saved["noise_kd"]["images_per_class"] == 50
    again = resolve_run_config(config_file=tmp_path / "config.yaml")
    assert again == cfg


def test_other_methods_sections_are_ignored(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("deepinversion: {iterations: 3}\nnoise_kd: {std: 0.3}\n")
    cfg = resolve_run_config(method="noise_kd", dataset="digits", config_file=f)
    assert cfg.method_config.std == 0.3


def test_configs_are_frozen_and_replace_path_works():
    cfg = RunConfig()
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]
    assert replace_path(cfg, ["distill", "lr"], 0.5).distill.lr == 0.5
    with pytest.raises(ConfigError):
        replace_path(cfg, ["distill", "nope"], 1)


def test_unknown_method_and_dataset_say_did_you_mean():
    from dfkd.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="Did you mean: noise_kd"):
        resolve_run_config(method="noise_dk", dataset="digits")
    with pytest.raises(UnknownNameError, match="Did you mean: digits"):
        resolve_run_config(method="noise_kd", dataset="digit")


# -- speed switches: they change speed or memory, never results, so they never name a run or a store ----------
_OTHER_VALUE = {"attention": "sliced", "max_batch": 2, "num_workers": 2}  # non-bool switches: another valid value


def _speed_switches(obj, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, a different valid value) of every ``SPEED`` field inside a config dataclass."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("speed"):
            if isinstance(value, bool):
                out.append((prefix + f.name, not value))
            else:
                assert f.name in _OTHER_VALUE, f"add another valid value of the new speed switch {f.name!r} here"
                out.append((prefix + f.name, _OTHER_VALUE[f.name]))
        elif dataclasses.is_dataclass(value):
            out += _speed_switches(value, f"{prefix}{f.name}.")
    return out


def _ids(cfg: RunConfig) -> tuple[str, str, str]:
    from types import SimpleNamespace

    from dfkd.benchmark.runner import config_id_for, run_id_for, store_key
    from dfkd.hashing import stable_hash

    method = create_method(cfg.method, **to_plain(cfg.method_config))
    synth = SimpleNamespace(identity=lambda: {"backend": "fixed"})  # the backend's own identity is tested apart
    teacher = SimpleNamespace(name="resnet20", path=None)
    return config_id_for(cfg), run_id_for(cfg), stable_hash(store_key(cfg, method, synth, teacher, "resnet8"))


@pytest.mark.parametrize("method", ["diffdfkd", "prism", "deepinversion"])
def test_speed_switches_leave_run_ids_and_store_names_alone(method):
    base = resolve_run_config(method=method, dataset="digits")
    switches = [(f"distill.{k}", v) for k, v in _speed_switches(base.distill)]
    switches += [(f"{method}.{k}", v) for k, v in _speed_switches(base.method_config)]
    names = {k.rsplit(".", 1)[-1] for k, _ in switches}
    assert {"num_workers", "channels_last"} <= names
    if method != "deepinversion":
        assert {"cfg_batch", "prompt_cache", "max_batch", "attention", "compile", "gradient_checkpointing"} <= names
    ids = _ids(base)
    for key, value in switches:
        flipped = resolve_run_config(method=method, dataset="digits", sets=[f"{key}={value}"])
        assert flipped != base
        assert _ids(flipped) == ids, key
    # what does change the results still changes the ids: the method's settings all three, the student's recipe
    # the run's (and the store's only where the synthetic set depends on the student, as DeepInversion's does)
    semantic_sets = [f"{method}.batch_size=12"] + (
        [f"{method}.generator.dtype=bfloat16"] if method != "deepinversion" else []
    )
    for item in semantic_sets:
        changed = _ids(resolve_run_config(method=method, dataset="digits", sets=[item]))
        assert all(a != b for a, b in zip(changed, ids)), item
    changed = _ids(resolve_run_config(method=method, dataset="digits", sets=["distill.lr=0.02"]))
    assert changed[0] != ids[0] and changed[1] != ids[1]
    store_follows_student = create_method(method).store_depends_on_student()
    assert (changed[2] != ids[2]) == store_follows_student


def test_semantic_drops_speed_fields_at_any_depth():
    from dfkd.synthesis.diffusion import GeneratorConfig

    plain = semantic({"d": DistillConfig(), "g": [GeneratorConfig()]})
    assert "channels_last" not in plain["d"] and "num_workers" not in plain["d"] and plain["d"]["lr"] == 0.1
    assert set(plain["g"][0]) == {"path", "revision", "variant", "dtype", "scheduler", "resolution"}
    assert RunConfig().to_dict()["distill"]["channels_last"] is True  # the saved config keeps every field


def test_a_partial_nested_section_keeps_the_fields_default_instance():
    from dfkd.config import TEACHER_RECIPE

    run = from_dict(RunConfig, {"teacher_train": {"epochs": 5}})
    assert run.teacher_train == dataclasses.replace(TEACHER_RECIPE, epochs=5)  # not DistillConfig's class defaults
    cfg = resolve_run_config(method="diffdfkd", dataset="digits", sets=["online.epochs=3"])
    assert cfg.method_config.online.epochs == 3 and cfg.method_config.online.temperature == 30.0
