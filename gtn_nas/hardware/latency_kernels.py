"""The fused kernels ONNX Runtime executes for a student, timed in context.

ONNX Runtime rewrites an exported student before running it: BatchNorm is folded into the
convolution at export, Conv+ReLU and Conv+Add(+ReLU) become one fused kernel, and on CPU the
graph moves to a blocked (NCHWc) layout with reorder nodes where layouts change. A sum of
units timed one by one cannot see any of that. :func:`measure_student` therefore times a whole
student twice from one export: plainly with the profile's protocol (the figure a predictor
must reproduce), and with ONNX Runtime's profiler on, which reports every kernel it ran with
its op, shapes and duration. Each kernel is attributed to the student's unit whose module
scope produced it (``/layer3/...``); nodes ONNX Runtime inserted itself (layout reorders) go to
the unit that consumes them, which is where they cost time in that context.

A kernel's *signature* is its op, input shapes and output shape (plus a fused activation), so
the same kernel seen in different students and positions is one table entry.

Example:
    >>> run = measure_student(student, (1, 3, 32, 32), profile)      # doctest: +SKIP
    >>> run.measured_ms, run.units["layer1"][0]                      # doctest: +SKIP
    (5.1, ('Conv|1x16x32x32,64x16x3x3,64>1x64x32x32+Relu', 0.196))
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from gtn_nas.space.export import onnx_session
from gtn_nas.hardware.latency import (LatencyStats, export_student, providers_for, summarize,
                             time_session, _feed)

ACTIVATIONS = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh",
               "Gelu", "Silu")


@dataclass
class StudentRun:
    """One measured student: the protocol's statistic and its kernels per unit (ms each)."""

    stats: LatencyStats
    measured_ms: float
    units: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    def kernel_ms(self) -> float:
        return sum(ms for kernels in self.units.values() for _, ms in kernels)


def _shape(entry: Any) -> str:
    if isinstance(entry, dict) and entry:
        entry = next(iter(entry.values()))
    return "x".join(str(v) for v in entry) if isinstance(entry, list) else "?"


def kernel_signature(op: str, node: str, inputs: list, outputs: list) -> str:
    """``op|input shapes>output shapes[+activation]`` of one executed kernel."""
    last = node.rsplit("/", 1)[-1].split("_", 1)[0]
    act = f"+{last}" if last != op and last in ACTIVATIONS else ""
    return (f"{op}|{','.join(_shape(i) for i in inputs)}>"
            f"{','.join(_shape(o) for o in outputs)}{act}")


def parse_profile(events: list[dict[str, Any]], units: list[str], skip: int
                  ) -> dict[str, list[tuple[str, float]]]:
    """Kernels per unit from ONNX Runtime profiler events (median ms over the timed runs).

    Args:
        events: The profiler's JSON events.
        units: The student's unit names, in order (its module scopes).
        skip: Runs per node to ignore at the start (warm-up).
    """
    durations: dict[str, list[float]] = defaultdict(list)
    info: dict[str, tuple[str, str]] = {}
    order: list[str] = []
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        if node not in info:
            args = event.get("args", {})
            op = args.get("op_name", "?")
            info[node] = (op, kernel_signature(op, node, args.get("input_type_shape", []),
                                               args.get("output_type_shape", [])))
            order.append(node)
        durations[node].append(float(event.get("dur", 0)) / 1e3)
    known = set(units)
    per_unit: dict[str, list[tuple[str, float]]] = {unit: [] for unit in units}
    pending: list[tuple[str, float]] = []
    last_unit = units[-1] if units else None
    for node in order:
        times = durations[node][skip:] or durations[node]
        kernel = (info[node][1], float(statistics.median(times)))
        parts = node.split("/")
        unit = parts[1] if node.startswith("/") and len(parts) > 2 and parts[1] in known else \
            next((u for u in units if f"/{u}/" in node), None)
        if unit is None:
            pending.append(kernel)  # inserted by ONNX Runtime: goes to its consumer
            continue
        per_unit[unit].extend(pending)
        per_unit[unit].append(kernel)
        pending = []
    if pending and last_unit is not None:
        per_unit[last_unit].extend(pending)
    return per_unit


def measure_student(student: nn.Module, input_shape: tuple[int, ...], profile,
                    profiled_runs: int = 10, workdir: str | None = None) -> StudentRun:
    """Times ``student`` with the profile's protocol, then profiles its kernels in context.

    Args:
        student: A frozen student (an ``nn.Sequential`` of units named after the space's).
        input_shape: The input batch shape.
        profile: The device profile (providers, threads, protocol).
        profiled_runs: Profiled runs after 2 warm-up runs (kernel times are their medians).
        workdir: Folder for the temporary export and the profiler's file.
    """
    import onnxruntime as ort

    units = [name for name, _ in student.named_children()]
    providers = providers_for(profile)
    threads = profile.runtime.threads
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = export_student(student.eval(), Path(tmp) / "student.onnx", input_shape, profile)
        session = onnx_session(path, providers=providers, threads=threads or None)
        feed = _feed(session, input_shape)
        stats = summarize(time_session(session, feed, profile.measurement.warmup,
                                       profile.measurement.repeats))
        del session
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        profiled = ort.InferenceSession(str(path), options, providers=providers)
        warmup = 2
        for _ in range(warmup + profiled_runs):
            profiled.run(None, feed)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    return StudentRun(stats, stats.value(profile.measurement.statistic),
                      parse_profile(events, units, skip=warmup))
