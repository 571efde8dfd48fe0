"""Latency: how a student's latency is obtained, and which model a search uses.

Three sources, always labelled:

- **measured**: export the student to ONNX, one ONNX Runtime session with the profile's
  providers and threads, the profile's protocol (warm-up runs, timed repeats, a statistic).
  :class:`MeasuredLatency` does this per candidate, cached per canonical sample.
- **table**: a device's latency predictor built by ``gtn-nas profile`` on the device
  (:mod:`gtn_nas.hardware.latency_predictor`, built by :mod:`gtn_nas.hardware.latency_build`): microseconds per
  student.
- **estimated**: a roofline estimate from the profile's peak GFLOP/s and memory bandwidth.

:func:`latency_model` chooses among them (``mode="auto"``: a table that matches this space,
profile and machine; else direct measurement when the profile runs here; else the estimate).
Measurements on a shared machine are noisy: :func:`noise_floor` measures the spread of
repeated measurements of one model, and :func:`measure_interleaved` times several models in
alternating rounds with a reference model, so a load change shows up in the reference.

Example:
    >>> model = latency_model(space, load_profile("host_cpu"), UnitCosts(space))  # doctest: +SKIP
    >>> model(space.preset("s_nas_m")), model.source                            # doctest: +SKIP
    (4.1, 'table')
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from gtn_nas.space.costs import UnitCosts
from gtn_nas.errors import ConfigError
from gtn_nas.space.export import export_onnx, onnx_session
from gtn_nas.hardware.latency_predictor import rebuild_hint
from gtn_nas.space.supernet import SupernetSpace

_log = logging.getLogger(__name__)

MODES = ("auto", "table", "measure", "estimate")

@dataclass(frozen=True)
class LatencyStats:
    """Timings of one model in milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    spread: float  # (p90 - p10) / median
    repeats: int

    def value(self, statistic: str = "median") -> float:
        return {"median": self.median_ms, "mean": self.mean_ms, "p90": self.p90_ms}[statistic]


def summarize(times: Sequence[float]) -> LatencyStats:
    """:class:`LatencyStats` of run times in ms."""
    times = sorted(times)
    median = statistics.median(times)
    p10, p90 = times[int(0.1 * (len(times) - 1))], times[int(0.9 * (len(times) - 1))]
    return LatencyStats(median, p90, statistics.fmean(times), times[0],
                        (p90 - p10) / median if median > 0 else 0.0, len(times))


def providers_for(profile, strict: bool = False) -> list[str]:
    """The profile's providers available here; with ``strict`` its first choice must be."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    usable = [p for p in profile.runtime.providers if p in available]
    first = profile.runtime.providers[0]
    if strict and first not in available:
        raise ConfigError(f"profile {profile.name} runs on {first}, which is not available "
                          f"here (available: {', '.join(sorted(available))}): build its table "
                          f"on the device itself")
    if not usable:
        raise ConfigError(f"profile {profile.name}: none of its providers "
                          f"({', '.join(profile.runtime.providers)}) is available here "
                          f"(available: {', '.join(sorted(available))}); measure on the device")
    return usable


_providers = providers_for  # older name


def time_session(session, feed: Mapping[str, np.ndarray], warmup: int, repeats: int
                 ) -> list[float]:
    """Runs ``session`` ``warmup`` times untimed, then ``repeats`` timed runs; ms per run.

    Every wall-clock measurement of a model goes through here (tests stub it to play a
    busy machine).
    """
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _feed(session, input_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    data = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    return {session.get_inputs()[0].name: data}


def measure_onnx(path: str | os.PathLike, input_shape: tuple[int, ...], providers: list[str],
                 threads: int = 0, warmup: int = 10, repeats: int = 50) -> LatencyStats:
    """Times ``repeats`` runs of the ONNX model at ``path`` after ``warmup`` runs."""
    session = onnx_session(path, providers=providers, threads=threads or None)
    return summarize(time_session(session, _feed(session, input_shape), warmup, repeats))


def export_student(module: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...],
                   profile) -> Path:
    """Exports ``module`` (eval mode, fixed batch) for timing with ``profile``'s opset."""
    return export_onnx(module, path, torch.zeros(input_shape), opset=profile.runtime.opset,
                       dynamic_batch=False)


