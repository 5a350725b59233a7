"""Shifted test sets and domain-generalisation metrics on tiny folders built in tmp_path (offline, CPU).

ImageNet-R labels are global wnid indices and the protocol's argmax runs over its 200 classes;
ImageNet-V2 index folders label by index; CIFAR-10-C severities pick the right rows; the metric keys
are the documented ones; an always-right model scores 100; missing data is a one-line error.
"""

from __future__ import annotations

import pickle
from importlib.resources import files

import numpy as np
import pytest
import torch
from fixtures.dg_builders import STEP, FixedLogits, OracleModel, decode, make_cifar_c, make_class_folders
from torch.utils.data import DataLoader

from dfkd.benchmark.dg import evaluate_shifted, load_dg_sets
from dfkd.datasets import get_dataset
from dfkd.datasets.shifted import ShiftedSet, load_shifted, parse_key
from dfkd.errors import DatasetNotFoundError, UserError
from dfkd.metrics.predict import predict

# ImageNet-1k wnids (global index) that are in ImageNet-R's 200 classes, and one that is not
GOLDFISH, WHITE_SHARK, HAMMERHEAD, TENCH = "n01443537", "n01484850", "n01494475", "n01440764"
R_FOLDERS = {GOLDFISH: 1, WHITE_SHARK: 2, HAMMERHEAD: 4}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def imagenet():
    return get_dataset("imagenet")


@pytest.fixture(scope="module")
def cifar10():
    return get_dataset("cifar10")


def _targets(s: ShiftedSet) -> list[int]:
    return [int(y) for _, y in s.dataset]


# -- keys -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, kind, name, severity",
    [
        ("imagenet-r", "imagenet-r", "imagenet-r", None),
        ("ImageNet_Sketch", "imagenet-sketch", "imagenet_sketch", None),
        ("imagenet-v2-matched-frequency", "imagenet-v2", "imagenet-v2-matched-frequency", None),
        ("imagenetv2", "imagenet-v2", "imagenetv2", None),
        ("cifar10-c", "cifar10-c", "cifar10-c", None),
        ("cifar100-c", "cifar100-c", "cifar100-c", None),
        ("cifar10-c@5", "cifar10-c", "cifar10-c-s5", 5),
        ("folder:my-photos", "folder", "my-photos", None),
        ("folder-c:digits-c@2", "folder-c", "digits-c-s2", 2),
        ("imagenet-a", "imagenet-a", "imagenet-a", None),
    ],
)
def test_keys_name_kind_and_severity(key, kind, name, severity):
    parsed = parse_key(key)
    assert (parsed.kind, parsed.name, parsed.severity) == (kind, name, severity)


@pytest.mark.parametrize(
    "key, message",
    [
        ("imagenet-rr:x", "Did you mean: imagenet-r"),
        ("my-photos", "folder:my-photos"),
        ("folder:my photos", "letters, digits"),
        ("imagenet-r@3", "only to corruption sets"),
        ("cifar10-c@9", "severity must be 1..5"),
    ],
)
def test_bad_keys_are_one_line_errors(key, message):
    with pytest.raises(UserError, match=message) as e:
        parse_key(key)
    assert "\n" not in str(e.value)


# -- ImageNet-R / -A: global labels, 200-class subset ----------------------------------------------------
def test_imagenet_r_labels_are_global_wnid_indices_and_subset_is_timms(tmp_path, imagenet):
    make_class_folders(tmp_path / "r", R_FOLDERS)
    sets = load_shifted("imagenet-r", tmp_path / "r", imagenet)
    assert list(sets) == ["imagenet-r"]
    s = sets["imagenet-r"]
    assert _targets(s) == [1, 1, 2, 2, 4, 4]
    x, _ = s.dataset[1]  # a 90x120 image → (3, 224, 224)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    timm_indices = sorted(int(v) for v in (files("timm.data") / "_info" / "imagenet_r_indices.txt").read_text().split())
    assert s.class_subset == timm_indices and len(s.class_subset) == 200
    assert {1, 2, 4} <= set(s.class_subset) and 0 not in s.class_subset
    assert s.severities is None and s.corruption is None


