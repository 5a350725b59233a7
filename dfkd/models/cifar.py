"""CIFAR classifiers, checkpoint-compatible with the community teacher bundle (CMI / Fast-Datafree).

Written from ``/work/shared/spec/cifar-archs.md`` (no upstream code was copied). Section references
("spec §1a") point into that file. Module and attribute names, registration order and shapes
follow the spec exactly, so a bundle file such as ``cifar100_wrn40_2.pth`` loads with
``strict=True`` and the state_dict key digests match the spec's table (§2).

Every model takes ``num_classes`` and has ``forward(x, return_features=False)``: logits, or
``(logits, features)`` where ``features`` is the pooled penultimate vector fed to the head (§3).

All activations are out-of-place. The originals use in-place ReLUs / adds on BN outputs; the spec
(§1c, "In-place ops") reports bit-identical logits for out-of-place re-implementations. The only
visible difference: a forward hook on a BN's *output* here sees the BN output itself, not the
post-ReLU / post-add value (hooks on BN *inputs*, as DeepInversion and CMI use, are unaffected).

Families:

* :class:`ResNet` — DAFL/kuangliu CIFAR ResNet-18/34, head ``linear`` (spec §1a).
* :class:`WideResNet` — pre-activation WRN-d-k of ZSKT, head ``fc`` (spec §1b).
* :class:`VGG` — RepDistiller VGG with BN, head ``classifier`` (spec §1c).
* :class:`CifarResNet` — RepDistiller-style small CIFAR ResNets (``resnet8``, ``resnet20``) for CPU
  runs; **not** covered by the spec or the teacher bundle (its ``resnet8`` etc. are listed there as
  "not covered"), so no bundle checkpoint is promised to load into them.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "VGG",
    "CifarResNet",
    "ResNet",
    "WideResNet",
    "resnet8",
    "resnet18",
    "resnet20",
    "resnet34",
    "vgg8",
    "vgg11",
    "wrn16_1",
    "wrn16_2",
    "wrn40_1",
    "wrn40_2",
]


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=bias)


def _output(logits: Tensor, feats: Tensor, return_features: bool) -> Tensor | tuple[Tensor, Tensor]:
    return (logits, feats) if return_features else logits


# ------------------------------------------------------------------------------------------------
# ResNet-18/34, DAFL style (spec §1a)
# ------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Post-activation ResNet v1 block (spec §1a): conv-bn-relu-conv-bn, + shortcut, relu.

    The shortcut is an empty ``nn.Sequential`` (identity, no keys) unless the stride or the width
    changes; then ``shortcut.0`` is a 1×1 conv (no bias) and ``shortcut.1`` a BN.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, planes, H/s, W/s)
        return F.relu(out + self.shortcut(x))  # (B, planes, H/s, W/s)


class ResNet(nn.Module):
    """CIFAR ResNet of DAFL / kuangliu, as used by CMI and Fast-Datafree (spec §1a).

    Stem: 3×3 conv 3→64 (stride 1, no max-pool) + BN + ReLU. Four stages of :class:`BasicBlock`,
    widths 64/128/256/512, first-block strides 1/2/2/2 (32→32→16→8→4 px), global average pool,
    then ``linear`` (512 → num_classes, with bias). PyTorch default initialisation.
    """

    def __init__(self, num_blocks: list[int], num_classes: int = 10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * BasicBlock.expansion, num_classes)
        self.num_features = 512

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):  # the stride sits on the first block only
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, 64, 32, 32)
        out = self.layer1(out)  # (B, 64, 32, 32)
        out = self.layer2(out)  # (B, 128, 16, 16)
        out = self.layer3(out)  # (B, 256, 8, 8)
        out = self.layer4(out)  # (B, 512, 4, 4)
        feats = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 512)
        return _output(self.linear(feats), feats, return_features)  # logits (B, num_classes)


def resnet18(num_classes: int = 10) -> ResNet:
    """ResNet-18, BasicBlock [2, 2, 2, 2]; 122 keys, 11,173,962 params at 10 classes (spec §2)."""
    return ResNet([2, 2, 2, 2], num_classes)


def resnet34(num_classes: int = 10) -> ResNet:
    """ResNet-34, BasicBlock [3, 4, 6, 3]; 218 keys, 21,282,122 params at 10 classes (spec §2)."""
    return ResNet([3, 4, 6, 3], num_classes)


# ------------------------------------------------------------------------------------------------
# Wide ResNet, pre-activation (spec §1b)
# ------------------------------------------------------------------------------------------------
class WideBasicBlock(nn.Module):
    """Pre-activation WRN block (spec §1b).

    ``o = relu(bn1(x))``; ``y = conv2(dropout(relu(bn2(conv1(o)))))``; output ``y + shortcut``, no
    ReLU after the add. The shortcut is the *raw* input ``x`` when in == out, otherwise
    ``convShortcut(o)`` — a 1×1 conv (no bias, no BN) on the **activated** input, not on ``x``.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, out_planes, stride)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.dropout = nn.Dropout(dropout_rate)  # p = 0 in the registry: no effect, no keys
        self.conv2 = _conv3x3(out_planes, out_planes)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (  # checkpoint key name, hence camelCase
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        o = F.relu(self.bn1(x))  # (B, in, H, W)
        y = F.relu(self.bn2(self.conv1(o)))  # (B, out, H/s, W/s)
        y = self.conv2(self.dropout(y))  # (B, out, H/s, W/s)
        shortcut = x if self.convShortcut is None else self.convShortcut(o)  # (B, out, H/s, W/s)
        return y + shortcut


class WideStage(nn.Module):
    """One WRN stage; its blocks live in ``.layer`` (keys ``blockN.layer.i.*``, spec §1b)."""

    def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int, dropout_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout_rate)
                for i in range(num_blocks)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-d-k of ZSKT (polo5), as used by CMI and Fast-Datafree (spec §1b).

    ``n = (d − 4) / 6`` blocks per stage, channels [16, 16k, 32k, 64k], stage strides 1/2/2
    (32→16→8 px). Stem ``conv1`` 3→16 with no BN/ReLU after it (pre-activation). Head: ``bn1`` →
    ReLU → global average pool → ``fc`` (64k → num_classes, with bias).

    Init (spec §1b): conv weights ~ N(0, sqrt(2 / (k_h·k_w·out_channels))) — the spec writes
    3·3·out, which is what this gives for every 3×3 conv; the 1×1 ``convShortcut`` uses 1·1·out
    (He init by fan-out). BN weight 1, bias 0; ``fc`` bias 0, ``fc`` weight PyTorch default.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10, dropout_rate: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = _conv3x3(3, widths[0])
        self.block1 = WideStage(n, widths[0], widths[1], 1, dropout_rate)
        self.block2 = WideStage(n, widths[1], widths[2], 2, dropout_rate)
        self.block3 = WideStage(n, widths[2], widths[3], 2, dropout_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])  # registered after the blocks: last BN in modules() order
        self.fc = nn.Linear(widths[3], num_classes)
        self.num_features = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        out = self.conv1(x)  # (B, 16, 32, 32)
        out = self.block1(out)  # (B, 16k, 32, 32)
        out = self.block2(out)  # (B, 32k, 16, 16)
        out = self.block3(out)  # (B, 64k, 8, 8)
        out = F.relu(self.bn1(out))  # (B, 64k, 8, 8)
        feats = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 64k)
        return _output(self.fc(feats), feats, return_features)  # logits (B, num_classes)


