"""What a researcher meets first (#17): output that explains itself, plain progress in logs, an honest CLI, and the
Python API with real values."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

import dfkd
from dfkd.benchmark.progress import Reporter
from dfkd.benchmark.records import RunRecord
from dfkd.cli.main import main


def _recording(reporter: Reporter) -> io.StringIO:
    buffer = io.StringIO()
    reporter._console = Console(file=buffer, width=200, force_terminal=False)
    return buffer


def _record(top1: float) -> SimpleNamespace:
    return SimpleNamespace(
        method="noise_kd", dataset="digits", teacher="resnet20", student="resnet8", protocol="matched",
        student_top1=top1, student_top1_best=top1, student_top1_best_epoch=1, student_top5=50.0, teacher_top1=98.0,
        teacher_student_agreement=10.0, num_synthetic_images=500, synthesis_seconds=75.0, distill_seconds=3.0, extra={},
    )  # fmt: skip


def test_the_result_table_says_what_the_numbers_mean_and_warns_at_chance():
    reporter = Reporter()
    out = _recording(reporter)
    reporter.stages = [("teacher", 1.0), ("synthesize", 12.0)]  # this process's 12 s; the record says 75 s in all
    reporter.summary(_record(10.2), Path("runs/x/record.json"))
    text = out.getvalue()
    assert "chance level" in text and "10.00%" in text and "student / teacher" in text and "0.10" in text
    assert "warning" in text and "at chance level" in text
    assert text.count("stage: synthesize") == 1 and "1m15s" in text and "stage: distill" in text
    reporter = Reporter()
    out = _recording(reporter)
    reporter.summary(_record(60.0), Path("r.json"), reported_again=True)
    assert "warning" not in out.getvalue() and "reported again" in out.getvalue()


def test_progress_without_a_terminal_is_plain_lines():
    reporter = Reporter(plain=True, every_s=0.0)
    out = _recording(reporter)
    with reporter.task("synthesize", total=3, unit="unit") as tick:
        for _ in range(3):
            tick({"loss": 0.5})
    lines = [line for line in out.getvalue().splitlines() if line.startswith("synthesize:")]
    assert lines[0].startswith("synthesize: 1/3 units (33%)") and "loss=0.5" in lines[0] and len(lines) == 3
    assert "\r" not in out.getvalue()  # no live bar


def test_bench_alone_prints_help_and_version_env_and_config_show_explain_themselves(capsys):
    assert main([]) == 0 and "usage: bench" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("dfkd-bench ")
    assert main(["env"]) == 0
    env = capsys.readouterr().out
    assert "torch:" in env and "stores:" in env and "devices:" in env
    assert main(["config", "show", "deepinversion"]) == 0
    shown = capsys.readouterr().out
    assert "iterations" in shown and "g_steps" in shown and "2000" in shown  # field, upstream name, default


def test_validate_checks_the_given_teacher_and_loads_unpackaged_methods(tmp_path, capsys):
    assert main(["validate", "--dataset", "cifar10", "--method", "noise_kd"]) == 1
    assert "No teacher checkpoint" in capsys.readouterr().err
    plugin = tmp_path / "my_method.py"
    plugin.write_text("from dfkd.methods.baselines import NoiseKD\n\n\nclass MyNoise(NoiseKD):\n    pass\n")
    args = ["validate", "--method", f"{plugin}:MyNoise", "--set", "images_per_class=2", "--set", "batch_size=2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "teacher=resnet20 (random weights" in out and out.strip().endswith("ok")
    assert main(["validate", "--method", f"{tmp_path}/nope.py:X"]) == 1
    assert "no file" in capsys.readouterr().err


def test_python_api_takes_real_values_and_gives_records_frames_and_students(tmp_path, digits_teacher, capsys):
    record = dfkd.run(
        method="noise_kd", dataset="digits", images_per_class=4, distill={"epochs": 1}, output_dir=str(tmp_path)
    )
    assert record.epochs == 1 and record.num_synthetic_images == 40
    frame = dfkd.load_runs(tmp_path)
    assert len(frame) == 1 and frame.loc[0, "student_top1"] == record.student_top1 and "synthetic/kept" in frame
    student = RunRecord.read(frame.loc[0, "path"]).load_student()
    saved = torch.load(Path(frame.loc[0, "path"]).parent / "checkpoints" / "last.pt", weights_only=True)["student"]
    assert not student.training and all(torch.equal(v, saved[k]) for k, v in student.state_dict().items())
    # that student as a teacher: given as its run folder, or as a safetensors file of its weights
    from safetensors.torch import save_file

    from dfkd.benchmark.teachers import build_teacher, resolve_teacher
    from dfkd.datasets import get_dataset

    spec, cpu = get_dataset("digits"), torch.device("cpu")
    ref = resolve_teacher(str(Path(frame.loc[0, "path"]).parent), None, spec)
    assert ref.arch == "resnet8" and ref.name.startswith("resnet8@noise_kd")
    as_teacher = build_teacher(ref, spec, cpu)
    assert all(torch.equal(v, saved[k]) for k, v in as_teacher.state_dict().items())
    save_file({k: v.contiguous() for k, v in saved.items()}, tmp_path / "student.safetensors")
    ref = resolve_teacher(str(tmp_path / "student.safetensors"), "resnet8", spec)
    assert all(torch.equal(v, saved[k]) for k, v in build_teacher(ref, spec, cpu).state_dict().items())
    # `bench run` puts the result on stdout: the record's path, or the record itself with --json
    argv = ["run", "-q", "--method", "noise_kd", "--set", "images_per_class=4", "--set", "distill.epochs=1"]
    assert main([*argv, "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == frame.loc[0, "path"]
    assert main([*argv, "-o", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == record.run_id


def test_every_verb_has_examples_that_parse_and_dash_o_is_a_folder_everywhere():
    import argparse
    import shlex

    from dfkd.cli.main import EXAMPLES, build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in verbs.items():
        assert sub.epilog and "example" in sub.epilog, f"bench {name} --help has no example"
        for action in sub._actions:
            if "-o" in action.option_strings:
                assert action.dest in ("output_dir", "out") and (action.metavar in (None, "DIR")), (name, action.dest)
    for lines in EXAMPLES.values():
        for line in lines:
            parser.parse_args(shlex.split(line)[1:])  # every example's flags exist
