"""Data set specs: registry, transforms, and loading of tiny real-format folders built in tmp_path (offline)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from urllib.error import URLError

import pytest
import torch
from fixtures.datasets_builders import cifar_rows, make_cifar10, make_cifar100, make_imagenet_folder

from dfkd.datasets import get_dataset, list_datasets
from dfkd.errors import DatasetNotFoundError, UnknownNameError, UserError

TENCH, GOLDFISH, WING = "n01440764", "n01443537", "n04592741"


# -- registry ----------------------------------------------------------------------------------------
def test_builtins_are_registered():
    assert list_datasets() == ["cifar10", "cifar100", "digits", "imagenet"]
    assert list_datasets("cifar*") == ["cifar10", "cifar100"]


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean: cifar10"):
        get_dataset("cifr10")


def test_import_and_lookup_are_lazy():
    """`import dfkd.datasets` and looking up specs import neither torchvision, timm nor scikit-learn."""
    check = textwrap.dedent(
        """
        import sys
        import dfkd.datasets
        assert not [m for m in ("torchvision", "timm", "sklearn") if m in sys.modules], "on import"
        for name in dfkd.datasets.list_datasets():
            dfkd.datasets.get_dataset(name).num_classes
        print(",".join(m for m in ("torchvision", "timm", "sklearn") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "digits"])
def test_spec_fields(name):
    spec = get_dataset(name)
    assert spec.name == name
    assert len(spec.class_names) == spec.num_classes == len(set(spec.class_names))
    assert spec.input_size == 32
    d = spec.describe()
    assert d["name"] == name and d["num_classes"] == spec.num_classes and d["input_size"] == 32
    assert d["mean"] == list(spec.mean) and d["default_teacher"] == spec.default_teacher


def test_defaults_and_constants():
    c10, c100, dig, inet = (get_dataset(n) for n in ("cifar10", "cifar100", "digits", "imagenet"))
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c10.std == (0.2023, 0.1994, 0.2010)
    assert c100.mean == (0.5071, 0.4867, 0.4408) and c100.std == (0.2675, 0.2565, 0.2761)
    assert (c10.default_teacher, c10.default_student) == ("resnet34", "resnet18")
    assert (c100.default_teacher, c100.default_student) == ("resnet34", "resnet18")
    assert (dig.default_teacher, dig.default_student) == ("resnet20", "resnet8")
    assert (inet.default_teacher, inet.default_student, inet.input_size) == (
        "torchvision/resnet50",
        "torchvision/resnet18",
        224,
    )
    assert c10.class_names[0] == "airplane" and c10.class_names[-1] == "truck"
    assert list(c100.class_names) == sorted(c100.class_names)  # CIFAR-100's fine names are alphabetical
    assert c100.class_glosses()[1] == "aquarium fish"
    assert dig.class_names[:3] == ("zero", "one", "two")


def test_cifar_spec_matches_torchvision():
    from torchvision.datasets import CIFAR10, CIFAR100

    for spec, tv in ((get_dataset("cifar10"), CIFAR10), (get_dataset("cifar100"), CIFAR100)):
        assert spec.folder == tv.base_folder and spec.url == tv.url and spec.meta_file == tv.meta["filename"]
        assert spec.split_files == (tuple(f for f, _ in tv.train_list), tuple(f for f, _ in tv.test_list))


# -- normalisation and transforms --------------------------------------------------------------------
def test_normalize_roundtrip_and_gradient():
    spec = get_dataset("cifar10")
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    y = spec.normalize(x)
    assert y.dtype == torch.float64 and y.shape == x.shape
    expected = (x[1, 2, 3, 4] - 0.4465) / 0.2010
    assert torch.allclose(y[1, 2, 3, 4], expected)
    assert torch.allclose(spec.denormalize(y), x)
    y.sum().backward()
    assert torch.allclose(x.grad[:, 0], torch.full_like(x.grad[:, 0], 1 / 0.2023))
    assert spec.normalize(torch.rand(3, 4, 4)).shape == (3, 4, 4)  # unbatched too


