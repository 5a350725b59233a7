"""Export and share: a run's student as a Hub model folder that the suite reads back as a teacher, a synthetic set
as a Hugging Face dataset that round-trips through ``datasets.load_from_disk``, and a push without a network that
fails in one line."""

from __future__ import annotations

import json

import numpy
import pytest
import torch

from dfkd.benchmark.assembly import resolve_run_config
from dfkd.benchmark.progress import Reporter
from dfkd.benchmark.records import RunRecord
from dfkd.benchmark.runner import run
from dfkd.cli.main import main as bench
from dfkd.datasets import get_dataset
from dfkd.errors import UserError
from dfkd.synthesis.store import SyntheticStore


@pytest.fixture
def finished_run(tmp_path, digits_teacher):
    cfg = resolve_run_config(
        method="noise_kd",
        dataset="digits",
        sets=["distill.epochs=1", "images_per_class=3", "batch_size=6", "diagnose.enabled=false"],
        flags={"output_dir": str(tmp_path / "runs")},
    )
    record = run(cfg, reporter=Reporter(quiet=True))
    return record, next((tmp_path / "runs").rglob("record.json")).parent


def test_an_exported_student_is_the_runs_student_and_reads_back_as_a_teacher(finished_run, tmp_path, capsys):
    from safetensors.torch import load_file

    from dfkd.benchmark.teachers import resolve_teacher
    from dfkd.models import create_model

    record, folder = finished_run
    assert bench(["student", "export", str(folder), str(tmp_path / "hf")]) == 0
    out = tmp_path / "hf"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "record.json"]

    model = create_model("resnet8", 10)
    model.load_state_dict(load_file(out / "model.safetensors"))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), RunRecord.read(folder / "record.json").load_student(folder)(x))

    ref = resolve_teacher(str(out / "model.safetensors"), None, get_dataset("digits"))  # the arch from the header
    assert ref.arch == "resnet8" and ref.path == out / "model.safetensors"
    config = json.loads((out / "config.json").read_text())
    assert (config["arch"], config["num_classes"], config["input_size"]) == ("resnet8", 10, 32)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: dfkd-bench") and f"{record.student_top1:.2f} %" in card
    assert "noise_kd" in card and record.run_id in card


def test_a_synthetic_set_exports_as_a_hugging_face_dataset_with_its_table(finished_run, tmp_path):
    datasets = pytest.importorskip("datasets")
    record, folder = finished_run
    assert bench(["synth", "export", str(folder), str(tmp_path / "ds"), "--format", "hf"]) == 0
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    store = SyntheticStore.open_existing(record.store)
    table = store.read_table(kept_only=True)
    assert len(ds) == store.num_images() == 30
    assert ds.features["label"].names == list(get_dataset("digits").class_names)
    assert ds["label"] == table["label"].tolist() and all(ds["kept"])
    assert torch.allclose(torch.tensor(ds["teacher_logits"]), table["teacher_logits"])  # (N, K) per-image scores
    first = torch.from_numpy(numpy.array(ds[0]["image"])).permute(2, 0, 1)  # (H, W, 3) → (3, H, W)
    assert torch.equal(first, store.images()[0])  # the PNG-free round trip keeps every pixel


def test_pushing_without_a_network_fails_in_one_line_and_keeps_the_files(finished_run, tmp_path, monkeypatch, capsys):
    _, folder = finished_run
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    from dfkd.benchmark.share import export_student, push_folder

    out = export_student(folder, tmp_path / "hf")
    with pytest.raises(UserError) as e:
        push_folder(out, "someone/student")
    message = str(e.value)
    assert "\n" not in message and "someone/student" in message and "hf auth login" in message
    assert (out / "model.safetensors").is_file()
    assert bench(["synth", "export", str(folder), str(tmp_path / "png"), "--push-to-hub", "someone/set"]) == 1
    assert "add --format hf" in capsys.readouterr().err
