"""Latency: ONNX Runtime measurement, per-device lookup tables, and a labelled estimate.

- **Measured**: export the student to ONNX, one ORT session with the profile's providers and
  threads, warm-up runs, then timed repeats; median, p90 and spread are reported.
- **Table**: ``gtn-nas profile`` on the device measures every unit step a student can contain
  (unit, choices, input shape: :class:`gtn_nas.costs.PathStep`), fits the end-to-end overhead
  on a few whole students, and validates on held-out random students. A prediction is the sum
  of a student's steps plus the overhead, never below the floor (one call of a one-op model on
  the student's input): microseconds per student.
- **Estimated**: without a table for a device that is not this machine, a roofline estimate
  from the profile's peak GFLOP/s and memory bandwidth; always labelled ``estimated``.

Example:
    >>> table = build_latency_table(space, load_profile("host_cpu"))      # doctest: +SKIP
    >>> table.predict(space.preset("s_nas_m"))                             # doctest: +SKIP
    4.1
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from gtn_nas.config import to_plain
from gtn_nas.costs import UnitCosts
from gtn_nas.errors import ConfigError
from gtn_nas.export import export_onnx, onnx_session
from gtn_nas.fileio import atomic_write_text
from gtn_nas.space import SupernetSpace

TABLE_FORMAT = "gtn-nas-latency-table/1"


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


def _providers(profile, strict: bool = False) -> list[str]:
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


def measure_onnx(path: str | os.PathLike, input_shape: tuple[int, ...], providers: list[str],
                 threads: int = 0, warmup: int = 10, repeats: int = 50) -> LatencyStats:
    """Times ``repeats`` runs of the ONNX model at ``path`` after ``warmup`` runs."""
    session = onnx_session(path, providers=providers, threads=threads or None)
    name = session.get_inputs()[0].name
    feed = {name: np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    median = statistics.median(times)
    p10, p90 = times[int(0.1 * (len(times) - 1))], times[int(0.9 * (len(times) - 1))]
    return LatencyStats(median, p90, statistics.fmean(times), times[0],
                        (p90 - p10) / median if median > 0 else 0.0, len(times))


def measure_module(module: nn.Module, input_shape: tuple[int, ...], profile,
                   workdir: str | os.PathLike | None = None, strict: bool = False
                   ) -> LatencyStats:
    """Exports ``module`` (eval mode) to ONNX and measures it with ``profile``'s runtime
    (``strict``: the profile's first provider must be available)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = export_onnx(module, Path(tmp) / "model.onnx", torch.zeros(input_shape),
                           opset=profile.runtime.opset, dynamic_batch=False)
        return measure_onnx(path, input_shape, _providers(profile, strict),
                            profile.runtime.threads, profile.measurement.warmup,
                            profile.measurement.repeats)


def student_input_shape(space: SupernetSpace, profile) -> tuple[int, int, int, int]:
    """(profile batch, space channels, space size, space size): what a student is run on.

    The profile's declared input shape builds the space for ``gtn-nas profile`` and a search
    without a teacher; a teacher's space may have another (its data's), which then wins.
    """
    return (profile.input.batch, space.in_channels, space.input_size, space.input_size)


def machine_facts() -> dict[str, Any]:
    """What a table was measured on."""
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__, "torch": torch.__version__,
            "machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


