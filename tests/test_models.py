"""Models: the spec's key digests / counts / BN tables, features, checkpoints, zoo wrappers.

Spec: /work/shared/spec/cifar-archs.md (§2 key digests and parameter counts, §3 BN table).
Nothing is downloaded: zoo models are built with ``pretrained=False`` and fetch failures are faked.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from dfkd.errors import CheckpointError, UnknownNameError, UserError
from dfkd.models import create_model, list_models
from dfkd.models.checkpoint import key_digest, load_weights, read_state_dict, save_weights

# name: (#keys, digest nc=10, digest nc=100, params nc=10, params nc=100)  — spec §2
SPEC_KEYS = {
    "resnet18": (122, "15e99edfd6f789c7", "051a1cb098adf6b3", 11_173_962, 11_220_132),
    "resnet34": (218, "16658fd839bd35b9", "19a5619e9d32926a", 21_282_122, 21_328_292),
    "wrn16_1": (82, "90ca02d6f00f269b", "b4de1d786e12f08a", 175_066, 180_916),
    "wrn16_2": (83, "36963aae9908a7b0", "2266f04469bf5dd9", 691_674, 703_284),
    "wrn40_1": (226, "ac02a671cfee9e22", "01abc5646d8c075c", 563_930, 569_780),
    "wrn40_2": (227, "0b55f662b02a18cd", "595ec0db20d1ca1c", 2_243_546, 2_255_156),
    "vgg8": (37, "7d24f94177aba1f1", "7f85b8479109415f", 3_918_858, 3_965_028),
    "vgg11": (58, "3d5eec801e23ef0c", "6053995f63325762", 9_231_114, 9_277_284),
}
# name: (#BatchNorm2d, sum of BN channels, feature dim, head attribute)  — spec §3 and §1
SPEC_BN = {
    "resnet18": (20, 4800, 512, "linear"),
    "resnet34": (36, 8512, 512, "linear"),
    "wrn16_1": (13, 464, 64, "fc"),
    "wrn16_2": (13, 912, 128, "fc"),
    "wrn40_1": (37, 1360, 64, "fc"),
    "wrn40_2": (37, 2704, 128, "fc"),
    "vgg8": (5, 1472, 512, "classifier"),
    "vgg11": (8, 2752, 512, "classifier"),
}
ALL_CIFAR = [*SPEC_KEYS, "resnet8", "resnet20"]


def _meta(name: str, num_classes: int) -> nn.Module:
    """Structure-only build (no memory, no init cost)."""
    with torch.device("meta"):
        return create_model(name, num_classes)


# ------------------------------------------------------------------------------------------------
# structure against the spec
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", list(SPEC_KEYS))
def test_keys_digest_and_params_match_spec(name, num_classes):
    n_keys, d10, d100, p10, p100 = SPEC_KEYS[name]
    model = _meta(name, num_classes)
    sd = model.state_dict()
    assert len(sd) == n_keys
    assert key_digest(sd) == (d10 if num_classes == 10 else d100)
    assert sum(p.numel() for p in model.parameters()) == (p10 if num_classes == 10 else p100)


@pytest.mark.parametrize("name", list(SPEC_BN))
def test_bn_table_and_head_name(name):
    n_bn, channels, feat_dim, head = SPEC_BN[name]
    model = _meta(name, 10)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == n_bn
    assert sum(b.num_features for b in bns) == channels
    assert all(b.eps == 1e-5 and b.momentum == 0.1 and b.affine and b.track_running_stats for b in bns)
    linear = getattr(model, head)
    assert isinstance(linear, nn.Linear) and linear.in_features == feat_dim and linear.bias is not None


def test_registered_names():
    assert set(ALL_CIFAR) <= set(list_models())
    assert list_models("wrn*") == ["wrn16_1", "wrn16_2", "wrn40_1", "wrn40_2"]


def test_wrn_shortcut_structure():
    """convShortcut exactly where in != out; none in wrn16_1/wrn40_1 block1 (16 → 16), spec §1b."""
    for name, expected in [
        ("wrn16_1", {"block2.layer.0": (32, 16), "block3.layer.0": (64, 32)}),
        ("wrn40_1", {"block2.layer.0": (32, 16), "block3.layer.0": (64, 32)}),
        ("wrn16_2", {"block1.layer.0": (32, 16), "block2.layer.0": (64, 32), "block3.layer.0": (128, 64)}),
        ("wrn40_2", {"block1.layer.0": (32, 16), "block2.layer.0": (64, 32), "block3.layer.0": (128, 64)}),
    ]:
        sd = _meta(name, 10).state_dict()
        found = {
            k.removesuffix(".convShortcut.weight"): tuple(v.shape[:2]) for k, v in sd.items() if "convShortcut" in k
        }
        assert found == expected, name
        assert all(sd[f"{b}.convShortcut.weight"].shape[2:] == (1, 1) for b in expected)
    # no BN right after the stem: the first BN in modules() order is block1.layer.0.bn1 (16 ch)
    model = _meta("wrn16_2", 10)
    bn_names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn_names[0] == "block1.layer.0.bn1" and bn_names[-1] == "bn1"


def test_wrn_shortcut_reads_activated_input():
    """For in != out the shortcut sees relu(bn1(x)), for in == out the raw x (spec §1b)."""
    torch.manual_seed(0)
    block = create_model("wrn16_2", 10).block1.layer[0].eval()  # 16 → 32, convShortcut
    with torch.no_grad():
        block.bn1.running_mean.normal_()  # make relu(bn1(x)) clearly different from x
        x = torch.randn(2, 16, 8, 8)
        o = torch.relu(block.bn1(x))
        main = block.conv2(torch.relu(block.bn2(block.conv1(o))))
        assert torch.allclose(block(x), main + block.convShortcut(o), atol=1e-6)
        identity_block = create_model("wrn16_2", 10).block1.layer[1].eval()  # 32 → 32
        y = torch.randn(2, 32, 8, 8)
        o = torch.relu(identity_block.bn1(y))
        main = identity_block.conv2(torch.relu(identity_block.bn2(identity_block.conv1(o))))
        assert torch.allclose(identity_block(y), main + y, atol=1e-6)


def test_resnet_shortcuts_only_where_spec_says():
    sd = _meta("resnet34", 10).state_dict()
    assert {k.split(".shortcut")[0] for k in sd if ".shortcut." in k} == {"layer2.0", "layer3.0", "layer4.0"}
    assert not any(k.startswith(("maxpool", "fc.")) for k in sd)


# ------------------------------------------------------------------------------------------------
# forward / features
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_CIFAR)
def test_forward_and_features(name):
    torch.manual_seed(0)
    model = create_model(name, 7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        logits2, feats = model(x, return_features=True)
    expected_dim = SPEC_BN[name][2] if name in SPEC_BN else 64
    assert logits.shape == (2, 7) and feats.shape == (2, expected_dim)
    assert torch.equal(logits, logits2)
    assert (feats >= 0).all()  # taken after ReLU and average pooling


def test_vgg_pool3_only_at_64px():
    torch.manual_seed(0)
    model = create_model("vgg11", 10).eval()
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = [
        getattr(model, b).register_forward_hook(lambda m, i, o, b=b: sizes.__setitem__(b, o.shape[2:]))
        for b in ("block3", "block4")
    ]
    calls = []
    hooks.append(model.pool3.register_forward_hook(lambda *a: calls.append(1)))
    with torch.no_grad():
        out32 = model(torch.randn(2, 3, 32, 32))
        assert not calls and sizes == {"block3": (4, 4), "block4": (4, 4)}
        out64, feats64 = model(torch.randn(2, 3, 64, 64), return_features=True)
        assert len(calls) == 1 and sizes == {"block3": (8, 8), "block4": (4, 4)}
    for h in hooks:
        h.remove()
    assert out32.shape == out64.shape == (2, 10) and feats64.shape == (2, 512)


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["wrn16_2", "resnet8"])
def test_strict_round_trip_with_module_prefix(tmp_path, name):
    torch.manual_seed(0)
    src = create_model(name, 10)
    with torch.no_grad():  # random BN statistics too, so eval mode depends on them
        for m in src.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    assert set(read_state_dict(path)) == set(src.state_dict())
    dst = create_model(name, 10)
    load_weights(dst, path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(src.eval()(x), dst.eval()(x))


def test_save_weights_atomic_and_readable(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet8", 10)
    path = save_weights(model, tmp_path / "a" / "b" / "t.pth", arch="resnet8", top1=91.5, recipe={"milestones": [1, 2]})
    obj = torch.load(path, map_location="cpu", weights_only=True)
    assert obj["arch"] == "resnet8" and obj["recipe"] == {"milestones": [1, 2]}
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    assert key_digest(read_state_dict(path)) == key_digest(model)
    with pytest.raises(TypeError, match="weights_only"):
        save_weights(model, tmp_path / "x.pth", bad=object())


def test_read_state_dict_formats_and_prefixes(tmp_path):
    sd = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    for i, obj in enumerate([sd, {"model": sd}, {"state_dict": {f"_orig_mod.module.{k}": v for k, v in sd.items()}}]):
        torch.save(obj, tmp_path / f"{i}.pth")
        assert set(read_state_dict(tmp_path / f"{i}.pth")) == set(sd)


def test_read_state_dict_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"does not exist") as info:
        read_state_dict(tmp_path / "missing.pth")
    assert "\n" not in str(info.value) and "missing.pth" in str(info.value)
    junk = tmp_path / "junk.pth"
    junk.write_text("definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as info:
        read_state_dict(junk)
    assert "\n" not in str(info.value)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_state_dict(tmp_path / "empty.pth")
    np = pytest.importorskip("numpy")
    torch.save({"state_dict": {"w": torch.ones(1)}, "best_acc1": np.float64(95.7)}, tmp_path / "np.pth")
    with pytest.raises(CheckpointError, match=r"holds Python objects \(numpy.*not loaded or executed") as info:
        read_state_dict(tmp_path / "np.pth")
    assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)
    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        read_state_dict(tmp_path / "nostate.pth")


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_checkpoint_is_refused_unexecuted(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"holds Python objects \((io|builtins)\.open\)") as info:
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists() and "\n" not in str(info.value) and "weights_only=False" not in str(info.value)


def test_head_mismatch_names_fc_and_class_count(tmp_path):
    path = tmp_path / "cifar100_wrn40_2.pth"
    save_weights(create_model("wrn40_2", 100), path)
    with pytest.raises(CheckpointError) as info:
        load_weights(create_model("wrn40_2", 10), path)
    msg = str(info.value)
    assert "fc.weight: checkpoint (100, 128) vs model (10, 128)" in msg
    assert "fc.bias: checkpoint (100,) vs model (10,)" in msg
    assert "the checkpoint has 100 classes, the model 10" in msg and "--dataset" in msg
    assert len(msg.splitlines()) <= 12
    with pytest.raises(CheckpointError):  # shape mismatches raise even when not strict
        load_weights(create_model("wrn40_2", 10), path, strict=False)


def test_wrong_architecture_names_missing_keys_and_the_match():
    torch.manual_seed(0)
    with pytest.raises(CheckpointError) as info:
        load_weights(_meta("resnet34", 10), _meta("resnet18", 10).state_dict(), source="r18.pth")
    msg = str(info.value)
    assert "r18.pth" in msg and "missing keys: layer1.2.conv1.weight" in msg
    assert "(+" in msg  # more than 5 missing keys: the rest is counted, not listed
    assert "'resnet18'" in msg  # the key digest identifies the checkpoint's architecture
    assert len(msg.splitlines()) <= 12


def test_non_strict_tolerates_missing_and_num_batches_tracked():
    torch.manual_seed(0)
    src = create_model("resnet8", 10)
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_weights(create_model("resnet8", 10), sd)  # old checkpoints without num_batches_tracked
    partial = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    result = load_weights(create_model("resnet8", 10), partial, strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"}


# ------------------------------------------------------------------------------------------------
# factory, registry, laziness
# ------------------------------------------------------------------------------------------------
def test_unknown_name_suggests_and_mentions_zoos():
    with pytest.raises(UnknownNameError) as info:
        create_model("wrn40-2", 10)
    msg = str(info.value)
    assert "Did you mean: wrn40_2" in msg and "timm/" in msg and "torchvision/" in msg and "\n" not in msg


def test_cifar_models_have_no_pretrained_weights():
    with pytest.raises(UserError, match="no built-in pretrained weights"):
        create_model("resnet18", 10, pretrained=True)


def test_import_is_lazy():
    code = textwrap.dedent(
        """
        import sys
        import dfkd.models
        dfkd.models.list_models()
        print(",".join(m for m in ("timm", "torchvision", "dfkd.models.cifar", "dfkd.models.zoo") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ------------------------------------------------------------------------------------------------
# zoo models (pretrained=False only; nothing is downloaded)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zoo_models():
    torch.manual_seed(0)
    return {name: create_model(name, 10).eval() for name in ("timm/resnet18", "torchvision/resnet18")}


@pytest.mark.parametrize("name", ["timm/resnet18", "torchvision/resnet18"])
def test_zoo_forward_features_and_keys(zoo_models, name):
    model = zoo_models[name]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        logits2, feats = model(x, return_features=True)
    assert logits.shape == (2, 10) and feats.shape == (2, 512)
    assert torch.equal(logits, logits2)
    if name.startswith("timm/"):
        import timm

        upstream = timm.create_model("resnet18", num_classes=10)
    else:
        import torchvision

        upstream = torchvision.models.get_model("resnet18", num_classes=10)
    assert list(model.state_dict()) == list(upstream.state_dict())  # same keys, same order, no prefix
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in upstream.named_parameters()]
    assert isinstance(model, type(upstream))
    model.load_state_dict(upstream.state_dict())  # upstream checkpoints load as they are
    clone = pickle.loads(pickle.dumps(model))
    with torch.no_grad():
        assert torch.equal(clone(x, return_features=True)[1], model(x, return_features=True)[1])


def test_zoo_unknown_names():
    with pytest.raises(UnknownNameError, match=r"Did you mean: timm/resnet18"):
        create_model("timm/resnet18x", 10)
    with pytest.raises(UnknownNameError, match=r"Did you mean: torchvision/resnet18"):
        create_model("torchvision/resnet18x", 10)


def test_zoo_fetch_failure_is_one_line_user_error(monkeypatch):
    import timm
    import torchvision.models._api as tv_api

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match="torchvision keeps them in") as info:
        create_model("torchvision/resnet18", 1000, pretrained=True)
    assert "\n" not in str(info.value) and "resnet18-" in str(info.value)  # names the weights file

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(UserError, match="Hugging Face cache") as info:
        create_model("timm/resnet18", 10, pretrained=True)
    assert "\n" not in str(info.value)


def test_torchvision_pretrained_with_other_class_count_gets_fresh_head(monkeypatch):
    """Weights with 1000 classes load into the backbone; the last Linear is replaced (faked fetch)."""
    import torchvision
    import torchvision.models._api as tv_api

    torch.manual_seed(0)
    reference = torchvision.models.get_model("resnet18").state_dict()  # stands in for the fetched file
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda *a, **k: reference)
    model = create_model("torchvision/resnet18", 10, pretrained=True)
    assert model.fc.out_features == 10 and torch.equal(model.conv1.weight, reference["conv1.weight"])
    assert model(torch.randn(1, 3, 64, 64), return_features=True)[1].shape == (1, 512)
