"""Cost models: FLOPs and parameter counts of students, through fvcore.

Convention: FLOPs are fvcore's, which counts one multiply-add as one FLOP (i.e. MACs) for
convolutions and linear layers, 2 per element for an inference-mode batch norm with affine
parameters, and 1 per input element for adaptive average pooling; additions (residuals) and
activations are not counted. Counts are taken in eval mode at batch size 1.

Every cost model follows one contract, ``cost(sample) -> float``, so the search can combine them
with latency models later; each caches by canonical sample.

Example:
    >>> from gtn_nas.space.plugins import build_space                       # doctest: +SKIP
    >>> space = build_space("resnet_supernet")                        # doctest: +SKIP
    >>> FlopsCost(space).cost(space.preset("s_nas_s")) / 1e6          # doctest: +SKIP
    130.4...
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import torch
from torch import nn

from gtn_nas.space.layers import LayerRow, describe_module
from gtn_nas.space.supernet import SupernetSpace

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


@dataclass(frozen=True)
class PathStep:
    """One unit of a student as a cost-table key: the unit, its (canonical) choices, and the
    shape of its input (channels, square size)."""

    unit: str
    config: tuple[Any, ...]
    in_channels: int
    in_size: int

    def key(self) -> str:
        return f"{self.unit}|{','.join(map(str, self.config))}|{self.in_channels}x{self.in_size}"


@dataclass(frozen=True)
class StepCost:
    """What one :class:`PathStep` costs and produces (``present`` is False for a dropped unit)."""

    present: bool
    params: int
    flops: int
    out_channels: int
    out_size: int


class UnitCosts:
    """Per-unit costs of a space's students, computed once per :class:`PathStep` and cached.

    A student's parameters and FLOPs are the sums over its units (fvcore counts module by
    module), so after the first few hundred distinct steps every student costs microseconds.
    Latency tables (:mod:`gtn_nas.hardware.latency`) use the same steps as keys.

    Example:
        >>> costs = UnitCosts(space)                             # doctest: +SKIP
        >>> costs.flops(space.preset("s_nas_s")) / 1e6            # doctest: +SKIP
        188.2...
    """

    def __init__(self, space: SupernetSpace) -> None:
        self.space = space
        self._cache: dict[PathStep, StepCost] = {}

    def steps(self, sample: Mapping[str, Any]) -> list[tuple[PathStep, StepCost]]:
        """The units of ``sample``'s student, in order, with their costs."""
        canonical = self.space.validate(sample)
        channels, size = self.space.in_channels, self.space.input_size
        walked = []
        for name, unit in self.space.units.items():
            step = PathStep(name, tuple(canonical[label] for label in unit.labels()),
                            channels, size)
            cost = self.step_cost(step)
            walked.append((step, cost))
            channels, size = cost.out_channels, cost.out_size
        return walked

    def module(self, step: PathStep) -> nn.Module | None:
        """The plain module of ``step`` (fresh weights), None when the unit is dropped."""
        unit = self.space.units[step.unit]
        config = dict(zip(unit.labels(), step.config))
        module, _ = unit.materialize(config, step.in_channels, False)
        return module

    def example_input(self, step: PathStep) -> torch.Tensor:
        return torch.zeros(1, step.in_channels, step.in_size, step.in_size)

    def step_cost(self, step: PathStep) -> StepCost:
        cached = self._cache.get(step)
        if cached is not None:
            return cached
        module = self.module(step)
        if module is None:
            cost = StepCost(False, 0, 0, step.in_channels, step.in_size)
        else:
            module.eval()
            x = self.example_input(step)
            with torch.no_grad():
                out = module(x)
            out_size = out.shape[-1] if out.dim() == 4 else 1
            cost = StepCost(True, count_params(module), count_flops(module, x), out.shape[1],
                            out_size)
        self._cache[step] = cost
        return cost

    def flops(self, sample: Mapping[str, Any]) -> int:
        return sum(cost.flops for _, cost in self.steps(sample))

    def params(self, sample: Mapping[str, Any]) -> int:
        return sum(cost.params for _, cost in self.steps(sample))


class CostModel(Protocol):
    """``cost(sample) -> float`` for the samples of one space."""

    name: str
    unit: str
    source: str

    def cost(self, sample: Mapping[str, Any]) -> float: ...


class FlopsCost:
    """FLOPs (fvcore convention, batch 1) of a sample's student at the space's input size."""

    name, unit, source = "flops", "FLOPs", "fvcore"

    def __init__(self, space: SupernetSpace, unit_costs: UnitCosts | None = None) -> None:
        self.space = space
        self.unit_costs = unit_costs or UnitCosts(space)

    def cost(self, sample: Mapping[str, Any]) -> float:
        return float(self.unit_costs.flops(sample))


class ParamsCost(FlopsCost):
    """Parameter count of a sample's student."""

    name, unit, source = "params", "parameters", "count"

    def cost(self, sample: Mapping[str, Any]) -> float:
        return float(self.unit_costs.params(sample))


# ----------------------------------------------------------------------------- tables
LAYER_HEADERS = ("module", "type", "in", "out", "kernel", "stride", "params", "MFLOPs")


def layer_table_rows(costs: Sequence[LayerCost]) -> list[list[Any]]:
    """Rows for :data:`LAYER_HEADERS` (the supplement's columns plus params and MFLOPs)."""
    return [[c.module, c.row.type, c.row.in_channels, c.row.out_channels, c.row.kernel,
             c.row.stride, f"{c.params:,}", f"{c.flops / 1e6:.3f}"] for c in costs]


def layer_table_json(costs: Sequence[LayerCost]) -> list[dict[str, Any]]:
    """The layer table as JSON-ready dicts (FLOPs as integers)."""
    return [{"module": c.module, "type": c.row.type, "in": c.row.in_channels,
             "out": c.row.out_channels, "kernel": c.row.kernel, "stride": c.row.stride,
             "params": c.params, "flops": c.flops} for c in costs]