@dataclass
class LatencyTable:
    """Per-step latencies of a space on one device, plus the fitted end-to-end overhead."""

    profile: str
    space: str
    space_options: dict[str, Any]
    input_shape: tuple[int, ...]
    statistic: str
    entries: dict[str, float]
    overhead_ms: float = 0.0
    floor_ms: float = 0.0
    providers: tuple[str, ...] = ()
    machine: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    format: str = TABLE_FORMAT

    def parts(self, sample: Mapping[str, Any], unit_costs: UnitCosts) -> list[tuple[str, float]]:
        """``(step key, ms)`` of every present unit of ``sample``'s student."""
        parts = []
        for step, cost in unit_costs.steps(sample):
            if not cost.present:
                continue
            key = step.key()
            if key not in self.entries:
                raise ConfigError(f"latency table of {self.profile} has no entry {key}: it was "
                                  f"built for another space or options; rebuild it")
            parts.append((key, self.entries[key]))
        return parts

    def predict(self, sample: Mapping[str, Any], unit_costs: UnitCosts) -> float:
        """Sum of the student's parts plus the overhead, in ms (never below the floor: the
        measured cost of one call of a one-op model)."""
        return self.finish(sum(ms for _, ms in self.parts(sample, unit_costs)))

    def finish(self, parts_ms: float) -> float:
        return max(parts_ms + self.overhead_ms, self.floor_ms)

    def save(self, path: str | os.PathLike) -> Path:
        data = to_plain(asdict(self))
        return atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike, space: SupernetSpace | None = None,
             profile: Any = None) -> "LatencyTable":
        """Reads a table; with ``space``/``profile`` given, checks it was built for them."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"latency table {path} does not exist (build it on the device "
                              f"with: gtn-nas profile --hw PROFILE)")
        try:
            data = json.loads(path.read_text())
            data["input_shape"] = tuple(data["input_shape"])
            data["providers"] = tuple(data.get("providers", ()))
            table = cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{path}: not a gtn-nas latency table ({exc})") from exc
        if table.format != TABLE_FORMAT:
            raise ConfigError(f"{path}: table format {table.format}, expected {TABLE_FORMAT}")
        if space is not None and (table.space != space.spec or
                                  table.space_options != to_plain(space.options)):
            raise ConfigError(f"{path} was built for space {table.space} "
                              f"{table.space_options}, not {space.spec} "
                              f"{to_plain(space.options)}; rebuild it with gtn-nas profile")
        if profile is not None:
            if table.profile != profile.name:
                raise ConfigError(f"{path} was built for profile {table.profile}, not "
                                  f"{profile.name}")
            if table.input_shape[0] != profile.input.batch or \
                    table.statistic != profile.measurement.statistic:
                raise ConfigError(f"{path} holds batch-{table.input_shape[0]} "
                                  f"{table.statistic} latencies; the profile asks for batch "
                                  f"{profile.input.batch}, {profile.measurement.statistic}")
        return table


def reachable_steps(space: SupernetSpace, unit_costs: UnitCosts) -> list:
    """Every :class:`PathStep` some student of ``space`` contains (input shapes propagated)."""
    from gtn_nas.costs import PathStep

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


def build_latency_table(space: SupernetSpace, profile, *, seed: int = 0,
                        overhead_students: int = 8, validation_students: int = 20,
                        progress: Callable[[str, int, int], None] | None = None
                        ) -> LatencyTable:
    """Measures every reachable step on this machine, fits the overhead, validates.

    Args:
        space: The search space.
        profile: The device profile (its runtime and measurement protocol are used).
        seed: Seeds the whole students used for the overhead fit and the validation.
        overhead_students: Random whole students measured to fit the overhead.
        validation_students: Held-out random students for MAPE and share within +-10%.
        progress: ``progress(phase, done, total)`` callback.
    """
    shape = student_input_shape(space, profile)
    batch = shape[0]
    unit_costs = UnitCosts(space)
    steps = reachable_steps(space, unit_costs)
    entries: dict[str, float] = {}
    statistic = profile.measurement.statistic
    providers = _providers(profile, strict=True)
    floor = measure_module(nn.ReLU(), shape, profile).value(statistic)
    for i, step in enumerate(steps):
        step_shape = (batch, step.in_channels, step.in_size, step.in_size)
        stats = measure_module(unit_costs.module(step).eval(), step_shape, profile)
        entries[step.key()] = stats.value(statistic)
        if progress:
            progress("steps", i + 1, len(steps))
    table = LatencyTable(profile.name, space.spec, to_plain(space.options), shape, statistic,
                         entries, 0.0, floor, tuple(providers), machine_facts())
    # Overhead: measured whole students minus the sum of their parts (median).
    residuals = []
    for i in range(overhead_students):
        sample = space.sample(seed * 100_003 + i)
        measured = measure_module(space.freeze(sample, seed=0).eval(), shape,
                                  profile).value(statistic)
        residuals.append(measured - table.predict(sample, unit_costs))
        if progress:
            progress("overhead", i + 1, overhead_students)
    table.overhead_ms = float(statistics.median(residuals)) if residuals else 0.0
    table.validation = validate_table(table, space, profile, seed=seed + 1,
                                      students=validation_students, unit_costs=unit_costs,
                                      progress=progress)
    return table


def validate_table(table: LatencyTable, space: SupernetSpace, profile, *, seed: int,
                   students: int, unit_costs: UnitCosts | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Predicted vs measured on ``students`` random students: MAPE and share within +-10%."""
    unit_costs = unit_costs or UnitCosts(space)
    shape = student_input_shape(space, profile)
    errors, rows = [], []
    for i in range(students):
        sample = space.sample(seed * 100_003 + 50_000 + i)
        predicted = table.predict(sample, unit_costs)
        measured = measure_module(space.freeze(sample, seed=0).eval(), shape,
                                  profile).value(table.statistic)
        errors.append(abs(predicted - measured) / measured)
        rows.append({"predicted_ms": round(predicted, 4), "measured_ms": round(measured, 4)})
        if progress:
            progress("validation", i + 1, students)
    if not errors:
        return {}
    return {"students": students, "mape": float(np.mean(errors)),
            "within_10pct": float(np.mean([e <= 0.10 for e in errors])), "rows": rows}


