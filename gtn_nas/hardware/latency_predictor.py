"""A device's latency predictor ("latency table"): in-context fused-kernel times per unit plus
a learned whole-model correction; file format, checks and microsecond predictions.

What it holds (built on the device by ``gtn-nas profile``, :mod:`gtn_nas.hardware.latency_build`):

- ``kernels``: the median in-context time of every fused kernel signature ONNX Runtime ran
  (:mod:`gtn_nas.hardware.latency_kernels`);
- ``steps``: per unit step (unit, choices, input shape), the kernels it runs and its
  in-context time (median over the students it appeared in);
- ``model``: ``linear`` = a * sum of the student's step times + b * its kernel count + c,
  fitted on measured whole students, times ``exp(correction)``, where the correction is a
  gradient-boosted tree ensemble (scikit-learn) on per-unit and whole-model features (FLOPs
  and params among them), stored as plain arrays and evaluated with numpy;
- ``machine``, ``protocol``, ``noise`` (the spread of repeated measurements of one model, and
  ``retest_mape``: the validation students measured again, second pass vs first),
  ``fit`` and ``validation``.

A table is refused (one line, with the command that rebuilds it) when its format, space,
options, profile, batch, statistic or threads differ, and, for a profile that runs here, when
it was measured on another machine (CPU model, instruction sets, cores, ONNX Runtime version,
providers).

Example:
    >>> table = LatencyTable.load("hw_profiles/host_cpu.latency.json", space, profile)  # doctest: +SKIP
    >>> table.predict(space.preset("s_nas_m"), UnitCosts(space))                        # doctest: +SKIP
    11.8
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gtn_nas.config import to_plain
from gtn_nas.space.costs import UnitCosts
from gtn_nas.errors import ConfigError
from gtn_nas.fileio import atomic_write_text

TABLE_FORMAT = "gtn-nas-latency-table/2"
WHOLE_FEATURES = ("base_ms", "log_base", "kernels", "mflops", "params_m", "units")


@dataclass
class LatencyTable:
    """A device's latency predictor for one space (see the module docstring)."""

    profile: str
    space: str
    space_options: dict[str, Any]
    input_shape: tuple[int, ...]
    statistic: str
    steps: dict[str, dict[str, Any]]
    kernels: dict[str, float] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    providers: tuple[str, ...] = ()
    machine: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    format: str = TABLE_FORMAT

    def __post_init__(self) -> None:
        self._trees: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ prediction
    def step_ms(self, key: str) -> float:
        entry = self.steps.get(key)
        if entry is None:
            raise ConfigError(f"latency table of {self.profile} has no entry {key}: it was "
                              f"built for another space or options; rebuild it")
        return float(entry["ms"])

    def features(self, sample: Mapping[str, Any], unit_costs: UnitCosts) -> np.ndarray:
        """The model's features of ``sample``: whole-model ones, then each unit's time."""
        per_unit = []
        kernels = units = 0
        flops = params = 0
        for step, cost in unit_costs.steps(sample):
            if not cost.present:
                per_unit.append(0.0)
                continue
            key = step.key()
            ms = self.step_ms(key)
            per_unit.append(ms)
            kernels += len(self.steps[key].get("kernels", ()))
            units += 1
            flops += cost.flops
            params += cost.params
        base = sum(per_unit)
        return np.array([base, math.log(base + 1e-3), kernels, flops / 1e6, params / 1e6,
                         units, *per_unit], dtype=np.float64)

    def linear(self, x: np.ndarray) -> float:
        a, b, c = self.model.get("linear", (1.0, 0.0, 0.0))
        return max(a * x[0] + b * x[2] + c, 1e-6)

    def correction(self, x: np.ndarray) -> float:
        """The trees' log-ratio correction at features ``x`` (clipped to the fitted range)."""
        trees = self.model.get("trees")
        if not trees:
            return 0.0
        if self._trees is None:
            width = len(trees["feature"][0])
            offset = (np.arange(len(trees["feature"])) * width)[:, None]
            self._trees = {"feature": np.asarray(trees["feature"]).ravel(),
                           "threshold": np.asarray(trees["threshold"], float).ravel(),
                           "left": (np.asarray(trees["left"]) + offset).ravel(),
                           "right": (np.asarray(trees["right"]) + offset).ravel(),
                           "value": np.asarray(trees["value"], float).ravel(),
                           "roots": offset.ravel().copy()}
        t = self._trees
        node = t["roots"]
        for _ in range(int(trees["depth"])):
            go_left = x.take(t["feature"].take(node)) <= t["threshold"].take(node)
            node = np.where(go_left, t["left"].take(node), t["right"].take(node))
        raw = trees["init"] + trees["learning_rate"] * float(t["value"].take(node).sum())
        low, high = self.model.get("correction_range", (-math.inf, math.inf))
        return min(max(raw, low), high)

    def predict_features(self, x: np.ndarray) -> float:
        return self.linear(x) * math.exp(self.correction(x))

    def predict(self, sample: Mapping[str, Any], unit_costs: UnitCosts) -> float:
        """Predicted latency of ``sample``'s student in ms (microseconds per call)."""
        return self.predict_features(self.features(sample, unit_costs))

    def lower_bound(self, parts_ms: float) -> float:
        """A prediction no student whose steps sum to ``parts_ms`` goes below."""
        a, b, c = self.model.get("linear", (1.0, 0.0, 0.0))
        kernels = self.model.get("max_kernels", 0.0) if b < 0 else 0.0
        low = self.model.get("correction_range", (0.0, 0.0))[0]
        return max(a * parts_ms + b * kernels + c, 1e-6) * \
            math.exp(low if self.model.get("trees") else 0.0)

    # ------------------------------------------------------------------ file
    def save(self, path: str | os.PathLike) -> Path:
        data = to_plain(asdict(self))
        return atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike, space=None, profile: Any = None,
             check_machine: bool | None = None) -> "LatencyTable":
        """Reads a table; with ``space``/``profile`` given, checks it was built for them.

        Args:
            path: The table file.
            space: The space it must describe (spec and options).
            profile: The profile it must describe (name, batch, statistic, threads).
            check_machine: Refuse a table measured on another machine (default: when the
                profile runs here).

        Raises:
            ConfigError: one line saying what differs and how to rebuild the table.
        """
        path = Path(path)
        hint = rebuild_hint(profile, space)
        if not path.is_file():
            raise ConfigError(f"latency table {path} does not exist (build it on the device "
                              f"with: {hint})")
        try:
            data = json.loads(path.read_text())
            if data.get("format") != TABLE_FORMAT:
                raise ConfigError(f"{path}: table format {data.get('format')}, expected "
                                  f"{TABLE_FORMAT}; rebuild it with: {hint}")
            data["input_shape"] = tuple(data["input_shape"])
            data["providers"] = tuple(data.get("providers", ()))
            table = cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a gtn-nas latency table ({exc})") from exc
        if space is not None and (table.space != space.spec or
                                  table.space_options != to_plain(space.options)):
            raise ConfigError(f"{path} was built for space {table.space} "
                              f"{table.space_options}, not {space.spec} "
                              f"{to_plain(space.options)}; rebuild it with: {hint}")
        if profile is not None:
            if table.profile != profile.name:
                raise ConfigError(f"{path} was built for profile {table.profile}, not "
                                  f"{profile.name}; rebuild it with: {hint}")
            if table.input_shape[0] != profile.input.batch or \
                    table.statistic != profile.measurement.statistic:
                raise ConfigError(f"{path} holds batch-{table.input_shape[0]} "
                                  f"{table.statistic} latencies; the profile asks for batch "
                                  f"{profile.input.batch}, {profile.measurement.statistic}; "
                                  f"rebuild it with: {hint}")
            threads = table.protocol.get("threads")
            if threads is not None and threads != profile.runtime.threads:
                raise ConfigError(f"{path} was measured with {threads} threads; the profile "
                                  f"runs {profile.runtime.threads}; rebuild it with: {hint}")
            if check_machine is None:
                check_machine = bool(profile.device.runs_here)
        if check_machine:
            from gtn_nas.hardware.machine import machine_mismatches, machine_record

            here = machine_record(table.machine.get("threads", 0), table.providers)
            problems = machine_mismatches(table.machine, here)
            if problems:
                raise ConfigError(f"{path} was measured on another machine "
                                  f"({'; '.join(problems[:3])}); rebuild it here with: {hint}")
        return table


