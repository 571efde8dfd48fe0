"""Hardware-aware search: the best small, medium and large students of a space for one device.

Candidates are scored by :mod:`gtn_nas.search.scoring`: through a GTN teacher's grafted branch, or,
without a teacher, by a capacity proxy.

Costs: parameters and FLOPs from :class:`gtn_nas.space.costs.UnitCosts` (exact, fvcore); latency from
:func:`gtn_nas.hardware.latency.latency_model` (the device's ``table``, direct ONNX Runtime
``measured``, or the roofline ``estimated``). For a profile that runs here, the picks are
re-measured interleaved with a reference model (:mod:`gtn_nas.search.remeasure`); picks come
from the latency model, so a seeded search gives the same picks whenever the table is the
same, and re-measurement replaces a pick only when the machine is quiet enough to trust it.
:func:`gtn_nas.search.devices.search_devices` searches several devices at once (budgets from
each device, picks by trained accuracy), scoring each student once.

Strategies come from NNI and run in-process: ``evolution`` (NNI's RegularizedEvolution) and
``random`` (NNI's Random), one run per tier with a constraint-aware fitness (a feasible
candidate scores its score; an infeasible one is ranked below every feasible one by how far
it misses), driven through a ``SimplifiedModelSpace`` whose executable model is the sample
itself, so no network is built per candidate.

Example:
    >>> result = run_search(space, load_profile("jetson"), budget_evals=600)   # doctest: +SKIP
    >>> result.picks["s"].sample                                                # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


from gtn_nas.space.costs import UnitCosts
from gtn_nas.errors import ConfigError, InfeasibleBudgetError
from gtn_nas.hardware.latency import latency_model
from gtn_nas.search.scoring import proxy_score
from gtn_nas.space.supernet import Sample, SupernetSpace

_log = logging.getLogger(__name__)

STRATEGIES = ("evolution", "random")
METRICS = {"latency_ms": "latency (ms)", "mflops": "MFLOPs", "params_m": "M parameters"}


@dataclass
class Candidate:
    """One evaluated student."""

    sample: Sample
    params: int
    mflops: float
    latency_ms: float | None
    latency_source: str
    score: float
    measured: dict[str, float] = field(default_factory=dict)
    val_acc: float | None = None
    """Validation top-1 after the full student recipe, where the search trained it."""

    def metric(self, name: str) -> float | None:
        return {"latency_ms": self.latency_ms, "mflops": self.mflops,
                "params_m": self.params / 1e6}[name]

    def violation(self, limits: Mapping[str, float]) -> float:
        """Sum of relative excesses over ``limits`` (0 when every budget is met)."""
        total = 0.0
        for name, limit in limits.items():
            value = self.metric(name)
            if value is not None and value > limit:
                total += value / limit - 1.0
        return total

    def to_json(self) -> dict[str, Any]:
        return {"sample": self.sample, "params": self.params, "mflops": round(self.mflops, 4),
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 5),
                "latency_source": self.latency_source, "score": round(self.score, 6),
                **({"measured": self.measured} if self.measured else {}),
                **({"val_acc": round(self.val_acc, 6)} if self.val_acc is not None else {})}


# ----------------------------------------------------------------------------- evaluation
class Evaluator:
    """Evaluates samples into :class:`Candidate` s, each canonical sample once."""

    def __init__(self, space: SupernetSpace, unit_costs: UnitCosts, latency,
                 scorer: Callable[[Sample], float] | None = None) -> None:
        self.space, self.unit_costs, self.latency, self.scorer = space, unit_costs, latency, scorer
        self.seen: dict[tuple, Candidate] = {}

    def __call__(self, sample: Mapping[str, Any]) -> Candidate:
        canonical = self.space.validate(sample)
        key = tuple(canonical.items())
        if key not in self.seen:
            params = self.unit_costs.params(canonical)
            flops = self.unit_costs.flops(canonical)
            latency = None if self.latency is None else float(self.latency(canonical))
            score = self.scorer(canonical) if self.scorer else proxy_score(params, flops)
            self.seen[key] = Candidate(canonical, params, flops / 1e6, latency,
                                       self.latency.source if self.latency else "none", score)
        return self.seen[key]


def fitness(candidate: Candidate, limits: Mapping[str, float]) -> float:
    """Score when within budget; else below every feasible candidate by the relative miss."""
    miss = candidate.violation(limits)
    return candidate.score if miss == 0 else -1e6 * (1.0 + miss)


def _nni_search(space: SupernetSpace, evaluate: Callable[[Sample], float], strategy: str,
                evals: int, seed: int) -> None:
    import nni
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import SimplifiedModelSpace
    from nni.nas.strategy import Random, RegularizedEvolution

    class SampleSpace(SimplifiedModelSpace):
        """The executable model is the sample itself: costs come from tables, not networks."""

        def executable_model(self) -> Any:
            return {str(k): v for k, v in self.sample.items()}

    def report(sample: dict) -> None:
        nni.report_final_result(float(evaluate(sample)))

    if strategy == "evolution":
        population = max(4, min(50, evals // 4))
        chosen = RegularizedEvolution(population_size=population,
                                      sample_size=max(2, population // 5), mutation_prob=0.15,
                                      seed=seed)
    else:
        chosen = Random(seed=seed, dedup=False)
    model_space = SampleSpace.from_model(space, FunctionalEvaluator(report))
    for name in ("nni", "nni.nas"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen(model_space, SequentialExecutionEngine(max_model_count=evals))


@dataclass
class SearchResult:
    """Everything a search found."""

    candidates: list[Candidate]
    picks: dict[str, Candidate]
    budgets: dict[str, dict[str, float]]
    latency_source: str
    scored_by: str
    notes: list[str] = field(default_factory=list)
    latency_validation: dict[str, Any] = field(default_factory=dict)
    remeasurement: dict[str, Any] = field(default_factory=dict)
    profile: str = ""
    budget_rule: str = ""
    """How the budgets were set (:func:`gtn_nas.search.budgets.device_budgets`)."""
    selection: dict[str, Any] | None = None
    """Tier -> :class:`gtn_nas.search.selection.TierSelection` when the picks were chosen by
    trained accuracy; None when the score chose them (a zero-training proxy)."""


def pareto_front(candidates: list[Candidate], cost: str = "latency_ms") -> list[Candidate]:
    """Candidates no other candidate beats on both lower ``cost`` and higher score."""
    ordered = sorted((c for c in candidates if c.metric(cost) is not None),
                     key=lambda c: (c.metric(cost), -c.score))
    front, best = [], -math.inf
    for candidate in ordered:
        if candidate.score > best:
            front.append(candidate)
            best = candidate.score
    return front


def run_search(space: SupernetSpace, profile, *, strategy: str = "evolution",
               budget_evals: int = 600, seed: int = 0,
               scorer: Callable[[Sample], float] | None = None, scored_by: str = "proxy",
               remeasure: bool | None = None, latency_table: str | None = None,
               latency_mode: str = "auto", latency=None,
               progress: Callable[[int, int], None] | None = None) -> SearchResult:
    """Searches ``space`` for the best student of each of the profile's tiers.

    Args:
        space: The search space (students run at its input size, at the profile's batch).
        profile: The device profile with budgets for tiers s, m, l.
        strategy: ``evolution`` or ``random`` (NNI's).
        budget_evals: Candidates evaluated in total (split over the tiers).
        seed: Seeds the strategies.
        scorer: Sample -> score (default: the capacity proxy).
        scored_by: How the score was made (for the report).
        remeasure: Re-measure the picks with ONNX Runtime, interleaved with a reference
            model (default: when the profile runs here and latency is not already measured).
            A busy machine never fails the search: the latency model's picks are kept.
        latency_table: A table file to use instead of the profile's.
        latency_mode: ``auto``, ``table``, ``measure`` or ``estimate``
            (see :func:`gtn_nas.hardware.latency.latency_model`).
        latency: A latency model to use as it is (overrides the two above).
        progress: ``progress(done, total)`` callback.

    Raises:
        ConfigError: unknown strategy, too small a budget.
        InfeasibleBudgetError: a tier no student of the space can meet (with the smallest
            reachable cost).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{strategy}'; strategies: {', '.join(STRATEGIES)}")
    tiers = list(profile.budgets)
    if budget_evals < 2 * len(tiers):
        raise ConfigError(f"--budget-evals {budget_evals} is too small: at least "
                          f"{2 * len(tiers)} ({len(tiers)} tiers)")
    unit_costs = UnitCosts(space)
    if latency is None:
        latency = latency_model(space, profile, unit_costs, latency_table, latency_mode)
    evaluator = Evaluator(space, unit_costs, latency, scorer)
    budgets = {tier: profile.budgets[tier].limits() for tier in tiers}
    check_feasible(space, budgets, unit_costs, latency)
    done = [0]
    total = budget_evals

    for index, tier in enumerate(tiers):
        limits = budgets[tier]

        def evaluate(sample: Sample, limits=limits) -> float:
            candidate = evaluator(sample)
            done[0] += 1
            if progress:
                progress(done[0], total)
            return fitness(candidate, limits)

        evals = budget_evals // len(tiers) + (1 if index < budget_evals % len(tiers) else 0)
        _nni_search(space, evaluate, strategy, evals, seed + 7919 * index)

    candidates = list(evaluator.seen.values())
    source = latency.source if latency else "none"
    if remeasure is None:
        remeasure = bool(profile.device.runs_here) and source != "measured"
    picks, ranked = {}, {}
    for tier in tiers:
        # Best score first; among equal scores the cheaper student (a teacher's branch cannot
        # tell block-1 choices apart, so ties are real); then the sample itself, so the order
        # never depends on the order of evaluation.
        feasible = sorted((c for c in candidates if c.violation(budgets[tier]) == 0),
                          key=lambda c: (-c.score, c.latency_ms or 0.0, c.mflops,
                                         repr(sorted(c.sample.items()))))
        if not feasible:
            raise InfeasibleBudgetError(
                f"tier {tier}: none of the {len(candidates)} evaluated students meets "
                f"{describe_limits(budgets[tier])}; raise --budget-evals or loosen the budget")
        picks[tier], ranked[tier] = feasible[0], feasible
    notes: list[str] = []
    check: dict[str, Any] = {}
    if remeasure:
        from gtn_nas.search.remeasure import remeasure_picks

        picks, notes, check = remeasure_picks(space, profile, picks, ranked, budgets, latency)
    validation = getattr(getattr(latency, "table", None), "validation", {}) or {}
    return SearchResult(candidates, picks, budgets, source, scored_by, notes,
                        {k: v for k, v in validation.items()
                         if k in ("students", "mape", "rmspe", "within_5pct", "within_10pct",
                                  "noise_floor")}, check, profile.name)


class MemoScorer:
    """One score per canonical sample, shared by the searches of several devices."""

    def __init__(self, scorer: Callable[[Sample], float]) -> None:
        self.scorer, self.cache = scorer, {}
        self.description = getattr(scorer, "description", "score")

    def __call__(self, sample: Sample) -> float:
        key = tuple(sample.items())
        if key not in self.cache:
            self.cache[key] = self.scorer(sample)
        return self.cache[key]


def describe_limits(limits: Mapping[str, float]) -> str:
    return ", ".join(f"{METRICS[k]} <= {v:g}" for k, v in limits.items())


def minimal_costs(space: SupernetSpace, unit_costs: UnitCosts,
                  latency=None) -> dict[str, float]:
    """The smallest reachable params (M), MFLOPs and latency over the whole space.

    Costs are sums over unit steps, so a pass over the units keeping the cheapest way to reach
    each input shape gives the exact minimum (one per metric). A table's latency minimum is a
    lower bound (its correction is not a sum); a measured latency has no minimum here.
    """
    from gtn_nas.hardware.latency import reachable_steps

    steps = reachable_steps(space, unit_costs)
    metrics = {"params_m": lambda s, c: c.params / 1e6, "mflops": lambda s, c: c.flops / 1e6}
    if latency is not None and hasattr(latency, "step_ms"):
        metrics["latency_ms"] = lambda s, c: latency.step_ms(s)
    minima = {}
    for metric, cost_of in metrics.items():
        best = {(space.in_channels, space.input_size): 0.0}
        for name in space.units:
            nxt: dict[tuple[int, int], float] = {}
            unit_steps = [s for s in steps if s.unit == name]
            for (channels, size), so_far in best.items():
                for step in unit_steps:
                    if (step.in_channels, step.in_size) != (channels, size):
                        continue
                    cost = unit_costs.step_cost(step)
                    state = (cost.out_channels, cost.out_size)
                    nxt[state] = min(nxt.get(state, math.inf), so_far + cost_of(step, cost))
                if _can_drop(space, name, unit_costs, channels, size):
                    nxt[(channels, size)] = min(nxt.get((channels, size), math.inf), so_far)
            best = nxt
        minima[metric] = min(best.values())
    if "latency_ms" in minima:
        minima["latency_ms"] = latency.finish(minima["latency_ms"])
    return minima


def _can_drop(space: SupernetSpace, unit_name: str, unit_costs: UnitCosts,
              channels: int, size: int) -> bool:
    """Whether some configuration of the unit drops it (no module) at this input."""
    from gtn_nas.space.costs import PathStep

    return any(not unit_costs.step_cost(PathStep(unit_name, config, channels, size)).present
               for config in space.unit_configs(unit_name))


def check_feasible(space: SupernetSpace, budgets: Mapping[str, Mapping[str, float]],
                   unit_costs: UnitCosts, latency) -> None:
    """Raises InfeasibleBudgetError for a budget below the smallest reachable cost."""
    minima = minimal_costs(space, unit_costs, latency)
    for tier, limits in budgets.items():
        for metric, limit in limits.items():
            if metric in minima and limit < minima[metric]:
                raise InfeasibleBudgetError(
                    f"tier {tier}: {METRICS[metric]} <= {limit:g} is below the smallest "
                    f"reachable in {space.spec} ({minima[metric]:.4g})")
