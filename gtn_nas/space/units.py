"""Reusable supernet units shared by search spaces: a fixed stem and an elastic classifier head.

Spaces compose these, and :class:`CandidateUnit` (a ``LayerChoice``-like pick among candidate
modules of the same shape), with their own reconfigurable units (see ``search_spaces/``). Both follow
:class:`gtn_nas.space.supernet.SupernetUnit`: a weight-sharing ``forward(x, sample)`` and
``materialize(sample, in_channels, inherit_weights)`` building the plain module of a student.

Example:
    >>> stem = StemUnit(3, 16)
    >>> module, width = stem.materialize({}, 3, inherit_weights=True)
    >>> width
    16
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import nni
import torch
from nni.mutable import label_scope
from torch import nn

from gtn_nas.space.elastic import ElasticClassifierHead, copy_leading_slices
from gtn_nas.space.layers import ClassifierHead, ConvBN
from gtn_nas.space.supernet import SupernetUnit


def scale_channels(channels: int, width_mult: float, divisor: int = 4) -> int:
    """``channels * width_mult`` rounded to a multiple of ``divisor`` (at least ``divisor``).

    Example:
        >>> scale_channels(64, 0.25), scale_channels(1280, 0.25), scale_channels(16, 0.1)
        (16, 320, 4)
    """
    return max(divisor, int(round(channels * width_mult / divisor)) * divisor)


class StemUnit(SupernetUnit):
    """A fixed 3x3 conv + BN + ReLU stem (no choices)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.in_channels, self.width = in_channels, out_channels
        self.stem = ConvBN(in_channels, out_channels, kernel_size=3, stride=stride)

    def forward(self, x: torch.Tensor, sample: Mapping[str, Any]) -> torch.Tensor:
        return self.stem(x)

    def out_channels(self, sample: Mapping[str, Any], in_channels: int) -> int:
        return self.width

    def materialize(self, sample: Mapping[str, Any], in_channels: int,
                    inherit_weights: bool) -> tuple[nn.Module, int]:
        if in_channels != self.in_channels:
            raise ValueError(f"stem expects {self.in_channels} input channels, got {in_channels}")
        if inherit_weights:
            return copy.deepcopy(self.stem), self.width
        conv = self.stem.conv
        return ConvBN(self.in_channels, self.width, 3, conv.stride[0]), self.width


class ClassifierHeadUnit(SupernetUnit):
    """The elastic head: 1x1 conv to ``hidden`` from any input width, pool, linear classifier."""

    def __init__(self, max_in_channels: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.hidden, self.num_classes = hidden, num_classes
        self.head = ElasticClassifierHead(max_in_channels, hidden, num_classes)

    def forward(self, x: torch.Tensor, sample: Mapping[str, Any]) -> torch.Tensor:
        return self.head(x)

    def out_channels(self, sample: Mapping[str, Any], in_channels: int) -> int:
        return self.num_classes

    def materialize(self, sample: Mapping[str, Any], in_channels: int,
                    inherit_weights: bool) -> tuple[nn.Module, int]:
        head = ClassifierHead(in_channels, self.hidden, self.num_classes)
        if inherit_weights:
            copy_leading_slices(self.head, head)
        return head, self.num_classes


class CandidateUnit(SupernetUnit):
    """Chooses one of several candidate modules with the same input and output shape.

    The counterpart of NNI's ``LayerChoice`` on the unit contract: one label ``<scope>/<name>``
    whose values are the candidate names; each candidate keeps its own weights.

    Args:
        scope: Label scope (``block2``).
        name: Label name inside the scope (``op``).
        candidates: Candidate name -> zero-argument builder of a plain module.
        in_channels: Input width every candidate takes.
        out_channels: Output width every candidate gives.

    Example:
        >>> unit = CandidateUnit("block1", "op", {"conv3": lambda: ConvBN(8, 8, 3),
        ...                                        "conv5": lambda: ConvBN(8, 8, 5)}, 8, 8)
        >>> unit.labels()
        ['block1/op']
    """

    def __init__(self, scope: str, name: str, candidates: Mapping[str, Callable[[], nn.Module]],
                 in_channels: int, out_channels: int) -> None:
        super().__init__()
        if not candidates:
            raise ValueError(f"{scope}/{name}: at least one candidate is needed")
        with label_scope(scope):
            self.choice = self.add_mutable(nni.choice(name, list(candidates)))
        self.builders = dict(candidates)
        self.candidates = nn.ModuleDict({key: build() for key, build in candidates.items()})
        self.in_channels, self.width = in_channels, out_channels

    def forward(self, x: torch.Tensor, sample: Mapping[str, Any]) -> torch.Tensor:
        return self.candidates[sample[self.choice.label]](x)

    def out_channels(self, sample: Mapping[str, Any], in_channels: int) -> int:
        return self.width

    def materialize(self, sample: Mapping[str, Any], in_channels: int,
                    inherit_weights: bool) -> tuple[nn.Module, int]:
        if in_channels != self.in_channels:
            raise ValueError(f"{self.choice.label}: candidates take {self.in_channels} input "
                             f"channels, got {in_channels}")
        key = sample[self.choice.label]
        module = copy.deepcopy(self.candidates[key]) if inherit_weights else self.builders[key]()
        return module, self.width
