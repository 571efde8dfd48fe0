"""Building a device's latency predictor: which students to measure, fitting, validation.

``gtn-nas profile`` runs :func:`build_latency_table` on the device. The same code serves every
space (the units come from the space's contract, the kernels from ONNX Runtime's profiler):

1. **Noise floor**: one reference student (of median FLOPs) measured ``noise_rounds`` times
   with the protocol.
2. **Coverage**: random students chosen greedily until every reachable unit step has run in
   context at least once (a step no random student reaches is profiled alone and marked so);
   then random students up to ``fit_students``.
3. **Fit**: kernel times pooled over every context they ran in, summed per unit step; a
   robust non-negative linear model of the whole student; gradient-boosted trees (Huber loss)
   on the log ratio, kept only when they beat the linear model out of fold
   (:mod:`gtn_nas.hardware.latency_predictor`).
4. **Adaptive sampling**: ``adaptive_rounds`` times, the students with the largest
   out-of-fold error get neighbours (one unit changed), which are measured and added.
5. **Validation** on held-out random students: MAPE, RMSPE, share within +-5% and +-10%, the
   worst case, students under 1 ms apart (:func:`error_metrics`); then the same students
   measured again (the device's pass-to-pass repeat, the floor a predictor is read against);
   :func:`plot_validation` draws predicted vs measured.

Example:
    >>> table = build_latency_table(space, load_profile("host_cpu"))   # doctest: +SKIP
    >>> table.validation["mape"]                                       # doctest: +SKIP
    0.031
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, OrderedDict, defaultdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from torch import nn

from gtn_nas.config import to_plain
from gtn_nas.space.costs import PathStep, UnitCosts
from gtn_nas.hardware.latency import noise_floor, providers_for, reachable_steps, student_input_shape
from gtn_nas.hardware.latency_kernels import StudentRun, measure_student
from gtn_nas.hardware.latency_predictor import TABLE_FORMAT, WHOLE_FEATURES, LatencyTable, export_trees
from gtn_nas.space.supernet import Sample, SupernetSpace

Progress = Callable[[str, int, int], None]
SMALL_MS = 1.0


def error_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """MAPE, RMSPE, shares within +-5% / +-10%, worst and median signed error (fractions)."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    if len(m) == 0:
        return {"students": 0}
    rel = p / m - 1.0
    worst = int(np.argmax(np.abs(rel)))
    return {"students": int(len(m)), "mape": float(np.mean(np.abs(rel))),
            "rmspe": float(np.sqrt(np.mean(rel ** 2))),
            "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
            "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "worst": {"error": float(rel[worst]), "predicted_ms": float(p[worst]),
                      "measured_ms": float(m[worst])},
            "median_signed": float(np.median(rel))}


