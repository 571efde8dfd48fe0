"""Plain building blocks of frozen students (no search-space code in them).

Every block here is an ordinary ``nn.Module`` built from ``torch.nn`` layers, so a frozen student
trains, saves, reloads with ``weights_only=True`` and exports to ONNX like any model. Each block
also says what it is through :meth:`describe`, which yields the rows of the layer table printed by
``gtn-nas space show`` (the supplement's columns: type, in, out, kernel, stride).

Example:
    >>> block = ResBlock(16, 64, kernel_size=3, stride=1, depth=4)
    >>> [row.type for row in block.describe()]
    ['ResBlock (x2)']
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerRow:
    """One row of a layer table. ``kernel``/``stride`` are None where they do not apply."""

    type: str
    in_channels: int
    out_channels: int
    kernel: int | None = None
    stride: int | None = None
    part: str | None = None
    """Sub-module (relative name) the row stands for; None for the whole module."""


class ConvBN(nn.Sequential):
    """Convolution (no bias) + batch norm, optionally followed by ReLU.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size; padding keeps the size at stride 1.
        stride: Convolution stride.
        relu: Append a ReLU.
        groups: Convolution groups (``in_channels`` for a depthwise convolution).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 relu: bool = True, groups: int = 1) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)

    @property
    def conv(self) -> nn.Conv2d:
        return self[0]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self[1]

    def describe(self) -> list[LayerRow]:
        conv = self.conv
        return [LayerRow("ConvLayer", conv.in_channels, conv.out_channels, conv.kernel_size[0],
                         conv.stride[0])]


class Projection(ConvBN):
    """A 1x1 (strided) convolution + BN: an identity layer that changes width or resolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, stride=stride, relu=False)

    def describe(self) -> list[LayerRow]:
        conv = self.conv
        return [LayerRow("IdentityLayer", conv.in_channels, conv.out_channels, 1, conv.stride[0])]


class PassThrough(nn.Identity):
    """A parameter-free identity layer, kept in the student so its table matches the space."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def describe(self) -> list[LayerRow]:
        return [LayerRow("IdentityLayer", self.channels, self.channels)]


class BasicBlock(nn.Module):
    """Two kxk convolutions with a residual connection (ResNet's basic block).

    The shortcut is the identity when shape is preserved, else a :class:`Projection`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBN(in_channels, out_channels, kernel_size, stride, relu=True)
        self.conv2 = ConvBN(out_channels, out_channels, kernel_size, 1, relu=False)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = Projection(in_channels, out_channels, stride) if needs_projection else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


class ResBlock(nn.Sequential):
    """A ResBlock layer of ``depth`` convolutions: ``depth // 2`` basic blocks.

    The first basic block carries the stride and, where the shape changes, the projection
    shortcut. ``depth`` 2, 4, 6 is printed as ``ResBlock``, ``ResBlock (x2)``, ``ResBlock (x3)``
    as in the GTN supplement's tables.

    Example:
        >>> ResBlock(64, 128, kernel_size=5, stride=2, depth=4)(torch.zeros(1, 64, 8, 8)).shape
        torch.Size([1, 128, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 depth: int) -> None:
        if depth < 2 or depth % 2:
            raise ValueError(f"ResBlock depth must be an even number >= 2, got {depth}")
        blocks = [BasicBlock(in_channels if i == 0 else out_channels, out_channels, kernel_size,
                             stride if i == 0 else 1) for i in range(depth // 2)]
        super().__init__(*blocks)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.depth = kernel_size, stride, depth

    def describe(self) -> list[LayerRow]:
        repeats = self.depth // 2
        name = "ResBlock" if repeats == 1 else f"ResBlock (x{repeats})"
        return [LayerRow(name, self.in_channels, self.out_channels, self.kernel_size, self.stride)]


class ClassifierHead(nn.Module):
    """1x1 conv + BN + ReLU to ``hidden`` channels, global average pool, linear classifier."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBN(in_channels, hidden, kernel_size=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.conv(x)), 1))

    def describe(self) -> list[LayerRow]:
        conv = self.conv.conv
        hidden = self.fc.in_features
        return [LayerRow("ConvLayer", conv.in_channels, hidden, 1, 1, part="conv"),
                LayerRow("GlobalAvgPool", hidden, hidden, part="pool"),
                LayerRow("LinearLayer", hidden, self.fc.out_features, part="fc")]


def describe_module(module: nn.Module, prefix: str = "") -> list[tuple[str, LayerRow]]:
    """``(module name, row)`` pairs for ``module``: its own :meth:`describe`, else its children's.

    The name is the dotted path (from ``prefix``) of the sub-module whose parameters and FLOPs
    the row covers.
    """
    describe = getattr(module, "describe", None)
    if callable(describe):
        return [(f"{prefix}.{row.part}" if prefix and row.part else row.part or prefix, row)
                for row in describe()]
    children = list(module.named_children())
    if not children:
        has_weights = any(True for _ in module.parameters(recurse=False))
        return [(prefix, _generic_row(module))] if has_weights or isinstance(
            module, (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d)) else []
    rows: list[tuple[str, LayerRow]] = []
    for name, child in children:
        rows.extend(describe_module(child, f"{prefix}.{name}" if prefix else name))
    return rows


def _generic_row(module: nn.Module) -> LayerRow:
    """A row for a plain torch layer without ``describe()`` (so no parameters go unlisted)."""
    def first(*names: str) -> int:
        for name in names:
            value = getattr(module, name, None)
            if isinstance(value, int):
                return value
        return 0

    kernel = getattr(module, "kernel_size", None)
    stride = getattr(module, "stride", None)
    return LayerRow(type(module).__name__,
                    first("in_channels", "in_features", "num_features"),
                    first("out_channels", "out_features", "num_features"),
                    kernel[0] if isinstance(kernel, tuple) else kernel,
                    stride[0] if isinstance(stride, tuple) else stride)