def test_imagenet_r_rejects_wnids_outside_its_200(tmp_path, imagenet):
    make_class_folders(tmp_path / "r", {**R_FOLDERS, TENCH: 0}, per_class=1)
    with pytest.raises(UserError, match="outside ImageNet-R's 200"):
        load_shifted("imagenet-r", tmp_path / "r", imagenet)


def test_subset_restriction_takes_the_best_class_inside_the_subset(tmp_path, imagenet):
    make_class_folders(tmp_path / "r", R_FOLDERS)
    s = load_shifted("imagenet-r", tmp_path / "r", imagenet)["imagenet-r"]
    model = FixedLogits(1000, {0: 10.0, 7: 8.0, 4: 5.0, 1: 3.0, 2: 1.0})  # 0 and 7 are not ImageNet-R classes
    loader = DataLoader(s.dataset, batch_size=4)
    found = predict(model, loader, CPU)
    assert found.pred.tolist() == [0] * 6 and found.targets.tolist() == [1, 1, 2, 2, 4, 4]
    found = predict(model, loader, CPU, class_subset=s.class_subset)
    assert found.pred.tolist() == [4] * 6  # the best in-subset class, as a global label
    metrics = evaluate_shifted(model, imagenet, {"imagenet-r": str(tmp_path / "r")}, CPU, batch_size=4)
    assert metrics == {"dg/imagenet-r/top1": pytest.approx(100 * 2 / 6)}


def test_subset_falls_back_to_the_classes_present_without_timms_file(tmp_path, imagenet, monkeypatch):
    import importlib.resources

    def no_file(package):
        raise FileNotFoundError(package)

    monkeypatch.setattr(importlib.resources, "files", no_file)
    make_class_folders(tmp_path / "r", R_FOLDERS, per_class=1)
    assert load_shifted("imagenet-r", tmp_path / "r", imagenet)["imagenet-r"].class_subset == [1, 2, 4]


def test_imagenet_a_uses_its_own_subset(tmp_path, imagenet):
    a_wnids = (files("timm.data") / "_info" / "imagenet_a_synsets.txt").read_text().split()
    folders = {w: imagenet.wnids.index(w) for w in a_wnids[:2]}
    make_class_folders(tmp_path / "a", {w: 0 for w in folders}, per_class=1)
    s = load_shifted("imagenet-a", tmp_path / "a", imagenet)["imagenet-a"]
    assert _targets(s) == sorted(folders.values())
    assert s.class_subset == sorted(imagenet.wnids.index(w) for w in a_wnids)


# -- ImageNet-V2 / -Sketch / folder ------------------------------------------------------------------
def test_imagenet_v2_index_folders_label_by_index(tmp_path, imagenet):
    make_class_folders(tmp_path / "v2" / "imagenetv2-matched-frequency-format-val", {"0": 0, "1": 1, "2": 2})
    s = load_shifted("imagenet-v2", tmp_path / "v2", imagenet)["imagenet-v2"]  # descends into the extracted folder
    assert _targets(s) == [0, 0, 1, 1, 2, 2]
    assert s.class_subset is None


def test_imagenet_sketch_wnid_folders(tmp_path, imagenet):
    make_class_folders(tmp_path / "sketch", {TENCH: 0, "n04592741": 0}, per_class=1)
    s = load_shifted("imagenet-sketch", tmp_path / "sketch", imagenet)["imagenet-sketch"]
    assert _targets(s) == [0, imagenet.wnids.index("n04592741")] and s.class_subset is None


def test_generic_folder_takes_class_names_and_indices(tmp_path, cifar10):
    make_class_folders(tmp_path / "photos", {"airplane": 0, "Automobile": 1, "9": 9}, per_class=1)
    s = load_shifted("folder:photos", tmp_path / "photos", cifar10)["photos"]
    assert sorted(_targets(s)) == [0, 1, 9]
    make_class_folders(tmp_path / "bad", {"airplane": 0, "spaceship": 0}, per_class=1)
    with pytest.raises(UserError, match="'spaceship'"):
        load_shifted("folder:bad", tmp_path / "bad", cifar10)