def split_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """:func:`error_metrics` of all students, plus of those under and over 1 ms apart."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    small = m < SMALL_MS
    return {**error_metrics(p, m), "under_1ms": error_metrics(p[small], m[small]),
            "over_1ms": error_metrics(p[~small], m[~small])}


# ----------------------------------------------------------------------------- aggregation
class _Observations:
    """In-context kernel and step times gathered from measured students."""

    def __init__(self) -> None:
        self.kernels: dict[str, list[float]] = defaultdict(list)
        self.steps: dict[str, list[float]] = defaultdict(list)
        self.compositions: dict[str, Counter] = defaultdict(Counter)
        self.alone: dict[str, list[tuple[str, float]]] = {}

    def add(self, run: StudentRun, steps: list[tuple[PathStep, Any]]) -> None:
        for step, cost in steps:
            if not cost.present:
                continue
            kernels = run.units.get(step.unit, [])
            key = step.key()
            self.steps[key].append(sum(ms for _, ms in kernels))
            self.compositions[key][tuple(sig for sig, _ in kernels)] += 1
            for sig, ms in kernels:
                self.kernels[sig].append(ms)

    def table_entries(self) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
        """Kernel signature -> median in-context ms over every student and position it ran
        in; step -> its usual kernels and the sum of their medians (pooling over kernels is
        far less noisy than a step's own few observations)."""
        kernels = {sig: float(statistics.median(v)) for sig, v in self.kernels.items()}
        steps = {}
        for key, totals in self.steps.items():
            composition = self.compositions[key].most_common(1)[0][0]
            steps[key] = {"ms": float(sum(kernels[sig] for sig in composition)),
                          "in_context_ms": float(statistics.median(totals)),
                          "kernels": list(composition), "seen": len(totals),
                          "timed": "in-context"}
        for key, kernel_list in self.alone.items():
            if key in steps:
                continue
            ms = sum(kernels.get(sig, alone) for sig, alone in kernel_list)
            steps[key] = {"ms": float(ms), "kernels": [sig for sig, _ in kernel_list],
                          "seen": 0, "timed": "alone"}
            for sig, alone in kernel_list:
                kernels.setdefault(sig, float(alone))
        return kernels, steps


def _gbm(seed: int):
    from sklearn.ensemble import GradientBoostingRegressor

    # Huber loss: a student measured during a burst of load must not bend the model.
    return GradientBoostingRegressor(loss="huber", n_estimators=150, max_depth=3,
                                     learning_rate=0.05, subsample=0.8, min_samples_leaf=3,
                                     random_state=seed)


def _robust_linear(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fit of y ~ a * base + b * kernels + c on relative errors (a, c >= 0; b of either sign:
    the profiler adds a little to every kernel it times), refitted twice with students far
    off (bursts of load) down-weighted."""
    from scipy.optimize import lsq_linear

    design = np.stack([x[:, 0], x[:, 2], np.ones(len(x))], axis=1)
    weights = 1.0 / y  # relative errors matter, not absolute ones
    bounds = ([0.0, -np.inf, 0.0], [np.inf, np.inf, np.inf])
    coef = np.zeros(3)
    for _ in range(3):
        coef = lsq_linear(design * weights[:, None], y * weights, bounds=bounds).x
        rel = np.abs(design @ coef / y - 1.0)
        scale = max(3.0 * float(np.median(rel)), 0.05)
        weights = np.where(rel <= scale, 1.0, scale / np.maximum(rel, 1e-12)) / y
    if not coef[0] > 0:  # degenerate (a device whose kernels the profiler cannot attribute)
        coef = np.array([0.0, 0.0, float(np.median(y))])
    return coef


def _fit_model(table: LatencyTable, rows: list[dict[str, Any]], unit_costs: UnitCosts,
               seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fits the linear part and, where they help out of fold, the trees on ``rows``.

    Returns:
        (features, measured, out-of-fold relative error of each student).
    """
    x = np.stack([table.features(r["sample"], unit_costs) for r in rows])
    y = np.array([r["measured_ms"] for r in rows])
    coef = _robust_linear(x, y)
    table.model = {"features": [*WHOLE_FEATURES, *[f"unit:{u}" for u in unit_costs.space.units]],
                   "linear": [float(c) for c in coef], "trees": {},
                   "correction_range": [0.0, 0.0], "max_kernels": float(x[:, 2].max())}
    linear = np.array([table.linear(row) for row in x])
    linear_errors = np.abs(linear / y - 1.0)
    table.model["selection"] = {"linear_mape": float(np.mean(linear_errors))}
    if len(rows) < 10:
        return x, y, linear_errors
    tree_errors = _oof_errors(linear, x, y, seed)
    table.model["selection"]["trees_oof_mape"] = float(np.mean(tree_errors))
    # the trees stay only when they beat the linear model on students they did not see
    if np.mean(tree_errors) >= np.mean(linear_errors):
        return x, y, linear_errors
    target = np.log(y / linear)
    gbm = _gbm(seed).fit(x, target)
    table.model["trees"] = export_trees(gbm, x)
    fitted = gbm.predict(x)
    table.model["correction_range"] = [float(fitted.min() - 0.05), float(fitted.max() + 0.05)]
    table._trees = None
    return x, y, tree_errors


def _oof_errors(linear: np.ndarray, x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold relative errors of linear x trees (5 folds)."""
    from sklearn.model_selection import KFold

    target = np.log(y / linear)
    predicted = np.zeros(len(y))
    folds = KFold(n_splits=min(5, len(y)), shuffle=True, random_state=seed)
    for train, test in folds.split(x):
        predicted[test] = _gbm(seed).fit(x[train], target[train]).predict(x[test])
    return np.abs(linear * np.exp(predicted) / y - 1.0)


# ----------------------------------------------------------------------------- choosing students
def _coverage_students(space: SupernetSpace, unit_costs: UnitCosts, wanted: set[str],
                       seed: int, tries: int) -> tuple[list[Sample], set[str]]:
    """Random students chosen greedily until every step in ``wanted`` appears once."""
    chosen, missing = [], set(wanted)
    for i in range(tries):
        if not missing:
            break
        sample = space.sample((seed * 1_000_003 + i) % 2 ** 32)
        keys = {s.key() for s, c in unit_costs.steps(sample) if c.present}
        if keys & missing:
            chosen.append(sample)
            missing -= keys
    return chosen, missing


def _neighbours(space: SupernetSpace, sample: Sample, rng: np.random.Generator, count: int
                ) -> list[Sample]:
    """``count`` students that differ from ``sample`` in one unit's configuration."""
    out = []
    names = list(space.units)
    for _ in range(count * 4):
        if len(out) == count:
            break
        name = names[int(rng.integers(len(names)))]
        configs = space.unit_configs(name)
        if len(configs) < 2:
            continue
        config = configs[int(rng.integers(len(configs)))]
        labels = space.units[name].labels()
        candidate = space.validate({**sample, **dict(zip(labels, config))})
        if candidate != sample and candidate not in out:
            out.append(candidate)
    return out


def median_student(space: SupernetSpace, unit_costs: UnitCosts, seed: int,
                   pool: int = 65) -> Sample:
    """The random student of median FLOPs among ``pool``: the noise floor's reference (a
    typical student, not the smallest: big students suffer more from a busy machine)."""
    samples = [space.sample((seed * 1_000_003 + 900_000 + i) % 2 ** 32) for i in range(pool)]
    samples.sort(key=lambda sample: (unit_costs.flops(sample), repr(sorted(sample.items()))))
    return samples[len(samples) // 2]


def build_latency_table(space: SupernetSpace, profile, *, seed: int = 0,
                        fit_students: int = 48, adaptive_rounds: int = 2,
                        adaptive_students: int = 12, validation_students: int = 30,
                        noise_rounds: int = 8, profiled_runs: int = 10,
                        overhead_students: int | None = None,
                        progress: Progress | None = None) -> LatencyTable:
    """Measures students of ``space`` on this machine and fits its latency predictor.

    Args:
        space: The search space.
        profile: The device profile (its providers, threads and protocol are used).
        seed: Seeds every choice of students.
        fit_students: Students measured before adaptive sampling (at least those that cover
            every unit step).
        adaptive_rounds: Rounds of adaptive sampling.
        adaptive_students: Students added per round (neighbours of the worst predicted).
        validation_students: Held-out random students for the validation.
        noise_rounds: Repeated measurements of one reference student (the noise floor).
        profiled_runs: Profiled runs per student (kernel times are their medians).
        overhead_students: Older name of ``fit_students`` (added to the coverage set).
        progress: ``progress(phase, done, total)`` callback.
    """
    from gtn_nas.hardware.machine import machine_record

    started = time.perf_counter()
    shape = student_input_shape(space, profile)
    providers = providers_for(profile, strict=True)
    unit_costs = UnitCosts(space)
    statistic = profile.measurement.statistic
    say = progress or (lambda *args: None)

    wanted = {step.key(): step for step in reachable_steps(space, unit_costs)}
    reference = median_student(space, unit_costs, seed)
    noise = noise_floor(space.freeze(reference, seed=0).eval(), shape, profile, noise_rounds)
    noise["reference"] = dict(reference)
    say("noise floor", 1, 1)

    cover, missing = _coverage_students(space, unit_costs, set(wanted), seed, tries=20_000)
    target = max(fit_students, len(cover) + (overhead_students or 0))
    chosen = list(cover)
    seen = {tuple(s.items()) for s in chosen}
    i = 0
    while len(chosen) < target and i < 50 * target:
        sample = space.sample((seed * 1_000_003 + 300_000 + i) % 2 ** 32)
        i += 1
        if tuple(sample.items()) not in seen:
            seen.add(tuple(sample.items()))
            chosen.append(sample)

    observations = _Observations()
    for key in sorted(missing):  # steps no random student reaches: timed alone
        step = wanted[key]
        module = unit_costs.module(step)
        run = measure_student(nn.Sequential(OrderedDict([(step.unit, module)])),
                              (shape[0], step.in_channels, step.in_size, step.in_size),
                              profile, profiled_runs)
        observations.alone[key] = run.units.get(step.unit, [])

    rows: list[dict[str, Any]] = []

    def measure(samples: list[Sample], phase: str) -> None:
        for n, sample in enumerate(samples):
            run = measure_student(space.freeze(sample, seed=0), shape, profile, profiled_runs)
            steps = unit_costs.steps(sample)
            observations.add(run, steps)
            rows.append({"sample": sample, "measured_ms": run.measured_ms,
                         "spread": run.stats.spread, "kernel_ms": run.kernel_ms()})
            say(phase, n + 1, len(samples))

    table = LatencyTable(profile.name, space.spec, to_plain(space.options), shape, statistic,
                         {}, providers=tuple(providers),
                         machine=machine_record(profile.runtime.threads, providers),
                         protocol={"warmup": profile.measurement.warmup,
                                   "repeats": profile.measurement.repeats,
                                   "statistic": statistic,
                                   "threads": profile.runtime.threads,
                                   "profiled_runs": profiled_runs,
                                   "timer": "time.perf_counter around session.run"},
                         noise=noise)
    measure(chosen, "fit students")
    rng = np.random.default_rng(seed)
    rounds_done = 0
    for round_index in range(adaptive_rounds + 1):
        table.kernels, table.steps = observations.table_entries()
        x, y, errors = _fit_model(table, rows, unit_costs, seed)
        if round_index == adaptive_rounds:
            break
        worst = np.argsort(-errors)[: max(1, adaptive_students // 2)]
        known = {tuple(r["sample"].items()) for r in rows}
        added: list[Sample] = []
        for index in worst:
            for neighbour in _neighbours(space, rows[index]["sample"], rng, 2):
                if tuple(neighbour.items()) not in known and len(added) < adaptive_students:
                    known.add(tuple(neighbour.items()))
                    added.append(neighbour)
        measure(added, f"adaptive round {round_index + 1}")
        rounds_done += 1

    fitted = [table.predict_features(row) for row in x]
    table.fit = {"students": len(rows), "coverage_students": len(cover),
                 "adaptive_rounds": rounds_done, "steps_timed_alone": sorted(missing),
                 "in_sample": split_metrics(fitted, y),
                 "rows": [{"measured_ms": round(r["measured_ms"], 5),
                           "predicted_ms": round(p, 5)} for r, p in zip(rows, fitted)]}
    table.validation = validate_table(table, space, profile, seed=seed,
                                      students=validation_students, unit_costs=unit_costs,
                                      progress=progress, exclude=known_samples(rows))
    if table.validation.get("retest"):  # the pass-to-pass repeat belongs to the noise too
        table.noise["retest_mape"] = round(table.validation["retest"]["mape"], 5)
    table.build_seconds = round(time.perf_counter() - started, 1)
    table.format = TABLE_FORMAT
    return table


def known_samples(rows: list[dict[str, Any]]) -> set[tuple]:
    return {tuple(r["sample"].items()) for r in rows}


def validate_table(table: LatencyTable, space: SupernetSpace, profile, *, seed: int,
                   students: int, unit_costs: UnitCosts | None = None,
                   progress: Progress | None = None, exclude: set[tuple] | None = None,
                   retest: bool = True) -> dict[str, Any]:
    """Predicted vs measured on ``students`` held-out random students (see
    :func:`split_metrics`), with the noise floor beside it.

    With ``retest`` the same students are measured a second time after the first pass (fresh
    export and session each): ``retest`` holds the second pass against the first (how far the
    device repeats its own measurement of a student minutes later, read like a predictor's
    error) and ``vs_both_passes`` the predictor against the geometric mean of both passes. On a
    shared machine the pass-to-pass error can exceed the back-to-back noise floor many times
    (docs/BENCHMARKS.md); no predictor is judged fairly below it."""
    from gtn_nas.hardware.latency import measure_module

    unit_costs = unit_costs or UnitCosts(space)
    shape = student_input_shape(space, profile)
    exclude = exclude or set()
    samples: list[Sample] = []
    i = 0
    while len(samples) < students and i < 50 * max(students, 1):
        sample = space.sample((seed * 1_000_003 + 700_000 + i) % 2 ** 32)
        i += 1
        if tuple(sample.items()) not in exclude:
            exclude = exclude | {tuple(sample.items())}
            samples.append(sample)
    if not samples:
        return {}

    def measure_pass(phase: str) -> list[float]:
        values = []
        for n, sample in enumerate(samples):
            values.append(measure_module(space.freeze(sample, seed=0).eval(), shape,
                                         profile).value(table.statistic))
            if progress:
                progress(phase, n + 1, len(samples))
        return values

    predicted = [table.predict(sample, unit_costs) for sample in samples]
    measured = measure_pass("validation")
    rows = [{"predicted_ms": round(p, 5), "measured_ms": round(m, 5)}
            for p, m in zip(predicted, measured)]
    result = {**split_metrics(predicted, measured), "noise_floor": table.noise.get("spread"),
              "rows": rows}
    if retest:
        again = measure_pass("validation retest")
        for row, value in zip(rows, again):
            row["retest_ms"] = round(value, 5)
        both = np.sqrt(np.asarray(measured) * np.asarray(again))
        result["retest"] = error_metrics(again, measured)
        result["vs_both_passes"] = error_metrics(predicted, both)
    return result


def describe_metrics(metrics: Mapping[str, Any]) -> str:
    """``MAPE 3.1%, RMSPE 4.0%, 81% within +-5%, 97% within +-10%, worst +12%`` (one line)."""
    if not metrics.get("students"):
        return "no students"
    return (f"MAPE {metrics['mape'] * 100:.1f}%, RMSPE {metrics['rmspe'] * 100:.1f}%, "
            f"{metrics['within_5pct'] * 100:.0f}% within +-5%, "
            f"{metrics['within_10pct'] * 100:.0f}% within +-10%, worst "
            f"{metrics['worst']['error'] * 100:+.0f}% ({metrics['worst']['predicted_ms']:.3g} "
            f"vs {metrics['worst']['measured_ms']:.3g} ms), {metrics['students']} students")


def plot_validation(table: LatencyTable, path: str | Path) -> Path:
    """Predicted vs measured (log-log) of the fit and validation students, with +-10% lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(5.5, 5))
    everything = []
    for rows, label, style in ((table.fit.get("rows", []), "fit (in sample)", "C0"),
                               (table.validation.get("rows", []), "held out", "C3")):
        if rows:
            m = [r["measured_ms"] for r in rows]
            p = [r["predicted_ms"] for r in rows]
            everything += m + p
            ax.scatter(m, p, s=10, alpha=0.6, color=style, label=f"{label} ({len(rows)})")
    if everything:
        lo, hi = min(everything) * 0.8, max(everything) * 1.25
        line = np.geomspace(lo, hi, 20)
        ax.plot(line, line, "-", color="black", lw=0.8)
        for factor in (0.9, 1.1):
            ax.plot(line, line * factor, "--", color="grey", lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
    val = table.validation
    title = f"{table.space} on {table.profile}"
    if val.get("students"):
        title += f"\nheld out: MAPE {val['mape'] * 100:.1f}%, " \
                 f"{val['within_10pct'] * 100:.0f}% within +-10%"
    noise = table.noise.get("spread")
    if noise is not None:
        title += f"; noise floor {noise * 100:.1f}%"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("measured (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    from gtn_nas.report import save_figure

    return save_figure(fig, path)

