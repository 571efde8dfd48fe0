"""Weight-sharing ("elastic") versions of the blocks in :mod:`gtn_nas.space.layers`.

A supernet layer may receive fewer input channels than its widest possible input (when an earlier
layer is dropped) and may run fewer of its residual blocks (a smaller depth). The modules here
hold the widest weights and slice the leading input channels at run time; they have exactly the
same parameter names and nesting as their plain counterparts, so a plain block with the leading
slices of the shared weights is obtained with :func:`copy_leading_slices`. That is how a frozen
student inherits supernet weights, and why the supernet path and the frozen student compute the
same function.

Example:
    >>> conv = ElasticConvBN(64, 32, kernel_size=3)
    >>> conv(torch.zeros(2, 16, 8, 8)).shape      # 16 of the 64 possible input channels
    torch.Size([2, 32, 8, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gtn_nas.space.layers import BasicBlock, ClassifierHead, ConvBN


class ElasticConvBN(ConvBN):
    """:class:`ConvBN` whose convolution uses only the leading ``x.shape[1]`` input channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        in_channels = x.shape[1]
        if in_channels > conv.in_channels:
            raise ValueError(f"got {in_channels} input channels, at most {conv.in_channels} allowed")
        x = F.conv2d(x, conv.weight[:, :in_channels], None, conv.stride, conv.padding)
        for layer in list(self)[1:]:
            x = layer(x)
        return x


class ElasticBasicBlock(BasicBlock):
    """:class:`BasicBlock` with an elastic first convolution and an elastic projection shortcut.

    The projection is used only where the input's width or the stride changes the shape, exactly
    as the plain block decides when it is built for a given input width.
    """

    def __init__(self, max_in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1) -> None:
        super().__init__(max_in_channels, out_channels, kernel_size, stride)
        self.conv1 = ElasticConvBN(max_in_channels, out_channels, kernel_size, stride, relu=True)
        self.shortcut = ElasticConvBN(max_in_channels, out_channels, 1, stride, relu=False)
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keeps_shape = self.stride == 1 and x.shape[1] == self.out_channels
        residual = x if keeps_shape else self.shortcut(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


class ElasticResBlock(nn.Sequential):
    """The widest :class:`~gtn_nas.space.layers.ResBlock` of a layer; ``forward(x, depth)`` runs the
    first ``depth // 2`` basic blocks (depths share their leading blocks)."""

    def __init__(self, max_in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 max_depth: int) -> None:
        blocks: list[nn.Module] = [ElasticBasicBlock(max_in_channels, out_channels, kernel_size,
                                                     stride)]
        blocks += [BasicBlock(out_channels, out_channels, kernel_size, 1)
                   for _ in range(max_depth // 2 - 1)]
        super().__init__(*blocks)
        self.max_depth = max_depth

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:  # type: ignore[override]
        depth = self.max_depth if depth is None else depth
        for block in list(self)[: depth // 2]:
            x = block(x)
        return x


class ElasticClassifierHead(ClassifierHead):
    """:class:`ClassifierHead` whose 1x1 convolution accepts any input width up to the widest."""

    def __init__(self, max_in_channels: int, hidden: int, num_classes: int) -> None:
        super().__init__(max_in_channels, hidden, num_classes)
        self.conv = ElasticConvBN(max_in_channels, hidden, kernel_size=1)


def copy_leading_slices(source: nn.Module, target: nn.Module) -> nn.Module:
    """Copies into ``target`` the leading slice of each same-named tensor of ``source``.

    Every parameter and buffer of ``target`` must exist in ``source`` with at least its size in
    each dimension. Values are copied, never shared.

    Args:
        source: The (wider) weight-sharing module.
        target: A plain module with the same names and smaller or equal shapes.

    Returns:
        ``target``, for chaining.

    Example:
        >>> wide, narrow = ElasticConvBN(8, 4, 3), ConvBN(2, 4, 3)
        >>> _ = copy_leading_slices(wide, narrow)
        >>> torch.equal(narrow.conv.weight, wide.conv.weight[:, :2])
        True
    """
    source_state = source.state_dict()
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            if name not in source_state:
                raise KeyError(f"'{name}' of the target has no counterpart in the source")
            src = source_state[name]
            if src.dim() != tensor.dim() or any(s < t for s, t in zip(src.shape, tensor.shape)):
                raise ValueError(f"'{name}': cannot take shape {tuple(tensor.shape)} "
                                 f"from {tuple(src.shape)}")
            tensor.copy_(src[tuple(slice(0, n) for n in tensor.shape)])
    return target