@pytest.mark.parametrize("name", ["cifar10", "digits"])
def test_small_transforms_accept_pil_tensor_and_other_sizes(name):
    from PIL import Image

    spec = get_dataset(name)
    gray = torch.full((3, 64, 48), 128, dtype=torch.uint8)  # not 32x32: resized first
    for tf in (spec.train_transform(), spec.test_transform()):
        for img in (torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), Image.new("RGB", (32, 32)), gray):
            out = tf(img)
            assert type(out) is torch.Tensor and out.shape == (3, 32, 32) and out.dtype == torch.float32
    out = spec.test_transform()(gray)
    expected = (128 / 255 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    assert torch.allclose(out, expected.view(3, 1, 1).expand(3, 32, 32), atol=1e-5)


def test_transforms_pickle():
    spec = get_dataset("cifar10")
    tf = pickle.loads(pickle.dumps(spec.train_transform()))
    assert tf(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape == (3, 32, 32)


def test_class_index_resolves_indices_names_and_wnids_once_for_every_caller():
    """One resolver for prompt files, ``bench prompts --classes`` and class folders of shifted test sets."""
    c100, imagenet = get_dataset("cifar100"), get_dataset("imagenet")
    assert c100.class_index(47) == c100.class_index(" 47 ") == c100.class_index("maple_tree") == 47
    assert c100.class_index("Maple-Tree") == c100.class_index("maple  tree") == 47  # case, "_", "-", spaces alike
    assert imagenet.class_index(TENCH) == 0 and imagenet.class_index("goldfish") == 1
    with pytest.raises(
        UserError, match=r"^--classes: unknown class 'mapel tree' for cifar100\. Did you mean: maple_tree"
    ):
        c100.class_index("mapel tree", where="--classes")
    with pytest.raises(UserError, match="a class must be a name or an index"):
        c100.class_index(True)
    # default: returned instead of raising (class folders list every unknown one in one error)
    assert c100.class_index("mapel tree", default=None) is None
    assert c100.class_index(100, default=None) is None
    assert imagenet.class_index("crane", default=None) is None  # 134 (bird) and 517 (machine)
    assert get_dataset("digits").class_index(TENCH, default=None) is None  # wnids only where the spec has them


def test_unknown_split():
    with pytest.raises(UserError, match="Unknown split 'dev'"):
        get_dataset("digits").load("dev")


# -- CIFAR -------------------------------------------------------------------------------------------
def test_cifar10_loads_torchvision_format(tmp_path):
    make_cifar10(tmp_path, per_batch=4, test=6)
    spec = get_dataset("cifar10")
    train = spec.load("train", tmp_path, download=False)
    test = spec.load("test", tmp_path, download=False)
    assert len(train) == 20 and len(test) == 6
    assert [test[i][1] for i in range(6)] == [0, 1, 2, 3, 4, 5]
    x, y = test[2]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)

    # one pixel by hand: row layout is 1024 R | 1024 G | 1024 B, each row-major 32x32
    row = cifar_rows(6, seed=0)[2]
    for c, h, w in ((0, 0, 0), (1, 5, 17), (2, 31, 3)):
        v = int(row[c * 1024 + h * 32 + w])
        assert x[c, h, w].item() == pytest.approx((v / 255 - spec.mean[c]) / spec.std[c], abs=1e-5)

    raw = spec.load("test", tmp_path, transform=None, download=False)
    assert raw[2][0].size == (32, 32)  # PIL, as torchvision gives it
    assert pickle.loads(pickle.dumps(train)).targets == train.targets  # DataLoader workers can receive it


def test_cifar_train_transform_is_random(tmp_path):
    make_cifar10(tmp_path)
    train = get_dataset("cifar10").load("train", tmp_path, download=False)
    torch.manual_seed(0)
    draws = [train[0][0] for _ in range(4)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_cifar100_loads(tmp_path):
    spec = get_dataset("cifar100")
    make_cifar100(tmp_path, spec.class_names, train=8, test=5)
    train = spec.load("train", tmp_path, download=False)
    test = spec.load("test", str(tmp_path), download=False)
    assert len(train) == 8 and len(test) == 5
    assert [train[i][1] for i in range(8)] == [(7 * i) % 100 for i in range(8)]
    assert test[4][0].shape == (3, 32, 32)


def test_cifar_wrong_label_names(tmp_path):
    make_cifar10(tmp_path, names=[f"c{i}" for i in range(10)])
    with pytest.raises(UserError, match="label names"):
        get_dataset("cifar10").load("test", tmp_path, download=False)


def test_missing_cifar_is_one_line(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        get_dataset("cifar10").load("train", tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "cifar-10-batches-py") in msg and "cifar-10-python.tar.gz" in msg
    assert "--data-root" in msg and "$DFKD_DATA" in msg


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="download failed") as err:
        get_dataset("cifar100").load("test", tmp_path, download=True)
    assert "\n" not in str(err.value) and str(tmp_path / "cifar-100-python") in str(err.value)


def test_default_root_is_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DFKD_DATA", str(tmp_path))
    make_cifar10(tmp_path)
    assert len(get_dataset("cifar10").load("test", download=False)) == 6


# -- ImageNet ----------------------------------------------------------------------------------------
def test_imagenet_names_from_timm():
    spec = get_dataset("imagenet")
    assert len(spec.class_names) == 1000 and "tench" in spec.class_names[0]
    assert spec.wnids[:2] == (TENCH, GOLDFISH) and list(spec.wnids) == sorted(spec.wnids)
    assert "goldfish" in spec.class_names[1]
    assert spec.class_glosses()[0].startswith("tench") and ":" in spec.class_glosses()[0]
    assert spec.class_glosses(detailed=False)[0] == "tench, Tinca tinca"
    assert spec.describe()["classes"].startswith("tench, goldfish")


def test_imagenet_val_uses_global_labels(tmp_path):
    spec = get_dataset("imagenet")
    make_imagenet_folder(tmp_path, [TENCH, GOLDFISH, WING], per_class=2)
    val = spec.load("test", tmp_path)
    wing = spec.wnids.index(WING)
    assert wing > 900
    assert sorted(val.targets) == [0, 0, 1, 1, wing, wing]
    for i in range(len(val)):
        x, y = val[i]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        assert val.classes[y] == spec.wnids[y]

    # a folder with only some classes keeps the global labels (ImageFolder alone would say 0, 1)
    partial = tmp_path / "partial"
    make_imagenet_folder(partial, [GOLDFISH, WING], per_class=1)
    assert sorted(spec.load("test", partial).targets) == [1, wing]

    # root may also be the folder that holds val/ directly; the train transform crops to 224 too
    train_root = tmp_path / "direct"
    make_imagenet_folder(train_root, [WING], split="train", per_class=1)
    train = spec.load("train", train_root / "imagenet")
    assert train.targets == [wing] and train[0][0].shape == (3, 224, 224)


def test_imagenet_bogus_wnid(tmp_path):
    make_imagenet_folder(tmp_path, [TENCH, "n99999999"], per_class=1)
    with pytest.raises(UserError, match=r"not ImageNet-1k WordNet ids.*n99999999") as err:
        get_dataset("imagenet").load("test", tmp_path)
    assert "\n" not in str(err.value)


def test_imagenet_missing_is_one_line(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        get_dataset("imagenet").load("test", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "imagenet" / "val") in msg and "n01440764" in msg
    assert "--data-root" in msg


# -- digits ------------------------------------------------------------------------------------------
def test_digits_split_and_raw_items():
    spec = get_dataset("digits")
    train = spec.load("train", transform=None)
    test = spec.load("test", transform=None)
    assert (len(train), len(test)) == (1347, 450)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and isinstance(y, int)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # gray replicated to RGB
    assert int(train.data.max()) == 255 and int(train.data.min()) == 0
    for ds, lo, hi in ((train, 131, 137), (test, 43, 46)):  # stratified: every class close to 1/10
        counts = torch.bincount(torch.tensor(ds.targets), minlength=10)
        assert int(counts.min()) >= lo and int(counts.max()) <= hi


def test_digits_transformed_items():
    spec = get_dataset("digits")
    x, _ = spec.load("test")[0]
    raw, _ = spec.load("test", transform=None)[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(spec.denormalize(x), raw.float() / 255, atol=1e-5)
    torch.manual_seed(0)
    assert spec.load("train")[5][0].shape == (3, 32, 32)


def test_digits_are_deterministic():
    from dfkd.datasets import digits

    a = digits.DIGITS.load("train", transform=None)
    digits._digits_splits.cache_clear()
    b = digits.DIGITS.load("train", transform=None)
    assert a.data is not b.data
    assert torch.equal(a.data, b.data) and a.targets == b.targets


def test_digits_stats_match_constants():
    from dfkd.datasets.digits import DIGITS, _channel_stats

    mean, std = _channel_stats()
    assert mean == pytest.approx(DIGITS.mean, abs=1e-3)
    assert std == pytest.approx(DIGITS.std, abs=1e-3)


class _Payload:
    """Unpickling this calls open(marker, "w"): creates a file if the loader runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("victim", ["data_batch_1", "test_batch", "batches.meta"])
def test_a_malicious_cifar_batch_is_refused_and_never_run(tmp_path, victim):
    import pickle

    make_cifar10(tmp_path, per_batch=2, test=2)
    marker = tmp_path / "pwned"
    (tmp_path / "cifar-10-batches-py" / victim).write_bytes(pickle.dumps({"data": _Payload(marker)}, protocol=2))
    split = "train" if victim == "data_batch_1" else "test"
    with pytest.raises(UserError, match=r"is not a CIFAR python batch: it references (io|builtins)\.open") as info:
        get_dataset("cifar10").load(split, tmp_path, download=False)
    assert not marker.exists(), "the payload ran"
    assert "\n" not in str(info.value)
