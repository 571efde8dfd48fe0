"""The GTN paper's student space: stem, six reconfigurable layers, head (GTN supplement, sec. 1).

Each layer chooses ``zero`` (the layer is dropped), ``identity`` (a pass-through, or a 1x1 strided
projection where the position changes width or resolution) or ``resblock`` with kernel 3 or 5 and
depth 2, 4 or 6 convolutions (1, 2 or 3 basic blocks). Labels: ``layer<i>/op``,
``layer<i>/kernel``, ``layer<i>/depth``; kernel and depth matter only for ``resblock``.

Weight sharing: per layer one widest ResBlock per kernel size; depths share the leading blocks; a
layer whose input is narrower than its widest possible input (an earlier layer was dropped)
slices the leading input channels of its first convolution and projection.

Presets ``s_nas_s``, ``s_nas_m``, ``s_nas_l`` are the NAS-found students of the supplement's
Tables 1-3 (see docs/methods.md section 1 for how the tables map onto the six layers).

Example:
    >>> from gtn_nas.space.plugins import build_space
    >>> space = build_space("resnet_supernet")
    >>> space.size()
    262144
"""

from __future__ import annotations

from typing import Any, Mapping

import nni
import torch
from nni.mutable import label_scope
from torch import nn

from gtn_nas.space.elastic import ElasticConvBN, ElasticResBlock, copy_leading_slices
from gtn_nas.space.layers import PassThrough, Projection, ResBlock
from gtn_nas.space.supernet import SupernetSpace, SupernetUnit
from gtn_nas.space.units import ClassifierHeadUnit, StemUnit, scale_channels

OPS = ("zero", "identity", "resblock")
KERNELS = (3, 5)
DEPTHS = (2, 4, 6)
STEM_CHANNELS = 16
HEAD_CHANNELS = 1280
# (out channels, stride) of the six layers at width multiplier 1 for 32x32 inputs.
LAYER_POSITIONS = ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (512, 2))

PRESETS: dict[str, dict[str, Any]] = {
    # Table 1: ResBlock 16->64 s1, 64->128 s2, 128->256 s2; head 256->1280.
    "s_nas_s": {
        "layer1/op": "resblock", "layer1/kernel": 3, "layer1/depth": 2,
        "layer2/op": "zero",
        "layer3/op": "resblock", "layer3/kernel": 3, "layer3/depth": 2,
        "layer4/op": "zero",
        "layer5/op": "resblock", "layer5/kernel": 3, "layer5/depth": 2,
        "layer6/op": "zero",
    },
    # Table 2: ResBlock(x2) 16->64, ResBlock 64->64, ResBlock(x2) k5 64->128 s2, identity,
    # ResBlock 128->256 s2, ResBlock 256->512 s2; head 512->1280.
    "s_nas_m": {
        "layer1/op": "resblock", "layer1/kernel": 3, "layer1/depth": 4,
        "layer2/op": "resblock", "layer2/kernel": 3, "layer2/depth": 2,
        "layer3/op": "resblock", "layer3/kernel": 5, "layer3/depth": 4,
        "layer4/op": "identity",
        "layer5/op": "resblock", "layer5/kernel": 3, "layer5/depth": 2,
        "layer6/op": "resblock", "layer6/kernel": 3, "layer6/depth": 2,
    },
    # Table 3: ResBlock(x2) 16->64, then ResBlock(x3) everywhere; head 512->1280.
    "s_nas_l": {
        "layer1/op": "resblock", "layer1/kernel": 3, "layer1/depth": 4,
        "layer2/op": "resblock", "layer2/kernel": 3, "layer2/depth": 6,
        "layer3/op": "resblock", "layer3/kernel": 3, "layer3/depth": 6,
        "layer4/op": "resblock", "layer4/kernel": 3, "layer4/depth": 6,
        "layer5/op": "resblock", "layer5/kernel": 3, "layer5/depth": 6,
        "layer6/op": "resblock", "layer6/kernel": 3, "layer6/depth": 6,
    },
}


