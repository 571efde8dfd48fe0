"""One search per device, end to end: budgets from the device, proposals, picks, a check.

For each profile (what ``gtn-nas search --hw ...`` and ``gtn-nas run``'s search stage do):

1. its **latency model** (table, measured here, or estimated; :mod:`gtn_nas.hardware.latency`);
2. its **budgets** (:mod:`gtn_nas.search.budgets`): the profile's own where its input is the
   students', else latency percentiles of random students timed on that device;
3. **proposals**: NNI's evolution under those budgets ranks candidates by a zero-training
   score (:func:`gtn_nas.search.strategy.run_search`);
4. **picks**: with ``select="trained"``, successive halving trains each tier's best proposals
   on the student recipe and picks the most accurate (:mod:`gtn_nas.search.selection`);
   with ``select="proxy"`` the best-scored candidate is the pick (fast, but the score is a
   proxy, and the summary says so);
5. **the check**: on a device that is this machine, every pick is measured again (fresh export
   and session, interleaved with a reference model) against its budget; a pick clearly over
   it is replaced by the next most accurate one that measures within it.

Example:
    >>> results = search_devices(space, [load_profile("host_cpu"), load_profile("jetson")],
    ...                          scorer=scorer, scored_by="FLOPs", select="trained",
    ...                          recipe=recipe, folder="runs/search")            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping

from gtn_nas.errors import ConfigError
from gtn_nas.search.budgets import device_budgets
from gtn_nas.search.recorded_latency import RecordedLatency
from gtn_nas.search.strategy import MemoScorer, SearchResult, run_search
from gtn_nas.space.supernet import SupernetSpace

SELECTIONS = ("trained", "proxy")


REMEASURED = ("measured", "table")
"""Latency models whose milliseconds are this machine's own, so a pick is re-measured against
its budget; an estimate's budgets are in the estimate's units and its picks are kept."""


def device_latency(space: SupernetSpace, profile, unit_costs, *, mode: str = "auto",
                   table: str | None = None):
    """The device's latency model; ``auto`` gives every device one: a matching table, else
    measured here for a profile that runs here, else the roofline estimate."""
    from gtn_nas.hardware.latency import latency_model

    if mode == "auto" and table is None:
        path = profile.latency_table_path()
        if not (path is not None and path.is_file()):
            mode = "measure" if profile.device.runs_here else "estimate"
    return latency_model(space, profile, unit_costs, table, mode)


def search_devices(space: SupernetSpace, profiles: list, *, scorer, scored_by: str,
                   strategy: str = "evolution", budget_evals: int = 200, seed: int = 0,
                   latency_mode: str = "auto", latency_tables: Mapping[str, str] | None = None,
                   budget_rule: str = "auto", budget_students: int = 100,
                   select: str = "proxy", recipe=None, halving=None, train_seed: int = 0,
                   folder: str | Path | None = None, splits=None,
                   say: Callable[[str], None] | None = None,
                   progress: Callable[[int, int], None] | None = None
                   ) -> dict[str, SearchResult]:
    """Searches every profile (see the module docstring); each student is scored once and
    trained once across devices.

    Args:
        space: The students' space.
        profiles: Device profiles (distinct names).
        scorer, scored_by: The zero-training score that ranks proposals, and its description.
        strategy, budget_evals, seed: The evolution's (per device).
        latency_mode, latency_tables: Each device's latency model (:func:`device_latency`).
        budget_rule, budget_students: How budgets are set (:func:`device_budgets`).
        select: ``trained`` (successive halving; needs ``recipe`` and ``folder``) or ``proxy``.
        recipe: The students' training without a teacher (a ``DistillRunConfig``, method
            ``none``): what each trial trains.
        halving: :class:`gtn_nas.search.selection.HalvingConfig`.
        train_seed: The trials' training seed.
        folder: Where the trials' runs and their storage go (shared by the devices).
        splits: The recipe's splits when already loaded.
        say: Receives progress lines.
        progress: ``progress(done, total)`` of each device's evolution.

    Raises:
        ConfigError, InfeasibleBudgetError: bad settings, a budget no student meets.
    """
    from gtn_nas.space.costs import UnitCosts

    if select not in SELECTIONS:
        raise ConfigError(f"unknown selection '{select}'; choose {' or '.join(SELECTIONS)}")
    if select == "trained" and (recipe is None or folder is None):
        raise ConfigError("a trained selection needs the students' recipe and a folder")
    names = [p.name for p in profiles]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--hw: profile {repeated[0]} is given twice; each device once")
    shared = MemoScorer(scorer) if scorer is not None else None
    tables = dict(latency_tables or {})
    unit_costs = UnitCosts(space)
    results = {}
    for profile in profiles:
        latency = device_latency(space, profile, unit_costs, mode=latency_mode,
                                 table=tables.get(profile.name))
        if folder is not None and getattr(latency, "source", None) == "measured":
            latency = recorded(latency, space, profile, Path(folder))
        budgets, rule = device_budgets(space, profile, latency, rule=budget_rule,
                                       students=budget_students, seed=seed)
        if isinstance(latency, RecordedLatency):
            latency.save()
        profile = dataclasses.replace(profile, budgets=budgets)
        if say is not None:
            say(f"{profile.name}: budgets {_budget_line(budgets)} ({rule})")
        result = run_search(space, profile, strategy=strategy, budget_evals=budget_evals,
                            seed=seed, scorer=shared, scored_by=scored_by, remeasure=False,
                            latency=latency, progress=progress)
        result.budget_rule = rule
        if isinstance(latency, RecordedLatency):
            latency.save()
            if latency.reused and say is not None:
                say(f"{profile.name}: {latency.reused} latencies read from this search's "
                    f"earlier run ({latency.path.name}), not timed again")
        if select == "trained":
            ranked = _trained_picks(space, result, recipe, halving, folder, train_seed,
                                    splits, say)
        else:
            result.notes.extend(distinct_picks(result))
            ranked = _proxy_ranking(result)
        if profile.device.runs_here and getattr(latency, "source", None) in REMEASURED:
            from gtn_nas.search.remeasure import remeasure_picks

            picks, notes, check = remeasure_picks(space, profile, result.picks, ranked,
                                                  result.budgets, latency)
            result.picks, result.remeasurement = picks, check
            result.notes.extend(notes)
        results[profile.name] = result
    return results


def recorded(latency, space: SupernetSpace, profile, folder: Path):
    """``latency`` (a measured model) timing each student once for this search and keeping
    the timings in ``folder/latencies-<device>.json`` (:mod:`gtn_nas.search.recorded_latency`),
    so that a resumed search sees the latencies, budgets and candidates it saw before."""
    from gtn_nas.config import to_plain
    from gtn_nas.hardware.latency import student_input_shape
    from gtn_nas.search.recorded_latency import file_name

    identity = {"device": profile.name, "source": latency.source,
                "input": list(student_input_shape(space, profile)), "space": space.spec,
                "options": to_plain(space.options)}
    return RecordedLatency(latency, folder / file_name(profile.name), identity)


def _budget_line(budgets) -> str:
    from gtn_nas.search.strategy import describe_limits

    return "; ".join(f"{tier} {describe_limits(b.limits())}" for tier, b in budgets.items())


def _trained_picks(space, result: SearchResult, recipe, halving, folder, seed: int, splits,
                   say) -> dict[str, list]:
    from gtn_nas.search.selection import (HalvingConfig, apply_selection, bands, propose,
                                          select_by_training)

    halving = halving or HalvingConfig()
    lows = bands(result.budgets, halving.band)
    proposals = {tier: propose(space, result.candidates, result.budgets[tier],
                               halving.candidates, lows[tier]) for tier in result.budgets}
    chosen = select_by_training(space, proposals, result.budgets, recipe, folder,
                                device=result.profile, halving=halving, seed=seed,
                                splits=splits, say=say)
    return apply_selection(result, chosen)


def _proxy_ranking(result: SearchResult) -> dict[str, list]:
    """Per tier the feasible candidates, the pick first, then by score."""
    ranked = {}
    for tier, pick in result.picks.items():
        others = sorted((c for c in result.candidates if c is not pick
                         and c.violation(result.budgets[tier]) == 0),
                        key=lambda c: (-c.score, c.latency_ms or 0.0, c.mflops))
        ranked[tier] = [pick] + others
    return ranked


def distinct_picks(result: SearchResult) -> list[str]:
    """Makes each tier's pick costlier (latency, else MFLOPs) than the tier below, taking the
    best-scored feasible candidate above it; returns notes on what changed."""
    cost = "latency_ms" if result.latency_source != "none" else "mflops"
    notes: list[str] = []
    previous = None
    for tier, pick in list(result.picks.items()):
        if previous is not None and (pick.metric(cost) or 0) <= (previous.metric(cost) or 0):
            limits = result.budgets[tier]
            better = sorted((c for c in result.candidates if c.violation(limits) == 0
                             and (c.metric(cost) or 0) > (previous.metric(cost) or 0)),
                            key=lambda c: (-c.score, c.metric(cost) or 0))
            if better:
                notes.append(f"tier {tier}: its best-scored student was no costlier than the "
                             f"tier below it; took the best-scored one that is")
                result.picks[tier] = pick = better[0]
        previous = pick
    return notes


def selection_summary(result: SearchResult) -> dict[str, Any]:
    """What a report needs of a search's picking: per tier the rungs, how many candidates
    each rung trained, the pick and why (empty for a proxy-picked search)."""
    if not result.selection:
        return {}
    return {tier: selection.to_json() for tier, selection in result.selection.items()}
