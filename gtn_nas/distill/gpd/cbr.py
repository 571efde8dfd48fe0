"""Channel-branch reparameterisation (CBR): a DT convolution as several branches folded into one.

GPD makes the dynamic teacher's 3x3 stride-1 convolutions multi-branch (after OREPA): every
branch is a linear map, so all of them fold into a single kernel at each forward, and the
student, read from the leading slice of each branch and folded the same way, stays a plain
convolution. Branches (``BRANCHES``), each scaled per output channel:

============ ======================================================================
``origin``   the original kxk kernel (the only branch with a bias, if the conv has one)
``avg``      a 1x1 conv times a fixed average kxk kernel
``prior``    a 1x1 conv times a fixed DCT-like kxk prior per output channel
``1x1_kxk``  an identity-initialised 1x1 conv, then a kxk conv
``kxk``      a second kxk kernel
``dw_pw``    a depthwise kxk conv with 8x channel expansion, then a pointwise conv
============ ======================================================================

Initial scales: ``.25/.25/0/.5/.05/.5`` (``init="scratch"``) or ``1/0/0/0/0/0``
(``init="student"``). The extra branches are drawn at the student's size from a seeded
generator and the ``origin`` kernel is solved so that the folded kernel equals the student's;
every branch is then widened by inverse reparameterisation, so the DT computes the student's
function at initialisation whatever the scales. [our reading] Two choices differ from the
official code: the DCT prior of the DT is the student's prior repeated ``r`` times (so the
student's slice is its own prior), and a conv without bias gets no bias branch (before a batch
norm it would receive no gradient and would have to be folded into the running mean).

Example:
    >>> conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    >>> cbr = CBRConv2d(conv, 2, True, True, BRANCHES, "scratch", torch.Generator())
    >>> torch.allclose(cbr.student_tensors()["weight"], conv.weight, atol=1e-5)
    True
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gtn_nas.distill.gpd.layers import (
    Share,
    SharedLayer,
    bias_share,
    dense_share,
    grouped_share,
)

BRANCHES = ("origin", "avg", "prior", "1x1_kxk", "kxk", "dw_pw")
"""The branch names, in the order of the official code."""

INIT_SCALES = {
    "scratch": {"origin": 0.25, "avg": 0.25, "prior": 0.0, "1x1_kxk": 0.5, "kxk": 0.05,
                "dw_pw": 0.5},
    "student": {"origin": 1.0, "avg": 0.0, "prior": 0.0, "1x1_kxk": 0.0, "kxk": 0.0,
                "dw_pw": 0.0},
}
"""Per-branch initial scales for training from scratch or from a trained student."""

EXPAND = 8
"""Channel expansion of the depthwise branch."""


def is_cbr_candidate(conv: nn.Conv2d) -> bool:
    """Whether GPD makes ``conv`` multi-branch: a 3x3, stride-1, size-keeping convolution."""
    return (tuple(conv.kernel_size) == (3, 3) and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and conv.padding in ((1, 1), "same")
            and conv.padding_mode == "zeros")


def dct_prior(out_channels: int, kernel_size: int) -> torch.Tensor:
    """The fixed DCT-like prior ``[out, k, k]``: cosines along rows for the first half of the
    output channels, along columns for the second half, frequency growing with the channel."""
    half = out_channels / 2
    prior = torch.empty(out_channels, kernel_size, kernel_size, dtype=torch.float64)
    steps = torch.arange(kernel_size, dtype=torch.float64) + 0.5
    for i in range(out_channels):
        if i < half:
            prior[i] = torch.cos(math.pi * steps * (i + 1) / kernel_size).unsqueeze(1)
        else:
            prior[i] = torch.cos(math.pi * steps * (i + 1 - half) / kernel_size).unsqueeze(0)
    return prior


def identity_1x1(channels: int, in_per_group: int) -> torch.Tensor:
    """The identity of a (grouped) 1x1 conv ``[channels, in_per_group, 1, 1]``."""
    eye = torch.zeros(channels, in_per_group, 1, 1, dtype=torch.float64)
    eye[torch.arange(channels), torch.arange(channels) % in_per_group] = 1.0
    return eye


def branch_kernel(name: str, t: Mapping[str, torch.Tensor], groups: int) -> torch.Tensor:
    """The ``[out, in / groups, k, k]`` kernel of branch ``name`` (before its scale)."""
    if name in ("origin", "kxk"):
        return t[name]
    if name == "avg":
        return t["avg_conv"] * t["avg_kernel"]
    if name == "prior":
        return t["prior_conv"] * t["prior"].unsqueeze(1)
    if name == "1x1_kxk":
        first = (t["id_conv"] + t["identity"]).flatten(1)  # [internal, in / g]
        second = t["id_kxk"]  # [out, internal / g, k, k]
        out, inner, k = second.shape[0], second.shape[1], second.shape[-1]
        first = first.reshape(groups, inner, first.shape[1])
        second = second.reshape(groups, out // groups, inner, k, k)
        return torch.einsum("gti,gothw->goihw", first, second).reshape(out, -1, k, k)
    if name == "dw_pw":
        dw, pw = t["dw"], t["pw"]  # [8 * in, 1, k, k], [out, 8 * in / g, 1, 1]
        out, k = pw.shape[0], dw.shape[-1]
        per_group = dw.shape[0] // EXPAND // groups
        dw = dw.reshape(groups, per_group, EXPAND, k, k)
        pw = pw.reshape(groups, out // groups, per_group, EXPAND)
        return torch.einsum("giehw,goie->goihw", dw, pw).reshape(out, per_group, k, k)
    raise ValueError(f"unknown branch {name!r}")


def fold_branches(t: Mapping[str, torch.Tensor], branches: Sequence[str],
                  groups: int) -> torch.Tensor:
    """The one kernel equal to the sum of the scaled branches."""
    kernel = None
    for index, name in enumerate(branches):
        part = branch_kernel(name, t, groups) * t["scales"][index].view(-1, 1, 1, 1)
        kernel = part if kernel is None else kernel + part
    return kernel


class CBRConv2d(SharedLayer):
    """A DT convolution made of folded branches (see the module docstring).

    Args:
        conv: The student's convolution (3x3 stride 1; dense or grouped).
        ratio: The widening ratio ``r``.
        in_widened: Whether the conv's input is widened (False for the first layer).
        out_widened: Whether its output is widened (False for the logits).
        branches: Branch names from :data:`BRANCHES`, including ``origin``.
        init: ``scratch`` or ``student`` (the initial scales, :data:`INIT_SCALES`).
        generator: Draws the extra branches' initial weights.
    """

    def __init__(self, conv: nn.Conv2d, ratio: int, in_widened: bool, out_widened: bool,
                 branches: Sequence[str], init: str, generator: torch.Generator) -> None:
        super().__init__(ratio)
        if "origin" not in branches or any(b not in BRANCHES for b in branches):
            raise ValueError(f"branches must include 'origin' and come from {BRANCHES}")
        self.branches = tuple(branches)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        out, per_group, k = conv.weight.shape[0], conv.weight.shape[1], conv.kernel_size[0]
        groups = conv.groups
        channels = per_group * groups
        dense = groups == 1
        self.student_groups, self.groups = groups, (1 if dense else groups * ratio)
        weight = dense_share(in_widened, out_widened) if dense else grouped_share(True)
        internal = dense_share(in_widened, in_widened) if dense else grouped_share(in_widened)
        shares = {"origin": weight, "scales": Share((1,) if out_widened else ()),
                  "avg_conv": weight, "prior_conv": weight, "id_conv": internal,
                  "id_kxk": weight, "kxk": weight, "dw": grouped_share(in_widened),
                  "pw": weight}
        dtype = conv.weight.dtype

        def draw(*shape: int) -> torch.Tensor:
            return nn.init.kaiming_uniform_(torch.empty(shape, dtype=dtype), a=0.0,
                                            generator=generator)

        scales = INIT_SCALES[init]
        small: dict[str, torch.Tensor] = {
            "scales": torch.tensor([[scales[b]] * out for b in self.branches], dtype=dtype),
            "origin": torch.zeros_like(conv.weight, device="cpu")}
        fixed: dict[str, tuple[torch.Tensor, Share]] = {}
        if "avg" in self.branches:
            small["avg_conv"] = draw(out, per_group, 1, 1)
            fixed["avg_kernel"] = (torch.full((k, k), 1.0 / k ** 2, dtype=dtype), Share())
        if "prior" in self.branches:
            small["prior_conv"] = draw(out, per_group, 1, 1)
            fixed["prior"] = (dct_prior(out, k).to(dtype), Share((0,) if out_widened else ()))
        if "1x1_kxk" in self.branches:
            small["id_conv"] = torch.zeros(channels, per_group, 1, 1, dtype=dtype)
            small["id_kxk"] = draw(out, per_group, k, k)
        if "kxk" in self.branches:
            small["kxk"] = draw(out, per_group, k, k)
        if "dw_pw" in self.branches:
            small["dw"] = draw(EXPAND * channels, 1, k, k)
            small["pw"] = draw(out, EXPAND * channels // groups, 1, 1)
        for name, (value, share) in fixed.items():
            self._add(name, value, share, parameter=False)
        if "1x1_kxk" in self.branches:
            # the DT's identity is its own (block-diagonal); the student's is its leading slice
            wide = ratio if in_widened else 1
            self.register_buffer("identity", identity_1x1(
                channels * wide, per_group * (wide if dense else 1)).to(dtype))
            self.shares["identity"] = Share(((0, 1) if dense else (0,)) if in_widened else ())
            small["identity"] = identity_1x1(channels, per_group).to(dtype)
        # solve the origin kernel so the folded student kernel is the student's own
        rest = fold_branches({**small, **{n: v for n, (v, _) in fixed.items()}},
                             self.branches, groups)
        origin_scale = small["scales"][self.branches.index("origin")].view(-1, 1, 1, 1)
        small["origin"] = (conv.weight.detach().cpu() - rest) / origin_scale
        for name, value in small.items():
            if name != "identity":
                self._add(name, value.to(conv.weight.device), shares[name])
        self._add("bias", conv.bias, bias_share(out_widened))

    def _tensors(self, student: bool) -> dict[str, torch.Tensor]:
        names = [n for n in self.shares if n != "bias"]
        if student:
            return {n: self.shared(n) for n in names}
        return {n: getattr(self, n) for n in names}

    def dt_kernel(self) -> torch.Tensor:
        """The DT's folded kernel."""
        return fold_branches(self._tensors(False), self.branches, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dt_kernel(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def student_tensors(self) -> dict[str, torch.Tensor]:
        out = {"weight": fold_branches(self._tensors(True), self.branches, self.student_groups)}
        if self.bias is not None:
            out["bias"] = self.shared("bias")
        return out