def wrn16_1(num_classes: int = 10, *, dropout_rate: float = 0.0) -> WideResNet:
    """WRN-16-1 (constructor ``wrn_16_1`` upstream); 82 keys, 175,066 params at 10 classes (spec §2)."""
    return WideResNet(16, 1, num_classes, dropout_rate)


def wrn16_2(num_classes: int = 10, *, dropout_rate: float = 0.0) -> WideResNet:
    """WRN-16-2 (constructor ``wrn_16_2`` upstream); 83 keys, 691,674 params at 10 classes (spec §2)."""
    return WideResNet(16, 2, num_classes, dropout_rate)


def wrn40_1(num_classes: int = 10, *, dropout_rate: float = 0.0) -> WideResNet:
    """WRN-40-1 (constructor ``wrn_40_1`` upstream); 226 keys, 563,930 params at 10 classes (spec §2)."""
    return WideResNet(40, 1, num_classes, dropout_rate)


def wrn40_2(num_classes: int = 10, *, dropout_rate: float = 0.0) -> WideResNet:
    """WRN-40-2 (constructor ``wrn_40_2`` upstream); 227 keys, 2,243,546 params at 10 classes (spec §2)."""
    return WideResNet(40, 2, num_classes, dropout_rate)


# ------------------------------------------------------------------------------------------------
# VGG with BN, RepDistiller variant (spec §1c)
# ------------------------------------------------------------------------------------------------
VGG_CFGS: dict[str, list[list[int]]] = {
    "S": [[64], [128], [256], [512], [512]],  # vgg8
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],  # vgg11
}