def measure_module(module: nn.Module, input_shape: tuple[int, ...], profile,
                   workdir: str | os.PathLike | None = None, strict: bool = False
                   ) -> LatencyStats:
    """Exports ``module`` (eval mode) to ONNX and measures it with ``profile``'s runtime
    (``strict``: the profile's first provider must be available)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = export_student(module, Path(tmp) / "model.onnx", input_shape, profile)
        return measure_onnx(path, input_shape, providers_for(profile, strict),
                            profile.runtime.threads, profile.measurement.warmup,
                            profile.measurement.repeats)


def relative_spread(values: Sequence[float]) -> float:
    """Standard deviation over median of repeated measurements (0 for fewer than 2)."""
    if len(values) < 2:
        return 0.0
    median = statistics.median(values)
    return float(statistics.stdev(values) / median) if median > 0 else 0.0


def measure_interleaved(modules: Mapping[str, nn.Module], reference: nn.Module,
                        input_shape: tuple[int, ...], profile, rounds: int = 4,
                        repeats: int | None = None) -> dict[str, Any]:
    """Times ``modules`` in alternating rounds with ``reference`` (ref, a, ref, b, ..., ref).

    Each round runs every model's protocol (``repeats`` runs, default the profile's, after a
    short warm-up) and keeps its statistic; a change of load between rounds shows in the
    reference's rounds, and a model's ratio to the mean of its neighbouring reference rounds
    cancels most of it.

    Returns:
        ``{"rounds": {name: [ms per round]}, "reference": [ms per round], "noise": relative
        spread of the reference's rounds, "ratio": {name: median ratio to the reference}}``.
    """
    statistic = profile.measurement.statistic
    repeats = repeats or profile.measurement.repeats
    warmup = max(1, min(profile.measurement.warmup, 3))
    providers = providers_for(profile)
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name, module in {"__reference__": reference, **modules}.items():
            path = export_student(module, Path(tmp) / f"m{len(sessions)}.onnx", input_shape,
                                  profile)
            session = onnx_session(path, providers=providers,
                                   threads=profile.runtime.threads or None)
            sessions[name] = (session, _feed(session, input_shape))
            time_session(session, sessions[name][1], profile.measurement.warmup, 0)
        per_round: dict[str, list[float]] = {name: [] for name in sessions}
        ratios: dict[str, list[float]] = {name: [] for name in modules}

        def run(name: str) -> float:
            session, feed = sessions[name]
            value = summarize(time_session(session, feed, warmup, repeats)).value(statistic)
            per_round[name].append(value)
            return value

        for _ in range(rounds):
            before = run("__reference__")
            for name in modules:
                value = run(name)
                after = run("__reference__")
                ratios[name].append(value / ((before + after) / 2))
                before = after
    reference_rounds = per_round.pop("__reference__")
    return {"rounds": per_round, "reference": reference_rounds,
            "noise": relative_spread(reference_rounds),
            "ratio": {name: float(statistics.median(r)) for name, r in ratios.items()}}


def noise_floor(module: nn.Module, input_shape: tuple[int, ...], profile, rounds: int = 8
                ) -> dict[str, Any]:
    """The machine's own noise: ``rounds`` measurements of one model with the profile's
    protocol, and their spread (standard deviation over median)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export_student(module, Path(tmp) / "reference.onnx", input_shape, profile)
        session = onnx_session(path, providers=providers_for(profile),
                               threads=profile.runtime.threads or None)
        feed = _feed(session, input_shape)
        time_session(session, feed, profile.measurement.warmup, 0)
        values = [summarize(time_session(session, feed, 1, profile.measurement.repeats))
                  .value(profile.measurement.statistic) for _ in range(rounds)]
    median = statistics.median(values)
    return {"rounds_ms": [round(v, 5) for v in values], "median_ms": round(median, 5),
            "spread": round(relative_spread(values), 5),
            "max_deviation": round(max(abs(v / median - 1) for v in values), 5)}


def student_input_shape(space: SupernetSpace, profile) -> tuple[int, int, int, int]:
    """(profile batch, space channels, space size, space size): what a student is run on.

    The profile's declared input shape builds the space for ``gtn-nas profile`` and a search
    without a teacher; a teacher's space may have another (its data's), which then wins.
    """
    return (profile.input.batch, space.in_channels, space.input_size, space.input_size)


def reachable_steps(space: SupernetSpace, unit_costs: UnitCosts) -> list:
    """Every :class:`PathStep` some student of ``space`` contains (input shapes propagated)."""
    from gtn_nas.space.costs import PathStep

    states = {(space.in_channels, space.input_size)}
    steps = []
    for name in space.units:
        next_states = set()
        for config in space.unit_configs(name):
            for channels, size in sorted(states):
                step = PathStep(name, config, channels, size)
                cost = unit_costs.step_cost(step)
                next_states.add((cost.out_channels, cost.out_size))
                if cost.present:
                    steps.append(step)
        states = next_states
    return steps


def estimate_latency_ms(student: nn.Module, example_input: torch.Tensor, profile) -> float:
    """Roofline estimate: per leaf layer, max(compute time, memory time), summed.

    Compute time = 2 x multiply-adds / peak FLOP/s; memory time = (weights + input + output
    bytes) / bandwidth; 2 bytes per value at fp16, else 4. Crude by design: it ignores kernel
    launch overheads and caches, and is always labelled "estimated".
    """
    from gtn_nas.space.costs import _flop_analysis

    by_module = _flop_analysis(student, example_input).by_module()
    bytes_per_value = 2 if profile.runtime.precision == "fp16" else 4
    activations: dict[str, int] = {}
    hooks = []
    for name, module in student.named_modules():
        if not list(module.children()):
            def hook(mod, inputs, output, name=name):
                activations[name] = sum(t.numel() for t in inputs if isinstance(t, torch.Tensor)) \
                    + output.numel()
            hooks.append(module.register_forward_hook(hook))
    try:
        was_training = student.training
        student.eval()
        with torch.no_grad():
            student(example_input)
        student.train(was_training)
    finally:
        for handle in hooks:
            handle.remove()
    peak = profile.device.peak_gflops * 1e9
    bandwidth = profile.device.memory_bandwidth_gbs * 1e9
    total = 0.0
    modules = dict(student.named_modules())
    for name, values in activations.items():
        weights = sum(p.numel() for p in modules[name].parameters(recurse=False))
        compute = 2 * by_module.get(name, 0) / peak
        memory = (weights + values) * bytes_per_value / bandwidth
        total += max(compute, memory)
    return total * 1e3


# ----------------------------------------------------------------------------- latency models
class EstimatedLatency:
    """Roofline estimate from the profile's device facts (source ``estimated``).

    The estimate is a sum over layers, so it is computed once per unit step and cached.
    """

    source = "estimated"

    def __init__(self, space: SupernetSpace, profile, unit_costs: UnitCosts) -> None:
        self.space, self.profile, self.unit_costs = space, profile, unit_costs
        self._cache: dict[Any, float] = {}

    def step_ms(self, step) -> float:
        if step not in self._cache:
            module = self.unit_costs.module(step)
            x = torch.zeros(self.profile.input.batch, step.in_channels, step.in_size,
                            step.in_size)
            self._cache[step] = 0.0 if module is None else estimate_latency_ms(module, x,
                                                                               self.profile)
        return self._cache[step]

    def __call__(self, sample: Mapping[str, Any]) -> float:
        return sum(self.step_ms(step) for step, cost in self.unit_costs.steps(sample)
                   if cost.present)

    def finish(self, parts_ms: float) -> float:
        return parts_ms


class MeasuredLatency:
    """Latency measured here with ONNX Runtime, once per canonical sample (source
    ``measured``): export, the profile's providers, threads and protocol.

    For a machine without a matching table, and for inputs so small (8x8 digits) that fixed
    per-call costs dominate and a table cannot resolve them. Each new student costs an export
    and the protocol's runs (tens of ms at 8x8, about a second at 32x32 width 1).
    """

    source = "measured"

    def __init__(self, space: SupernetSpace, profile, unit_costs: UnitCosts | None = None
                 ) -> None:
        providers_for(profile, strict=True)
        self.space, self.profile = space, profile
        self.shape = student_input_shape(space, profile)
        self.cache: dict[tuple, float] = {}

    def __call__(self, sample: Mapping[str, Any]) -> float:
        canonical = self.space.validate(sample)
        key = tuple(canonical.items())
        if key not in self.cache:
            student = self.space.freeze(canonical, seed=0).eval()
            stats = measure_module(student, self.shape, self.profile)
            self.cache[key] = stats.value(self.profile.measurement.statistic)
        return self.cache[key]


def latency_model(space: SupernetSpace, profile, unit_costs: UnitCosts,
                  table_path: str | os.PathLike | None = None, mode: str = "auto",
                  max_table_mape: float = 0.15):
    """The latency model a search uses for ``profile``.

    Args:
        space: The space (its input size and options must match a table's).
        profile: The device profile.
        unit_costs: The space's per-unit costs.
        table_path: A table file (default: the profile's ``latency_table``).
        mode: ``table`` (a matching table or an error), ``measure`` (ONNX Runtime here, per
            candidate), ``estimate`` (roofline), or ``auto``: a table that matches the space,
            profile and (for a profile that runs here) this machine, and whose validation
            MAPE is at most ``max_table_mape``; else measurement when the profile runs here;
            else the estimate. A table named by ``table_path`` must match.
        max_table_mape: In ``auto`` mode, a table validated worse than this is not used when
            the profile runs here (small inputs a table cannot resolve).

    Returns:
        A callable ``sample -> ms`` with a ``source`` attribute, or None in ``auto`` mode when
        no tier has a latency budget and there is no usable table (nothing is measured then).
    """
    from gtn_nas.hardware.latency_predictor import LatencyTable, TableLatency

    if mode not in MODES:
        raise ConfigError(f"unknown latency mode '{mode}'; modes: {', '.join(MODES)}")
    if mode == "estimate":
        return EstimatedLatency(space, profile, unit_costs)
    if mode == "measure":
        return MeasuredLatency(space, profile, unit_costs)
    path = Path(table_path) if table_path is not None else profile.latency_table_path()
    if path is not None and path.is_dir():
        raise ConfigError(f"latency table {path} is a directory, not a file")
    if mode == "table" or table_path is not None:
        if path is None:
            raise ConfigError(f"profile {profile.name} names no latency_table; build one with: "
                              f"{rebuild_hint(profile, space)} --out FILE")
        return TableLatency(LatencyTable.load(path, space, profile), unit_costs)
    runs_here = profile.device.runs_here
    wanted = any("latency_ms" in b.limits() for b in profile.budgets.values())
    if path is not None and path.is_file():
        try:
            table = LatencyTable.load(path, space, profile)
        except ConfigError as exc:
            if not runs_here:
                raise
            reason = str(exc)
        else:
            mape = table.validation.get("mape")
            if not (runs_here and mape is not None and mape > max_table_mape):
                return TableLatency(table, unit_costs)
            reason = (f"latency table {path} validated at MAPE {mape * 100:.1f}% "
                      f"(> {max_table_mape * 100:.0f}%) for these students")
        if not wanted:
            _log.warning("%s; no tier has a latency budget, so latency is left out", reason)
            return None
        _log.warning("%s; measuring candidates directly instead", reason)
        return MeasuredLatency(space, profile, unit_costs)
    if not wanted:
        return None
    if runs_here:
        _log.warning("profile %s has no latency table here; measuring every candidate with "
                     "ONNX Runtime (slow; build a table with: %s)", profile.name,
                     rebuild_hint(profile, space))
        return MeasuredLatency(space, profile, unit_costs)
    _log.warning("profile %s has no latency table; latencies are ESTIMATED from its device "
                 "facts (build a table on the device: %s)", profile.name,
                 rebuild_hint(profile, space))
    return EstimatedLatency(space, profile, unit_costs)
