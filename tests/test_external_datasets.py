"""Data sets from where researchers keep them (``dfkd.datasets.external``): an ImageFolder of one's own (also in
``bench synth export``'s layout), a torchvision data set by name, a Hugging Face ``datasets`` folder — each built
in a temporary folder and read through the real loaders; and a whole ``bench run`` on an ImageFolder."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from PIL import Image

from dfkd.datasets import get_dataset
from dfkd.errors import UserError


def _png(path, value: int, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def _folder(root, classes=("cat", "dog", "fox"), per_class: int = 4, size: int = 12) -> None:
    for split in ("train", "test"):
        for label, name in enumerate(classes):
            for i in range(per_class):
                _png(root / split / name / f"{i}.png", 40 * label + i, size)


def test_an_image_folder_is_a_data_set_with_its_classes_and_small_image_geometry(tmp_path):
    _folder(tmp_path / "pets")
    spec = get_dataset(f"imagefolder:{tmp_path / 'pets'}")
    assert spec.class_names == ("cat", "dog", "fox") and spec.num_classes == 3
    assert (spec.input_size, spec.default_student) == (32, "resnet18")  # 12-px images: CIFAR-like
    test = spec.load("test")
    x, y = test[5]
    assert x.shape == (3, 32, 32) and y == 1 and len(test) == 12
    assert spec.class_index("dog") == 1


def test_bench_synth_exports_layout_reads_back_as_an_image_folder_and_as_a_shifted_set(tmp_path):
    from dfkd.datasets.shifted import _folder_label

    for split in ("train", "test"):
        for label, name in enumerate(("zero", "one")):
            _png(tmp_path / "export" / split / f"{label:03d}_{name}" / "u_0.png", 100 * label)
    spec = get_dataset(f"imagefolder:{tmp_path / 'export'}")
    assert spec.class_names == ("zero", "one")
    assert [y for _, y in spec.load("train")] == [0, 1]
    assert _folder_label(get_dataset("digits"), "007_seven") == 7  # the shifted-set loader takes it too


def test_a_torchvision_data_set_by_name_from_its_own_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DFKD_DATA", str(tmp_path))
    raw = tmp_path / "torchvision" / "MNIST" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        images = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    spec = get_dataset("torchvision:MNIST")
    assert spec.num_classes == 10 and spec.class_names[3] == "3 - three" and spec.input_size == 32
    test = spec.load("test")
    assert len(test) == 10 and test[4][0].shape == (3, 32, 32) and test[4][1] == 4
    with pytest.raises(UserError, match="Did you mean 'MNIST'"):
        get_dataset("torchvision:MNSIT")


def test_a_hugging_face_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["ant", "bee"])})

    def split(n):
        images = [Image.fromarray(np.full((96, 96, 3), 60 * i, dtype=np.uint8)) for i in range(n)]
        return datasets.Dataset.from_dict({"img": images, "label": [i % 2 for i in range(n)]}, features=features)

    datasets.DatasetDict({"train": split(4), "validation": split(2)}).save_to_disk(str(tmp_path / "hf"))
    spec = get_dataset(f"hf:{tmp_path / 'hf'}")
    assert spec.class_names == ("ant", "bee") and spec.input_size == 224  # 96-px images: ImageNet-like
    test = spec.load("test")  # "validation" serves as the test split
    assert len(test) == 2 and test[1][0].shape == (3, 224, 224) and test[1][1] == 1


def test_bench_run_on_an_image_folder_trains_its_teacher_and_writes_its_record(tmp_path):
    from dfkd.benchmark.assembly import resolve_run_config
    from dfkd.benchmark.progress import Reporter
    from dfkd.benchmark.runner import run

    _folder(tmp_path / "pets", per_class=6)
    key = f"imagefolder:{tmp_path / 'pets'}"
    cfg = resolve_run_config(
        method="noise_kd",
        dataset=key,
        sets=[
            "teacher=resnet8",
            "student=resnet8",
            "train_teacher=true",
            "teacher_train.epochs=1",
            "teacher_train.batch_size=6",
            "distill.epochs=1",
            "distill.batch_size=6",
            "images_per_class=2",
            "batch_size=6",
            "diagnose.enabled=false",
        ],
        flags={"output_dir": str(tmp_path / "runs")},
    )
    record = run(cfg, reporter=Reporter(quiet=True))
    assert record.dataset == key and 0 <= record.student_top1 <= 100
    (path,) = (tmp_path / "runs").rglob("record.json")
    assert path.relative_to(tmp_path / "runs").parts[0] == key.replace("/", "__")  # one folder, not a path
    assert (tmp_path / "runs" / f"leaderboard-{key.replace('/', '__')}.csv").is_file()
    assert torch.isfinite(torch.tensor(record.teacher_top1))