def _vgg_block(in_ch: int, widths: list[int]) -> nn.Sequential:
    """[conv3×3 (bias), BN, ReLU] per width, minus the final ReLU: convs at 0, 3; BNs at 1, 4."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [_conv3x3(in_ch, w, bias=True), nn.BatchNorm2d(w), nn.ReLU()]
        in_ch = w
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """RepDistiller's CIFAR VGG with BN (spec §1c); registry ``vgg8`` = vgg8_bn, ``vgg11`` = vgg11_bn.

    ``block0..4`` each end with a BN; the forward applies ReLU + ``pool0..2`` (2×2 max) after
    blocks 0-2, ReLU after block 3 and ``pool3`` **only when the input height is exactly 64**
    (skipped at 32 px, so block3 and block4 both run at 4×4), then ReLU, ``pool4`` (global average)
    and ``classifier`` = Linear(512, num_classes).

    Init (spec §1c): conv weight ~ N(0, sqrt(2 / (9·out))), conv bias 0; BN 1 / 0; linear weight
    ~ N(0, 0.01), bias 0.
    """

    def __init__(self, cfg: list[list[int]], num_classes: int = 10):
        super().__init__()
        self.block0 = _vgg_block(3, cfg[0])
        self.block1 = _vgg_block(cfg[0][-1], cfg[1])
        self.block2 = _vgg_block(cfg[1][-1], cfg[2])
        self.block3 = _vgg_block(cfg[2][-1], cfg[3])
        self.block4 = _vgg_block(cfg[3][-1], cfg[4])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        self.num_features = cfg[4][-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels  # 9·out: all convs are 3×3
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        h = x.shape[2]
        out = self.pool0(F.relu(self.block0(x)))  # (B, 64, 16, 16) at 32 px
        out = self.pool1(F.relu(self.block1(out)))  # (B, 128, 8, 8)
        out = self.pool2(F.relu(self.block2(out)))  # (B, 256, 4, 4)
        out = F.relu(self.block3(out))  # (B, 512, 4, 4)
        if h == 64:  # RepDistiller's rule: pool3 only for 64-px inputs (e.g. Tiny-ImageNet)
            out = self.pool3(out)  # (B, 512, 4, 4) at 64 px
        out = F.relu(self.block4(out))  # (B, 512, 4, 4)
        feats = self.pool4(out).flatten(1)  # (B, 512)
        return _output(self.classifier(feats), feats, return_features)  # logits (B, num_classes)


def vgg8(num_classes: int = 10) -> VGG:
    """VGG-8 with BN (cfg 'S', upstream ``vgg8_bn``); 37 keys, 3,918,858 params at 10 classes (spec §2)."""
    return VGG(VGG_CFGS["S"], num_classes)


def vgg11(num_classes: int = 10) -> VGG:
    """VGG-11 with BN (cfg 'A', upstream ``vgg11_bn``); 58 keys, 9,231,114 params at 10 classes (spec §2)."""
    return VGG(VGG_CFGS["A"], num_classes)


# ------------------------------------------------------------------------------------------------
# Small CIFAR ResNets, RepDistiller style (NOT covered by the spec or the teacher bundle)
# ------------------------------------------------------------------------------------------------
class SmallBasicBlock(nn.Module):
    """Post-activation block of the RepDistiller CIFAR ResNets; ``downsample`` = 1×1 conv + BN."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, planes, H/s, W/s)
        identity = x if self.downsample is None else self.downsample(x)  # (B, planes, H/s, W/s)
        return F.relu(out + identity)


class CifarResNet(nn.Module):
    """RepDistiller-style CIFAR ResNet-d (``resnet8``, ``resnet20``): small models for CPU runs.

    Not part of the spec's checked set and not covered by the community teacher bundle. Stem: 3×3
    conv 3→16 + BN + ReLU; three stages of ``n = (d − 2) / 6`` basic blocks, widths 16/32/64,
    strides 1/2/2; global average pool → ``fc`` (64 → num_classes). Init: Kaiming-normal (fan-out)
    convs, BN 1 / 0, PyTorch default linear.
    """

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.in_planes = 16
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, stride=1)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.fc = nn.Linear(64, num_classes)
        self.num_features = 64
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(SmallBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        out = self.layer1(out)  # (B, 16, 32, 32)
        out = self.layer2(out)  # (B, 32, 16, 16)
        out = self.layer3(out)  # (B, 64, 8, 8)
        feats = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 64)
        return _output(self.fc(feats), feats, return_features)  # logits (B, num_classes)


def resnet8(num_classes: int = 10) -> CifarResNet:
    """ResNet-8 (1 block per stage), RepDistiller style; tiny CPU model, not in the teacher bundle."""
    return CifarResNet(8, num_classes)


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 (3 blocks per stage), RepDistiller style; small CPU model, not in the teacher bundle."""
    return CifarResNet(20, num_classes)