# -- CIFAR-10-C ----------------------------------------------------------------------------------------
def test_cifar_c_one_set_per_corruption_all_severities(tmp_path, cifar10):
    n = 4
    make_cifar_c(tmp_path / "c", ["gaussian_noise", "fog"], n=n)
    sets = load_shifted("cifar10-c", tmp_path / "c", cifar10)
    assert list(sets) == ["cifar10-c/fog", "cifar10-c/gaussian_noise"]
    fog = sets["cifar10-c/fog"]
    assert fog.corruption == "fog" and fog.group == "cifar10-c" and fog.class_subset is None
    assert len(fog.dataset) == 5 * n and fog.severities == [s for s in range(1, 6) for _ in range(n)]
    x, y = fog.dataset[7]
    assert x.shape == (3, 32, 32) and decode(x, cifar10).tolist() == [STEP * y, 7, 1]  # fog is corruption 1
    assert _targets(fog) == [i % 10 for i in range(n)] * 5


@pytest.mark.parametrize("how", ["kwarg", "key"])
def test_cifar_c_severity_picks_rows_n_to_2n(tmp_path, cifar10, how):
    n = 4
    make_cifar_c(tmp_path / "c", ["gaussian_noise", "fog"], n=n, labels=[3, 1, 4, 1], repeat=False)
    if how == "kwarg":
        sets = load_shifted("cifar10-c", tmp_path / "c", cifar10, severity=2)
    else:
        sets = load_shifted("cifar10-c@2", tmp_path / "c", cifar10)
    assert list(sets) == ["cifar10-c-s2/fog", "cifar10-c-s2/gaussian_noise"]
    s = sets["cifar10-c-s2/gaussian_noise"]
    assert s.severities == [2] * n
    rows = [decode(x, cifar10)[1].item() for x, _ in s.dataset]
    assert rows == list(range(n, 2 * n))
    assert _targets(s) == [3, 1, 4, 1]


def test_cifar_c_corruption_folders_with_and_without_severity_levels(tmp_path, cifar10):
    make_class_folders(tmp_path / "c" / "fog", {"0": 0, "cat": 3}, per_class=1)
    for level in (1, 2):
        make_class_folders(tmp_path / "c" / "snow" / str(level), {"dog": 5}, per_class=level)
    sets = load_shifted("cifar10-c", tmp_path / "c", cifar10)
    assert sorted(_targets(sets["cifar10-c/fog"])) == [0, 3] and sets["cifar10-c/fog"].severities is None
    snow = sets["cifar10-c/snow"]
    assert _targets(snow) == [5, 5, 5] and snow.severities == [1, 2, 2]
    with pytest.raises(UserError, match="no severity folders"):
        load_shifted("cifar10-c@2", tmp_path / "c", cifar10)  # fog has no severity levels
    (tmp_path / "c" / "fog").rename(tmp_path / "fog")
    snow2 = load_shifted("cifar10-c", tmp_path / "c", cifar10, severity=2)["cifar10-c-s2/snow"]
    assert _targets(snow2) == [5, 5] and snow2.severities == [2, 2]


def test_npy_dataset_pickles_without_its_array(tmp_path, cifar10):
    make_cifar_c(tmp_path / "c", ["fog"], n=200)
    ds = load_shifted("cifar10-c", tmp_path / "c", cifar10)["cifar10-c/fog"].dataset
    ds[0]  # maps the file
    assert len(pickle.dumps(ds)) < 200 * 5 * 32 * 32 * 3 / 10


# -- evaluate_shifted ----------------------------------------------------------------------------------
def test_evaluate_shifted_keys_and_an_always_right_model(tmp_path, imagenet, cifar10):
    make_class_folders(tmp_path / "r", R_FOLDERS)
    make_class_folders(tmp_path / "v2", {"0": 0, "1": 1, "2": 2}, per_class=1)
    metrics = evaluate_shifted(
        OracleModel(imagenet), imagenet, {"imagenet-r": tmp_path / "r", "ImageNet-V2": str(tmp_path / "v2")}, CPU
    )
    assert metrics == {"dg/imagenet-r/top1": 100.0, "dg/imagenet-v2/top1": 100.0}

    make_cifar_c(tmp_path / "c", ["gaussian_noise", "fog", "saturate"], n=4)
    metrics = evaluate_shifted(OracleModel(cifar10), cifar10, {"cifar10-c": tmp_path / "c"}, CPU, batch_size=7)
    expected = {"dg/cifar10-c/top1"} | {f"dg/cifar10-c/{c}/top1" for c in ("gaussian_noise", "fog", "saturate")}
    expected |= {f"dg/cifar10-c/s{k}/top1" for k in range(1, 6)}
    assert set(metrics) == expected and all(v == 100.0 for v in metrics.values())