class ReconfigurableLayer(SupernetUnit):
    """One of the six layers: zero | identity | resblock(kernel, depth), at a fixed (out, stride).

    Args:
        index: 1-based position (labels ``layer<index>/...``).
        max_in_channels: The widest input this position can receive.
        out_channels: Output width when the layer is active.
        stride: Stride when the layer is active.
        kernels: Kernel sizes of the ResBlock choice.
        depths: Depths (numbers of convolutions, even) of the ResBlock choice.
    """

    def __init__(self, index: int, max_in_channels: int, out_channels: int, stride: int,
                 kernels: tuple[int, ...] = KERNELS, depths: tuple[int, ...] = DEPTHS) -> None:
        super().__init__()
        with label_scope(f"layer{index}"):
            self.op = self.add_mutable(nni.choice("op", list(OPS)))
            self.kernel = self.add_mutable(nni.choice("kernel", list(kernels)))
            self.depth = self.add_mutable(nni.choice("depth", list(depths)))
        self.width, self.stride = out_channels, stride
        self.resblocks = nn.ModuleDict({
            f"k{k}": ElasticResBlock(max_in_channels, out_channels, k, stride, max(depths))
            for k in kernels})
        self.projection = ElasticConvBN(max_in_channels, out_channels, 1, stride, relu=False)

    def _keeps_shape(self, in_channels: int) -> bool:
        return self.stride == 1 and in_channels == self.width

    def out_channels(self, sample: Mapping[str, Any], in_channels: int) -> int:
        return in_channels if sample[self.op.label] == "zero" else self.width

    def forward(self, x: torch.Tensor, sample: Mapping[str, Any]) -> torch.Tensor:
        op = sample[self.op.label]
        if op == "zero":
            return x
        if op == "identity":
            return x if self._keeps_shape(x.shape[1]) else self.projection(x)
        return self.resblocks[f"k{sample[self.kernel.label]}"](x, sample[self.depth.label])

    def materialize(self, sample: Mapping[str, Any], in_channels: int,
                    inherit_weights: bool) -> tuple[nn.Module | None, int]:
        op = sample[self.op.label]
        if op == "zero":
            return None, in_channels
        if op == "identity":
            if self._keeps_shape(in_channels):
                return PassThrough(in_channels), in_channels
            module: nn.Module = Projection(in_channels, self.width, self.stride)
            source: nn.Module = self.projection
        else:
            kernel, depth = sample[self.kernel.label], sample[self.depth.label]
            module = ResBlock(in_channels, self.width, kernel, self.stride, depth)
            source = self.resblocks[f"k{kernel}"]
        if inherit_weights:
            copy_leading_slices(source, module)
        return module, self.width

    def canonical(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        values = super().canonical(sample)
        if values[self.op.label] != "resblock":
            values[self.kernel.label] = self.kernel.values[0]
            values[self.depth.label] = self.depth.values[0]
        return values


class ResNetSupernet(SupernetSpace):
    """The paper's space (see the module docstring).

    Args:
        num_classes: Classifier outputs (100 for CIFAR-100, as in the supplement's tables).
        in_channels: Input image channels.
        input_size: Input resolution (square), used for costs and export.
        width_mult: Multiplies every channel count (rounded to a multiple of 4).
        kernels: Kernel choices of ResBlocks.
        depths: Depth choices (convolutions) of ResBlocks.
    """

    def __init__(self, num_classes: int = 100, in_channels: int = 3, input_size: int = 32,
                 width_mult: float = 1.0, kernels: tuple[int, ...] = KERNELS,
                 depths: tuple[int, ...] = DEPTHS) -> None:
        super().__init__()
        _check_positive("num_classes", num_classes)
        _check_positive("in_channels", in_channels)
        _check_positive("input_size", input_size)
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if not depths or any(d < 2 or d % 2 for d in depths):
            raise ValueError(f"depths must be even numbers >= 2, got {depths}")
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"kernels must be odd numbers >= 1, got {kernels}")
        self.in_channels, self.input_size, self.num_classes = in_channels, input_size, num_classes
        self.options = dict(num_classes=num_classes, in_channels=in_channels,
                            input_size=input_size, width_mult=width_mult,
                            kernels=tuple(kernels), depths=tuple(depths))
        stem = scale_channels(STEM_CHANNELS, width_mult)
        self.units["stem"] = StemUnit(in_channels, stem)
        widest = stem
        for index, (out, stride) in enumerate(LAYER_POSITIONS, start=1):
            out = scale_channels(out, width_mult)
            self.units[f"layer{index}"] = ReconfigurableLayer(index, widest, out, stride,
                                                              tuple(kernels), tuple(depths))
            widest = max(widest, out)
        self.units["head"] = ClassifierHeadUnit(widest, scale_channels(HEAD_CHANNELS, width_mult),
                                                num_classes)
        # docs/methods.md section 1 [our reading]: about equal numbers of layers per block.
        self.block_units = (("stem", "layer1"), ("layer2", "layer3"), ("layer4", "layer5"),
                            ("layer6", "head"))
        self.presets = {name: dict(sample) for name, sample in PRESETS.items()} \
            if tuple(kernels) == KERNELS and tuple(depths) == DEPTHS else {}

    @property
    def reference_sample(self) -> dict[str, Any]:
        """Every layer a ResBlock (all strides kept): the nominal shapes at the cuts."""
        return self.validate({f"layer{i}/op": "resblock" for i in range(1, 7)}
                             | {f"layer{i}/kernel": 3 for i in range(1, 7)}
                             | {f"layer{i}/depth": 2 for i in range(1, 7)})


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def build_resnet_supernet(num_classes: int = 100, in_channels: int = 3, input_size: int = 32,
                          width_mult: float = 1.0, kernels: tuple[int, ...] = KERNELS,
                          depths: tuple[int, ...] = DEPTHS) -> ResNetSupernet:
    """Factory registered as ``resnet_supernet`` (entry point ``gtn_nas.search_spaces``)."""
    return ResNetSupernet(num_classes=num_classes, in_channels=in_channels,
                          input_size=input_size, width_mult=width_mult, kernels=tuple(kernels),
                          depths=tuple(depths))
