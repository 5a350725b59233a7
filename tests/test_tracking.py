"""``--report-to tensorboard,wandb``: what a tracked run logs, read back from the files the trackers wrote
(TensorBoard's event files through its own reader; W&B offline, its run file), and the errors before any work."""

from __future__ import annotations

import importlib.util

import pytest

from dfkd.benchmark.assembly import resolve_run_config
from dfkd.benchmark.progress import Reporter
from dfkd.benchmark.runner import run, run_id_for
from dfkd.errors import ConfigError, UserError


def _cfg(tmp_path, *report_to: str):
    return resolve_run_config(
        method="noise_kd",
        dataset="digits",
        sets=["distill.epochs=2", "images_per_class=4", "batch_size=4", "diagnose.enabled=false"],
        flags={"output_dir": str(tmp_path / "runs"), "report_to": report_to},
    )


def test_a_tracked_run_logs_config_epochs_stages_and_record_to_tensorboard_and_wandb(
    tmp_path, digits_teacher, monkeypatch
):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _cfg(tmp_path, "tensorboard", "wandb")
    record = run(cfg, reporter=Reporter(quiet=True))
    folder = next((tmp_path / "runs").rglob("record.json")).parent

    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"distill/loss", "distill/lr", "distill/top1", "record/student_top1", "record/teacher_top1"} <= scalars
    assert [e.step for e in events.Scalars("distill/loss")] == [1, 2]  # one point per epoch, step = epoch
    (last,) = events.Scalars("record/student_top1")
    assert last.step == 2 and last.value == pytest.approx(record.student_top1)
    assert any(t.startswith("stage_seconds/") for t in scalars)
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "method: " in config_text and '"noise_kd"' in config_text and run_id_for(cfg) in config_text

    (wandb_file,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    data = wandb_file.read_bytes()  # protobuf records: keys and JSON values are stored as plain UTF-8
    assert run_id_for(cfg).encode() in data  # the W&B run id is the run id (a resume continues it)
    for key in (b"distill/loss", b"distill/top1", b"record/student_top1", b"noise_kd"):
        assert key in data, key


def test_report_to_does_not_change_the_run_id_and_unknown_trackers_are_refused_with_a_hint(tmp_path):
    assert run_id_for(_cfg(tmp_path, "tensorboard")) == run_id_for(_cfg(tmp_path))  # tracking changes no result
    with pytest.raises(ConfigError, match=r"unknown tracker 'tensorbord'.*Did you mean 'tensorboard'"):
        _cfg(tmp_path, "tensorbord")


def test_a_tracker_without_its_package_stops_the_run_before_any_work(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match=r'needs the wandb package: pip install "dfkd-bench\[track\]"'):
        run(_cfg(tmp_path, "wandb"), reporter=Reporter(quiet=True))
    assert not (tmp_path / "runs" / "digits").exists()  # no teacher trained, no run folder made
