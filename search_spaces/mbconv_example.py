"""A second built-in space: MobileNetV2-style inverted residual stages (``mbconv``).

Stem, four stages and a head. Each stage chooses the depthwise kernel (3, 5, 7), the expansion
ratio (3, 6) and its depth (1, 2 or 3 inverted residual blocks; the first carries the stride).
Labels: ``stage<i>/kernel``, ``stage<i>/expand``, ``stage<i>/depth``. Every choice is relevant,
so the space holds (3*2*3)^4 = 104,976 students.

Weight sharing: per stage one stack of the deepest blocks for each (kernel, expand) pair; depths
share the leading blocks. Stage widths are fixed, so no channel slicing is needed: this file
shows how little a space needs beyond the unit contract of :mod:`gtn_nas.space.supernet`.

Example:
    >>> from gtn_nas.space.plugins import build_space
    >>> build_space("mbconv").size()
    104976
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import nni
import torch
from nni.mutable import label_scope
from torch import nn

from gtn_nas.space.layers import ConvBN, LayerRow
from gtn_nas.space.supernet import SupernetSpace, SupernetUnit
from gtn_nas.space.units import ClassifierHeadUnit, StemUnit, scale_channels

KERNELS = (3, 5, 7)
EXPANDS = (3, 6)
DEPTHS = (1, 2, 3)
STEM_CHANNELS = 16
HEAD_CHANNELS = 1280
# (out channels, stride) of the four stages at width multiplier 1 for 32x32 inputs.
STAGES = ((24, 1), (40, 2), (80, 2), (160, 2))


class InvertedResidual(nn.Module):
    """1x1 expansion, kxk depthwise, 1x1 linear projection; residual when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.expand = ConvBN(in_channels, hidden, 1)
        self.depthwise = ConvBN(hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = ConvBN(hidden, out_channels, 1, relu=False)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class MBConvStage(nn.Sequential):
    """A plain stage of ``depth`` inverted residual blocks (what a student holds)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 expand: int, depth: int) -> None:
        super().__init__(*[
            InvertedResidual(in_channels if i == 0 else out_channels, out_channels, kernel_size,
                             stride if i == 0 else 1, expand) for i in range(depth)])
        self.row = LayerRow(f"MBConv{expand}" + (f" (x{depth})" if depth > 1 else ""),
                            in_channels, out_channels, kernel_size, stride)

    def describe(self) -> list[LayerRow]:
        return [self.row]


class SearchableStage(SupernetUnit):
    """A stage choosing kernel, expansion and depth (see the module docstring)."""

    def __init__(self, index: int, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        with label_scope(f"stage{index}"):
            self.kernel = self.add_mutable(nni.choice("kernel", list(KERNELS)))
            self.expand = self.add_mutable(nni.choice("expand", list(EXPANDS)))
            self.depth = self.add_mutable(nni.choice("depth", list(DEPTHS)))
        self.in_channels, self.width, self.stride = in_channels, out_channels, stride
        self.stacks = nn.ModuleDict({
            f"k{k}_e{e}": MBConvStage(in_channels, out_channels, k, stride, e, max(DEPTHS))
            for k in KERNELS for e in EXPANDS})

    def _choice(self, sample: Mapping[str, Any]) -> tuple[int, int, int]:
        return (sample[self.kernel.label], sample[self.expand.label], sample[self.depth.label])

    def out_channels(self, sample: Mapping[str, Any], in_channels: int) -> int:
        return self.width

    def forward(self, x: torch.Tensor, sample: Mapping[str, Any]) -> torch.Tensor:
        kernel, expand, depth = self._choice(sample)
        for block in list(self.stacks[f"k{kernel}_e{expand}"])[:depth]:
            x = block(x)
        return x

    def materialize(self, sample: Mapping[str, Any], in_channels: int,
                    inherit_weights: bool) -> tuple[nn.Module, int]:
        if in_channels != self.in_channels:
            raise ValueError(f"stage takes {self.in_channels} channels, got {in_channels}")
        kernel, expand, depth = self._choice(sample)
        stage = MBConvStage(in_channels, self.width, kernel, self.stride, expand, depth)
        if inherit_weights:
            shared = self.stacks[f"k{kernel}_e{expand}"]
            for target, source in zip(stage, shared):
                target.load_state_dict(copy.deepcopy(source.state_dict()))
        return stage, self.width


class MBConvSpace(SupernetSpace):
    """MobileNetV2-style space (see the module docstring); options as the paper's space."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3, input_size: int = 32,
                 width_mult: float = 1.0) -> None:
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        self.in_channels, self.input_size, self.num_classes = in_channels, input_size, num_classes
        self.options = dict(num_classes=num_classes, in_channels=in_channels,
                            input_size=input_size, width_mult=width_mult)
        width = scale_channels(STEM_CHANNELS, width_mult)
        self.units["stem"] = StemUnit(in_channels, width)
        for index, (out, stride) in enumerate(STAGES, start=1):
            out = scale_channels(out, width_mult)
            self.units[f"stage{index}"] = SearchableStage(index, width, out, stride)
            width = out
        self.units["head"] = ClassifierHeadUnit(width, scale_channels(HEAD_CHANNELS, width_mult),
                                                num_classes)
        self.block_units = (("stem", "stage1"), ("stage2",), ("stage3",), ("stage4", "head"))
        self.presets = {
            "mb_small": {f"stage{i}/{k}": v for i in range(1, 5)
                         for k, v in (("kernel", 3), ("expand", 3), ("depth", 1))},
            "mb_large": {f"stage{i}/{k}": v for i in range(1, 5)
                         for k, v in (("kernel", 5), ("expand", 6), ("depth", 3))},
        }


def build_mbconv_space(num_classes: int = 100, in_channels: int = 3, input_size: int = 32,
                       width_mult: float = 1.0) -> MBConvSpace:
    """Factory registered as ``mbconv`` (entry point ``gtn_nas.search_spaces``)."""
    return MBConvSpace(num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                       width_mult=width_mult)
