"""Widened layers of GPD's dynamic teacher that share their leading slice with the student.

Inverse reparameterisation (IR) with an integer ratio ``r``: every hidden feature of the dynamic
teacher (DT) is ``r`` stacked copies of the student's feature divided by ``r``. A layer's DT
tensors are therefore the student's tensors tiled ``r`` times along each widened dimension,
divided by ``r`` where a dense (ungrouped) map's output is widened; the network input and the
logits are not widened. Hard parameter sharing reads the student back from the DT: the leading
``1/r`` slice of every tensor, times ``r`` where the DT divided. :class:`Share` is that rule for
one tensor, and each layer here owns the DT's parameters and says, through
:meth:`SharedLayer.student_tensors`, what the student's tensors of the same names are (as
differentiable functions of the DT's, so one backward pass trains both and gradients add on the
shared slice). Batch norm keeps separate running statistics for the student.

Example:
    >>> conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    >>> wide = WideConv2d(conv, ratio=2, in_widened=True, out_widened=True)
    >>> wide.weight.shape, torch.equal(wide.student_tensors()["weight"], conv.weight)
    (torch.Size([16, 8, 3, 3]), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Share:
    """How one DT tensor relates to the student's tensor of the same role.

    Attributes:
        dims: The dimensions the DT repeats ``r`` times (the student holds the leading slice).
        scaled: The DT holds the student's values divided by ``r`` (the student reads the slice
            times ``r``): dense maps whose output is widened, and their biases.
    """

    dims: tuple[int, ...] = ()
    scaled: bool = False

    def widen(self, tensor: torch.Tensor, ratio: int) -> torch.Tensor:
        """The DT's tensor made from the student's."""
        for dim in self.dims:
            tensor = torch.cat([tensor] * ratio, dim)
        return tensor / ratio if self.scaled else tensor

    def leading(self, tensor: torch.Tensor, ratio: int) -> tuple[slice, ...]:
        """The index of the shared (leading) slice of a DT tensor."""
        return tuple(slice(0, size // ratio) if dim in self.dims else slice(None)
                     for dim, size in enumerate(tensor.shape))

    def student(self, tensor: torch.Tensor, ratio: int) -> torch.Tensor:
        """The student's tensor read from the DT's (differentiable)."""
        part = tensor[self.leading(tensor, ratio)]
        return part * ratio if self.scaled else part


def dense_share(in_widened: bool, out_widened: bool) -> Share:
    """The rule of a dense ``[out, in, ...]`` weight."""
    dims = ((0,) if out_widened else ()) + ((1,) if in_widened else ())
    return Share(dims, scaled=out_widened)


def grouped_share(widened: bool) -> Share:
    """The rule of a grouped ``[out, in / groups, ...]`` weight (its groups are widened too)."""
    return Share((0,) if widened else (), scaled=False)


def bias_share(out_widened: bool) -> Share:
    """The rule of a bias: ``b / r`` in every copy where the output is widened."""
    return Share((0,) if out_widened else (), scaled=out_widened)


class SharedLayer(nn.Module):
    """Base of the DT's layers: holds the DT's tensors and the rules that give the student's.

    Attributes:
        ratio: The widening ratio ``r``.
        shares: Name of a DT parameter or buffer -> its :class:`Share`.
    """

    def __init__(self, ratio: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.shares: dict[str, Share] = {}

    def _add(self, name: str, student_tensor: torch.Tensor | None, share: Share,
             parameter: bool = True) -> None:
        """Registers the DT tensor ``name`` widened from ``student_tensor``."""
        if student_tensor is None:
            if parameter:
                self.register_parameter(name, None)
            else:
                self.register_buffer(name, None)
            return
        value = share.widen(student_tensor.detach(), self.ratio).clone()
        if parameter:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)
        self.shares[name] = share

    def shared(self, name: str) -> torch.Tensor:
        """The student's view of the DT tensor ``name``."""
        return self.shares[name].student(getattr(self, name), self.ratio)

    def student_tensors(self) -> dict[str, torch.Tensor]:
        """The student module's parameters and buffers (its state_dict names), from the DT's."""
        raise NotImplementedError

    @torch.no_grad()
    def add_noise(self, std: float, generator: torch.Generator) -> None:
        """Adds Gaussian noise to the DT's extra copies of every parameter (the leading slice,
        which the student reads, is left exact)."""
        for name, param in self.named_parameters(recurse=False):
            share = self.shares.get(name)
            if share is None or not share.dims:
                continue
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype) * std
            noise[share.leading(param, self.ratio)] = 0
            param.add_(noise.to(param.device))


class WideConv2d(SharedLayer):
    """A convolution of the DT: dense (groups 1) or grouped with ``groups * r`` groups."""

    def __init__(self, conv: nn.Conv2d, ratio: int, in_widened: bool, out_widened: bool) -> None:
        super().__init__(ratio)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.student_groups = conv.groups
        self.groups = conv.groups * ratio if conv.groups > 1 else 1
        share = dense_share(in_widened, out_widened) if conv.groups == 1 else grouped_share(True)
        self._add("weight", conv.weight, share)
        self._add("bias", conv.bias, bias_share(out_widened))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def student_tensors(self) -> dict[str, torch.Tensor]:
        out = {"weight": self.shared("weight")}
        if self.bias is not None:
            out["bias"] = self.shared("bias")
        return out


class WideLinear(SharedLayer):
    """A linear layer of the DT (the classifier: input widened, logits not)."""

    def __init__(self, linear: nn.Linear, ratio: int, in_widened: bool,
                 out_widened: bool) -> None:
        super().__init__(ratio)
        self._add("weight", linear.weight, dense_share(in_widened, out_widened))
        self._add("bias", linear.bias, bias_share(out_widened))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def student_tensors(self) -> dict[str, torch.Tensor]:
        out = {"weight": self.shared("weight")}
        if self.bias is not None:
            out["bias"] = self.shared("bias")
        return out


class WideBatchNorm2d(SharedLayer):
    """Batch norm of the DT: ``BN(r * x) / r`` with the student's affine parameters repeated.

    The DT's running statistics start as copies of the student's and then track the DT; the
    student's own running statistics live here too (``student_running_mean``, ...), updated by
    the student's forward.
    """

    def __init__(self, bn: nn.BatchNorm2d, ratio: int) -> None:
        super().__init__(ratio)
        self.eps, self.momentum = bn.eps, bn.momentum
        self._add("weight", bn.weight, Share((0,)))
        self._add("bias", bn.bias, Share((0,)))
        self._add("running_mean", bn.running_mean, Share((0,)), parameter=False)
        self._add("running_var", bn.running_var, Share((0,)), parameter=False)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked.detach().clone())
        self.register_buffer("student_running_mean", bn.running_mean.detach().clone())
        self.register_buffer("student_running_var", bn.running_var.detach().clone())
        self.register_buffer("student_num_batches_tracked",
                             bn.num_batches_tracked.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        out = F.batch_norm(x * self.ratio, self.running_mean, self.running_var, self.weight,
                           self.bias, self.training, factor, self.eps)
        return out / self.ratio

    def student_tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.shared("weight"), "bias": self.shared("bias"),
                "running_mean": self.student_running_mean,
                "running_var": self.student_running_var,
                "num_batches_tracked": self.student_num_batches_tracked}
