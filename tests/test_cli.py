"""The `bench` command line: verbs, one-line user errors with exit 1, tracebacks only with --debug."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dfkd.cli.main import main


def test_unknown_method_is_one_line_exit_1(capsys):
    assert main(["run", "--method", "diffdfk"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: Unknown method 'diffdfk'. Did you mean: diffdfkd? Run `bench ls methods`."


def test_bad_config_key_is_one_line(capsys):
    assert main(["run", "--method", "noise_kd", "--set", "distill.epoch=3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Did you mean 'epochs'?" in err


def test_debug_shows_the_traceback():
    from dfkd.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        main(["--debug", "run", "--method", "diffdfk"])


def test_missing_cifar_teacher_says_where_to_put_it(capsys):
    assert main(["run", "--method", "noise_kd", "--dataset", "cifar10", "--device", "cpu"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    err = err[0]
    assert "cifar10_resnet34.pth" in err and "bench teacher train --dataset cifar10 --arch resnet34" in err


def test_print_config_shows_the_resolved_layers(capsys):
    assert main(["run", "--method", "diffdfkd", "--dataset", "cifar10", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "teacher: resnet34" in out and "student: resnet18" in out
    assert "protocol: matched" in out and "temperature: 20.0" in out  # the data set's one recipe
    assert "trajectories_per_class: 1000" in out  # 5 000 images per class at 5 kept per trajectory
    argv = ["run", "--method", "diffdfkd", "--dataset", "cifar10", "--protocol", "published", "--print-config"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "temperature: 30.0" in out and "milestones:\n  - 150" in out  # the released recipe


def test_ls_lists_methods_with_their_source(capsys):
    assert main(["ls", "methods"]) == 0
    out = capsys.readouterr().out
    for name in ("diffdfkd", "diffusion_kd", "deepinversion", "real_kd", "noise_kd"):
        assert name in out
    assert main(["ls", "models", "wrn*"]) == 0
    assert "wrn40_2" in capsys.readouterr().out


def test_validate_runs_one_unit_and_one_step(capsys):
    assert main(["validate", "--method", "noise_kd", "--set", "images_per_class=4", "--set", "batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("ok") and "unit_images=4" in out


def test_run_export_and_leaderboard(tmp_path, digits_teacher, capsys):
    runs = tmp_path / "runs"
    args = [
        "run",
        "-q",
        "--method",
        "noise_kd",
        "-o",
        str(runs),
        "--set",
        "distill.epochs=1",
        "--set",
        "images_per_class=3",
        "--set",
        "batch_size=3",
    ]
    assert main(args) == 0
    run_dir = next(runs.rglob("record.json")).parent
    assert main(["synth", "export", str(run_dir), str(tmp_path / "png")]) == 0
    assert len(list((tmp_path / "png").rglob("*.png"))) == 30
    capsys.readouterr()
    # a non-empty destination is refused (nothing merged or overwritten) unless --overwrite
    assert main(["synth", "export", str(run_dir), str(tmp_path / "png")]) == 1
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(["synth", "export", str(run_dir), str(tmp_path / "png"), "--overwrite"]) == 0
    assert len(list((tmp_path / "png").rglob("*.png"))) == 30
    assert main(["synth", "info", str(run_dir)]) == 0
    assert '"kept": 30' in capsys.readouterr().out
    assert main(["leaderboard", "--runs", str(runs), "--out", str(tmp_path / "board")]) == 0
    csv = (tmp_path / "board" / "leaderboard-digits.csv").read_text()
    assert "noise_kd" in csv
    record = json.loads((run_dir / "record.json").read_text())
    assert record["method"] == "noise_kd"


def test_leaderboard_without_records_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", "--runs", str(tmp_path / "empty")]) == 1
    assert "bench run" in capsys.readouterr().err


def test_help_works_without_heavy_imports():
    out = subprocess.run([sys.executable, "-m", "dfkd", "--help"], capture_output=True, text=True, check=True)
    assert "run" in out.stdout and "leaderboard" in out.stdout


def test_bench_prompts_disambiguates_imagenet_crane(capsys, tmp_path):
    out_file = tmp_path / "prompts.yaml"
    assert (
        main(["prompts", "--dataset", "imagenet", "--classes", "134", "517", "--limit", "2", "--out", str(out_file)])
        == 0
    )
    out = capsys.readouterr().out
    assert "wading bird" in out and "lifts" in out
    assert out_file.is_file() and out_file.stat().st_size > 0
