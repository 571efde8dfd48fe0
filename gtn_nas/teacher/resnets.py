"""CIFAR ResNets (resnet8x4, resnet32, resnet32x4), WideResNets (wrn16_2, wrn40_2) and the tiny
test teacher, registered in :data:`gtn_nas.teacher.net.TEACHERS`."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from gtn_nas.errors import ConfigError
from gtn_nas.teacher.net import TEACHERS, TeacherNet, _init_weights, _PoolHead


# --------------------------------------------------------------------------------------------
# CIFAR ResNets (resnet8x4, resnet32, resnet32x4)
# --------------------------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    """Post-activation basic block: conv-BN-ReLU-conv-BN + shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + residual)


def _cifar_resnet(name: str, depth: int, widths: tuple[int, int, int, int], num_classes: int,
                  in_channels: int) -> TeacherNet:
    """``widths`` = (stem, stage1, stage2, stage3); ``(depth - 2) / 6`` blocks per stage."""
    n = (depth - 2) // 6

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*[_BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                               for i in range(n)])

    stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, padding=1, bias=False),
                         nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
    blocks = [
        nn.Sequential(OrderedDict(stem=stem, stage1=stage(widths[0], widths[1], 1))),
        stage(widths[1], widths[2], 2),
        stage(widths[2], widths[3], 2),
        _PoolHead(widths[3], num_classes),
    ]
    model = TeacherNet(name, blocks, num_classes, in_channels)
    _init_weights(model)
    return model


@TEACHERS.register("resnet8x4")
def resnet8x4(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """CIFAR ResNet-8x4: 1 basic block per stage, widths 32 (stem) / 64 / 128 / 256."""
    return _cifar_resnet("resnet8x4", 8, (32, 64, 128, 256), num_classes, in_channels)


@TEACHERS.register("resnet32")
def resnet32(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """CIFAR ResNet-32: 5 basic blocks per stage, widths 16 (stem) / 16 / 32 / 64."""
    return _cifar_resnet("resnet32", 32, (16, 16, 32, 64), num_classes, in_channels)


@TEACHERS.register("resnet32x4")
def resnet32x4(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """CIFAR ResNet-32x4: 5 basic blocks per stage, widths 32 (stem) / 64 / 128 / 256."""
    return _cifar_resnet("resnet32x4", 32, (32, 64, 128, 256), num_classes, in_channels)


# --------------------------------------------------------------------------------------------
# Wide ResNets (wrn16_2, wrn40_2)
# --------------------------------------------------------------------------------------------


class _PreActBlock(nn.Module):
    """WideResNet block: BN-ReLU-conv-BN-ReLU-conv + shortcut (no dropout).

    When the shape changes, the 1x1 shortcut convolution takes the pre-activated input, as in
    the reference implementation.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))  # a new tensor: the input (a cut feature) is intact
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        residual = x if self.shortcut is None else self.shortcut(activated)
        return out + residual


def _wide_resnet(name: str, depth: int, widen: int, num_classes: int,
                 in_channels: int) -> TeacherNet:
    n = (depth - 4) // 6
    widths = (16, 16 * widen, 32 * widen, 64 * widen)

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*[_PreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                               for i in range(n)])

    stem = nn.Conv2d(in_channels, widths[0], 3, 1, padding=1, bias=False)
    head_pre = nn.Sequential(nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True))
    blocks = [
        nn.Sequential(OrderedDict(stem=stem, stage1=stage(widths[0], widths[1], 1))),
        stage(widths[1], widths[2], 2),
        stage(widths[2], widths[3], 2),
        _PoolHead(widths[3], num_classes, pre=head_pre),
    ]
    model = TeacherNet(name, blocks, num_classes, in_channels)
    _init_weights(model, zero_linear_bias=True)
    return model


@TEACHERS.register("wrn16_2")
def wrn16_2(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """WideResNet-16-2: 2 pre-activation blocks per stage, widths 32 / 64 / 128."""
    return _wide_resnet("wrn16_2", 16, 2, num_classes, in_channels)


@TEACHERS.register("wrn40_2")
def wrn40_2(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """WideResNet-40-2: 6 pre-activation blocks per stage, widths 32 / 64 / 128."""
    return _wide_resnet("wrn40_2", 40, 2, num_classes, in_channels)


# --------------------------------------------------------------------------------------------
# Tiny teacher for tests
# --------------------------------------------------------------------------------------------

_NORMS = ("bn", "none")


@TEACHERS.register("tiny")
def tiny(num_classes: int, in_channels: int = 3, *, norm: str = "bn") -> TeacherNet:
    """Three 3x3 conv stages (widths 8/16/32, strides 1/2/2) + pool + linear, for tests.

    Args:
        num_classes: Number of logits.
        in_channels: Input channels.
        norm: ``"bn"`` (conv without bias + BatchNorm) or ``"none"`` (conv with bias, no norm
            layer at all, e.g. for exact multi-process equivalence checks).
    """
    if norm not in _NORMS:
        raise ConfigError(f"teacher 'tiny' option norm={norm!r} is not allowed "
                          f"(allowed: {', '.join(_NORMS)})")

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, padding=1,
                                             bias=norm == "none")]
        if norm == "bn":
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
        return nn.Sequential(*layers)

    blocks = [stage(in_channels, 8, 1), stage(8, 16, 2), stage(16, 32, 2),
              _PoolHead(32, num_classes)]
    model = TeacherNet("tiny", blocks, num_classes, in_channels)
    _init_weights(model)
    return model