def rebuild_hint(profile, space) -> str:
    """The command that (re)builds the lookup table of ``profile`` for ``space``."""
    if profile is None:
        return "gtn-nas profile --hw PROFILE"
    from gtn_nas.hardware.profile_files import is_bundled

    # a bundled profile by its name (its file lives inside the installed package)
    source = profile.name if profile.source is None or is_bundled(profile.source) \
        else profile.source
    if space is None:
        return f"gtn-nas profile --hw {source}"
    options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in space.options.items())
    return f"gtn-nas profile --hw {source} --space {space.spec} {options}".rstrip()


def export_trees(gbm, rows: np.ndarray) -> dict[str, Any]:
    """A fitted ``GradientBoostingRegressor`` as padded plain arrays (no pickle in a table).

    Leaves point to themselves, so every tree can be walked ``depth`` times.
    """
    estimators = [est[0].tree_ for est in gbm.estimators_]
    width = max(t.node_count for t in estimators)
    depth = max(t.max_depth for t in estimators)
    arrays = {k: [] for k in ("feature", "threshold", "left", "right", "value")}
    for tree in estimators:
        n = tree.node_count
        leaf = tree.children_left == -1
        nodes = np.arange(n)
        pad = width - n
        arrays["feature"].append(np.pad(np.where(leaf, 0, tree.feature), (0, pad)).tolist())
        arrays["threshold"].append(np.pad(np.where(leaf, np.inf, tree.threshold), (0, pad),
                                          constant_values=np.inf).tolist())
        arrays["left"].append(np.pad(np.where(leaf, nodes, tree.children_left), (0, pad)).tolist())
        arrays["right"].append(np.pad(np.where(leaf, nodes, tree.children_right),
                                      (0, pad)).tolist())
        arrays["value"].append(np.pad(tree.value[:, 0, 0], (0, pad)).tolist())
    lr = float(gbm.learning_rate)
    staged = sum(est[0].predict(rows[:1]) for est in gbm.estimators_)
    init = float(gbm.predict(rows[:1])[0] - lr * staged[0])
    return {"init": init, "learning_rate": lr, "depth": int(depth), **arrays}


class TableLatency:
    """Latency from a device's table (source ``table``): microseconds per student."""

    source = "table"

    def __init__(self, table: LatencyTable, unit_costs: UnitCosts) -> None:
        self.table, self.unit_costs = table, unit_costs

    def __call__(self, sample: Mapping[str, Any]) -> float:
        return self.table.predict(sample, self.unit_costs)

    def step_ms(self, step) -> float:
        entry = self.table.steps.get(step.key())
        return float("inf") if entry is None else float(entry["ms"])

    def finish(self, parts_ms: float) -> float:
        """A lower bound of the prediction for students whose steps sum to ``parts_ms``."""
        return self.table.lower_bound(parts_ms)
