"""A third-party search space in one file: three blocks, each a 3x3 conv, a 5x5 conv or a
depthwise-separable 3x3 conv.

Use it without installing anything:

    gtn-nas space show --space examples/custom_space_plugin.py:build_tiny_space --preset all_conv3
    gtn-nas space sample --space examples/custom_space_plugin.py:build_tiny_space --seed 1

or register it from your own package's ``pyproject.toml``:

    [project.entry-points."gtn_nas.search_spaces"]
    tiny = "my_package.tiny_space:build_tiny_space"

See docs/writing-a-search-space.md for the contract.
"""

from __future__ import annotations

import torch
from torch import nn

from gtn_nas.space.layers import ConvBN, LayerRow
from gtn_nas.space.supernet import SupernetSpace
from gtn_nas.space.units import CandidateUnit, ClassifierHeadUnit, StemUnit, scale_channels

# (out channels, stride) of the three searchable blocks.
BLOCKS = ((32, 1), (64, 2), (128, 2))


class SeparableConv(nn.Module):
    """Depthwise kxk conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.depthwise = ConvBN(in_channels, in_channels, kernel_size, stride, groups=in_channels)
        self.pointwise = ConvBN(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))

    def describe(self) -> list[LayerRow]:
        conv = self.depthwise.conv
        return [LayerRow("SeparableConv", conv.in_channels, self.pointwise.conv.out_channels,
                         conv.kernel_size[0], conv.stride[0])]


class TinySpace(SupernetSpace):
    """Stem, three :class:`~gtn_nas.space.units.CandidateUnit` blocks, head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                 width_mult: float = 1.0) -> None:
        super().__init__()
        self.in_channels, self.input_size, self.num_classes = in_channels, input_size, num_classes
        self.options = dict(num_classes=num_classes, in_channels=in_channels,
                            input_size=input_size, width_mult=width_mult)
        width = scale_channels(16, width_mult)
        self.units["stem"] = StemUnit(in_channels, width)
        for index, (out, stride) in enumerate(BLOCKS, start=1):
            out = scale_channels(out, width_mult)
            self.units[f"block{index}"] = CandidateUnit(
                f"block{index}", "op",
                {
                    # default arguments freeze this iteration's values in each builder
                    "conv3": lambda i=width, o=out, s=stride: ConvBN(i, o, 3, s),
                    "conv5": lambda i=width, o=out, s=stride: ConvBN(i, o, 5, s),
                    "sep3": lambda i=width, o=out, s=stride: SeparableConv(i, o, 3, s),
                },
                in_channels=width, out_channels=out)
            width = out
        self.units["head"] = ClassifierHeadUnit(width, scale_channels(256, width_mult),
                                                num_classes)
        # Four consecutive blocks, as every space must declare for grafting onto a teacher.
        self.block_units = (("stem",), ("block1",), ("block2",), ("block3", "head"))
        self.presets = {"all_conv3": {f"block{i}/op": "conv3" for i in (1, 2, 3)},
                        "all_sep3": {f"block{i}/op": "sep3" for i in (1, 2, 3)}}


def build_tiny_space(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                     width_mult: float = 1.0) -> TinySpace:
    """The factory named on the command line (``file.py:build_tiny_space``)."""
    return TinySpace(num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                     width_mult=width_mult)