def estimate_latency_ms(student: nn.Module, example_input: torch.Tensor, profile) -> float:
    """Roofline estimate: per leaf layer, max(compute time, memory time), summed.

    Compute time = 2 x multiply-adds / peak FLOP/s; memory time = (weights + input + output
    bytes) / bandwidth; 2 bytes per value at fp16, else 4. Crude by design: it ignores kernel
    launch overheads and caches, and is always labelled "estimated".
    """
    from gtn_nas.costs import _flop_analysis

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
class TableLatency:
    """Latency from a device's lookup table (source ``table``): the sum of the student's steps
    plus the fitted overhead, never below the table's floor (one call of a one-op model)."""

    source = "table"

    def __init__(self, table: LatencyTable, unit_costs: UnitCosts) -> None:
        self.table, self.unit_costs = table, unit_costs

    def __call__(self, sample: Mapping[str, Any]) -> float:
        return self.table.predict(sample, self.unit_costs)

    def step_ms(self, step) -> float:
        return self.table.entries.get(step.key(), float("inf"))

    def finish(self, parts_ms: float) -> float:
        """A sum of parts turned into a prediction (overhead and floor applied)."""
        return self.table.finish(parts_ms)


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


def latency_model(space: SupernetSpace, profile, unit_costs: UnitCosts,
                  table_path: str | os.PathLike | None = None):
    """The table (``table_path``, else the profile's, checked against both) when it exists,
    else the roofline estimate; None when no tier has a latency budget and there is no table."""
    import logging

    path = Path(table_path) if table_path is not None else profile.latency_table_path()
    if path is not None and path.is_dir():
        raise ConfigError(f"latency table {path} is a directory, not a file")
    if table_path is not None or (path is not None and path.is_file()):
        return TableLatency(LatencyTable.load(path, space, profile), unit_costs)
    if not any("latency_ms" in b.limits() for b in profile.budgets.values()):
        return None
    where = "this machine" if profile.device.runs_here else "the device"
    logging.getLogger(__name__).warning(
        "profile %s has no latency table; latencies are ESTIMATED from its device facts "
        "(build a table on %s: gtn-nas profile --hw ...)", profile.name, where)
    return EstimatedLatency(space, profile, unit_costs)
