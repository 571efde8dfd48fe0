"""What to deploy: per tier the better of the distilled and the teacherless students, chosen on
validation only, never worse than training alone; the teacher guard; dominated tiers.

- :func:`teacher_guard`: a teacher whose test top-1 is not above what a student reaches
  without it cannot pull that student up (its soft targets are less right than the labels);
  the guard says so in one line.
- :func:`choose_deployment`: for one student (a tier) trained by several methods (a distiller
  and the teacherless baselines ``none``/``ls``) and seeds, the method with the best mean
  validation accuracy of its best-on-validation weights, then that method's seed with the best
  validation accuracy. Test accuracy is reported, never used to choose. Ties go to the
  teacherless baseline (``none`` first): distillation has to earn its place.
- :func:`flag_dominated`: a tier whose deployed student costs more (latency and MFLOPs, where
  known) than a cheaper tier's but is not more accurate on validation is flagged, the cheaper
  one recommended.

Example:
    >>> runs = {"kd": [{"seed": 0, "val_acc_best": 0.90, "test_acc_best": 0.89}],
    ...         "none": [{"seed": 0, "val_acc_best": 0.92, "test_acc_best": 0.91}]}
    >>> choice = choose_deployment("s", runs)
    >>> choice.method, choice.seed, round(choice.test_gain_vs_none, 2)
    ('none', 0, 0.0)
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from gtn_nas.errors import ConfigError

BASELINE_ORDER = ("none", "ls")
"""Teacherless methods, preferred in this order on a validation tie."""


def teacher_guard(student: str, teacher_acc: float | None, alone_acc: float | None,
                  alone_method: str = "none") -> str | None:
    """One line when the teacher's test top-1 is not above the student's accuracy alone.

    Example:
        >>> print(teacher_guard("s", 0.953, 0.961))
        this teacher cannot help student s: its test top-1 95.3% is not above the student's 96.1% trained alone (none)
        >>> teacher_guard("s", 0.99, 0.961) is None
        True
    """
    if teacher_acc is None or alone_acc is None or teacher_acc > alone_acc:
        return None
    return (f"this teacher cannot help student {student}: its test top-1 "
            f"{teacher_acc * 100:.1f}% is not above the student's {alone_acc * 100:.1f}% "
            f"trained alone ({alone_method})")


@dataclass
class Deployment:
    """The student deployed for one tier and why."""

    student: str
    method: str
    seed: int
    val_acc: float
    test_acc: float
    val_by_method: dict[str, float]
    test_by_method: dict[str, float]
    test_gain_vs_none: float | None
    run_dir: str | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    dominated_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def choose_deployment(student: str, runs: Mapping[str, Sequence[Mapping[str, Any]]]
                      ) -> Deployment:
    """The deployed (method, seed) of ``student`` from its finished runs per method.

    Args:
        student: The student's name (a tier: s, m, l).
        runs: Method -> the ``result.json`` records of its seeds (``val_acc_best``,
            ``test_acc_best``, ``seed``; ``run_dir`` is carried along when present).

    Raises:
        ConfigError: no method has a finished run with a validation accuracy.
    """
    val: dict[str, float] = {}
    test: dict[str, float] = {}
    for method, records in runs.items():
        scored = [r for r in records if r.get("val_acc_best") is not None]
        if scored:
            val[method] = _mean([float(r["val_acc_best"]) for r in scored])
            test[method] = _mean([float(r["test_acc_best"]) for r in scored])
    if not val:
        raise ConfigError(f"student {student}: no finished run with a validation accuracy to "
                          f"choose from")
    preference = {m: i for i, m in enumerate(BASELINE_ORDER)}
    method = max(val, key=lambda m: (val[m], -preference.get(m, len(preference))))
    records = [r for r in runs[method] if r.get("val_acc_best") is not None]
    best = max(records, key=lambda r: (float(r["val_acc_best"]), -int(r["seed"])))
    gain = test[method] - test["none"] if "none" in test else None
    return Deployment(student=student, method=method, seed=int(best["seed"]),
                      val_acc=float(best["val_acc_best"]), test_acc=float(best["test_acc_best"]),
                      val_by_method=val, test_by_method=test, test_gain_vs_none=gain,
                      run_dir=best.get("run_dir"))


def flag_dominated(deployments: Sequence[Deployment]) -> list[str]:
    """Marks each deployment that a cheaper one beats or ties on validation; returns notes.

    Cheaper means no higher on every cost all deployments have (latency and MFLOPs) and lower
    on one (Pareto dominance): a noisy latency measurement can withhold a flag that MFLOPs
    alone would raise, never invent one.
    """
    keys = [k for k in ("latency_ms", "mflops")
            if all(d.cost.get(k) is not None for d in deployments)]
    if not keys:
        return []
    units = {"latency_ms": "ms", "mflops": "MFLOPs"}

    def cost(d: Deployment) -> str:
        return ", ".join(f"{d.cost[k]:.3g} {units[k]}" for k in keys)

    notes = []
    for d in deployments:
        cheaper = [c for c in deployments if c is not d and c.val_acc >= d.val_acc
                   and all(c.cost[k] <= d.cost[k] for k in keys)
                   and any(c.cost[k] < d.cost[k] for k in keys)]
        if cheaper:
            best = max(cheaper, key=lambda c: (c.val_acc, [-c.cost[k] for k in keys]))
            d.dominated_by = best.student
            notes.append(f"tier {d.student} is dominated: it costs {cost(d)} against "
                         f"{cost(best)} for tier {best.student}, which is at least as accurate "
                         f"on validation ({best.val_acc * 100:.1f}% vs {d.val_acc * 100:.1f}%); "
                         f"deploy {best.student} instead")
    return notes