def test_evaluate_shifted_means_and_ranges(tmp_path, cifar10):
    make_cifar_c(tmp_path / "c", ["gaussian_noise", "fog", "saturate"], n=4)  # blue = 0, 1, 2
    dg = {"cifar10-c": str(tmp_path / "c"), "cifar10-c@5": str(tmp_path / "c")}
    metrics = evaluate_shifted(OracleModel(cifar10, wrong_when_blue=1), cifar10, dg, CPU)
    assert metrics["dg/cifar10-c/fog/top1"] == 0.0 and metrics["dg/cifar10-c/gaussian_noise/top1"] == 100.0
    assert metrics["dg/cifar10-c/top1"] == 50.0  # saturate (held-out extra) is not in the mean
    assert metrics["dg/cifar10-c/s3/top1"] == 50.0
    assert metrics["dg/cifar10-c-s5/top1"] == 50.0 and "dg/cifar10-c-s5/s5/top1" not in metrics
    assert metrics["dg/cifar10-c-s5/saturate/top1"] == 100.0

    torch.manual_seed(0)
    random_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    metrics = evaluate_shifted(random_model, cifar10, dg, CPU, batch_size=5)
    assert all(0.0 <= v <= 100.0 for v in metrics.values()) and len(metrics) == 1 + 3 + 5 + 1 + 3


def test_evaluate_shifted_rejects_colliding_names(tmp_path, cifar10):
    with pytest.raises(UserError, match="both give the columns dg/photos"):
        load_dg_sets(cifar10, {"folder:photos": tmp_path, "folder:Photos": tmp_path})


# -- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, dataset, source",
    [
        ("imagenet-r", "imagenet", "hendrycks/imagenet-r"),
        ("imagenet-a", "imagenet", "natural-adv-examples"),
        ("imagenet-sketch", "imagenet", "ImageNet-Sketch"),
        ("imagenet-v2", "imagenet", "ImageNetV2"),
        ("cifar10-c", "cifar10", "Zenodo"),
        ("cifar100-c", "cifar100", "Zenodo"),
        ("folder:x", "digits", "<class>"),
        ("folder-c:x", "digits", "<corruption>"),
    ],
)
def test_missing_path_is_a_one_line_error_with_layout_and_source(tmp_path, key, dataset, source):
    with pytest.raises(DatasetNotFoundError, match="not found at") as e:
        load_shifted(key, tmp_path / "nowhere", get_dataset(dataset))
    message = str(e.value)
    assert "\n" not in message and "expected" in message and source in message
    assert str(tmp_path / "nowhere") in message


def test_empty_folder_and_wrong_spec_are_one_line_errors(tmp_path, imagenet, cifar10):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no corruption files"):
        load_shifted("cifar10-c", tmp_path / "empty", cifar10)
    with pytest.raises(UserError, match="needs an ImageNet-1k student"):
        load_shifted("imagenet-r", tmp_path, cifar10)
    with pytest.raises(UserError, match="holds CIFAR-10 classes"):
        load_shifted("cifar10-c", tmp_path, get_dataset("digits"))
    np.save(tmp_path / "bad.npy", np.zeros((7, 32, 32, 3), dtype=np.uint8))
    np.save(tmp_path / "labels.npy", np.zeros(7, dtype=np.int64))
    with pytest.raises(UserError, match=r"expected \(5\*n, H, W, 3\)"):
        load_shifted("cifar10-c", tmp_path, cifar10)
    make_cifar_c(tmp_path / "c100", ["fog"], n=2, labels=[5, 42])
    with pytest.raises(UserError, match=r"outside cifar10's 0\.\.9"):
        load_shifted("cifar10-c", tmp_path / "c100", cifar10)
