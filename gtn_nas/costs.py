"""Cost models: FLOPs and parameter counts of students, through fvcore.

Convention: FLOPs are fvcore's, which counts one multiply-add as one FLOP (i.e. MACs) for
convolutions and linear layers, 2 per element for an inference-mode batch norm with affine
parameters, and 1 per input element for adaptive average pooling; additions (residuals) and
activations are not counted. Counts are taken in eval mode at batch size 1.

Every cost model follows one contract, ``cost(sample) -> float``, so the search can combine them
with latency models later; each caches by canonical sample.

Example:
    >>> from gtn_nas.plugins import build_space                       # doctest: +SKIP
    >>> space = build_space("resnet_supernet")                        # doctest: +SKIP
    >>> FlopsCost(space).cost(space.preset("s_nas_s")) / 1e6          # doctest: +SKIP
    130.4...
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

import torch
from torch import nn

from gtn_nas.layers import LayerRow, describe_module
from gtn_nas.space import SupernetSpace

_FVCORE_LOGGERS = ("fvcore.nn.jit_analysis", "fvcore.nn.jit_handles")


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def _flop_analysis(model: nn.Module, example_input: torch.Tensor):
    with warnings.catch_warnings():  # fvcore's import touches the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    analysis = FlopCountAnalysis(model, example_input)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    loggers = [logging.getLogger(name) for name in _FVCORE_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis.total()  # runs the trace once; later queries reuse it
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        model.train(was_training)
    return analysis


def count_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """fvcore FLOPs (multiply-adds counted once) of one forward pass on ``example_input``."""
    return int(_flop_analysis(model, example_input).total())


@dataclass(frozen=True)
class LayerCost:
    """A layer-table row with the parameters and FLOPs of the module it stands for."""

    module: str
    row: LayerRow
    params: int
    flops: int


def layer_costs(model: nn.Module, example_input: torch.Tensor) -> list[LayerCost]:
    """One :class:`LayerCost` per described layer of ``model`` (see ``layers.describe_module``).

    The rows' FLOPs add up to :func:`count_flops` when every FLOP-carrying module is described.
    """
    by_module = _flop_analysis(model, example_input).by_module()
    modules = dict(model.named_modules())
    costs = []
    for name, row in describe_module(model):
        costs.append(LayerCost(name, row, count_params(modules[name]), int(by_module.get(name, 0))))
    return costs


class CostModel(Protocol):
    """``cost(sample) -> float`` for the samples of one space."""

    name: str
    unit: str
    source: str

    def cost(self, sample: Mapping[str, Any]) -> float: ...


class _CachedCost:
    name = "?"
    unit = "?"
    source = "fvcore"

    def __init__(self, space: SupernetSpace) -> None:
        self.space = space
        self._cache: dict[tuple, float] = {}

    def cost(self, sample: Mapping[str, Any]) -> float:
        canonical = self.space.validate(sample)
        key = tuple(canonical.items())
        if key not in self._cache:
            self._cache[key] = float(self._compute(self.space.freeze(canonical, seed=0)))
        return self._cache[key]

    def _compute(self, student: nn.Module) -> float:
        raise NotImplementedError


class FlopsCost(_CachedCost):
    """FLOPs (fvcore convention, batch 1) of a sample's student at the space's input size."""

    name, unit = "flops", "FLOPs"

    def _compute(self, student: nn.Module) -> float:
        return count_flops(student, self.space.example_input())


class ParamsCost(_CachedCost):
    """Parameter count of a sample's student."""

    name, unit, source = "params", "parameters", "count"

    def _compute(self, student: nn.Module) -> float:
        return count_params(student)
