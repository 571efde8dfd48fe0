"""bench/regret_tables.py: the regret of a pick against its pool, and asynchronous halving
replayed on learning curves, on planted numbers whose answers are worked out by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import regret_tables as tables  # noqa: E402


def test_a_pick_is_scored_against_every_student_within_its_budget():
    accs = {f"k{i}": 70.0 + i for i in range(20)}  # k19 is the best (89.0)
    scored = tables.score_pick("k17", accs)
    assert scored["regret"] == pytest.approx(2.0)
    assert (scored["rank"], scored["of"], scored["hit"]) == (3, 20, False)  # top 10% = 2
    assert tables.score_pick("k18", accs)["hit"] and tables.score_pick("missing", accs) is None


def test_asha_replay_follows_optunas_promotion_rule_by_hand():
    """Rungs 1, 3 then the end (9); eta 3. a is first (always promoted); b beats a at rung 1
    and 3; c is below both at rung 1; d is the third of four at rung 1: rank index
    4 // 3 - 1 = 0, so only the best goes on, d stops."""
    curves = {"a": {1: 0.5, 3: 0.6, 9: 0.70}, "b": {1: 0.6, 3: 0.7, 9: 0.80},
              "c": {1: 0.4, 3: 0.9, 9: 0.95}, "d": {1: 0.55, 3: 0.9, 9: 0.99}}
    pick, cost = tables.asha(list(curves), lambda k, e: curves[k][e], lambda k: curves[k][9],
                             [1, 3, 9], 3)
    assert pick == "b"
    assert cost == 9 + 9 + 1 + 1


def test_the_replay_judges_picks_on_the_other_seed(tmp_path):
    """Planted pool: validation curves (seed 1) rank the students as their seed-2 test
    accuracies do, except one that leads at every rung on seed 1 but is worst on seed 2."""
    students, keys = {}, []
    for i in range(6):
        key = f"s{i}"
        keys.append(key)
        val = [50.0 + i + e for e in range(9)]
        students[key] = {"val": {1: val}, "loss": {1: [1.0 - 0.01 * i] * 9},
                         "test": {1: 60.0 + i, 2: 60.0 + i}, "latency_ms": 1.0,
                         "flops": float(i), "params": float(-i)}
    budgets = {"s": {"latency_ms": 2.0}}
    best = tables.simulate(students, {"s": keys}, budgets, n=6, eta=3, first=1,
                           order="flops")
    assert best == {"mean_regret": 0.0, "worst_regret": 0.0, "hit_rate": 1.0,
                    "trainings": pytest.approx((9 + 5 * 1) / 9)}
    students["s0"]["val"][1] = [99.0] * 9  # looks best on seed 1, is the worst on seed 2
    fooled = tables.simulate(students, {"s": keys}, budgets, n=6, eta=3, first=1,
                             order="params")  # params order puts s0 first
    assert fooled["mean_regret"] == pytest.approx(5.0) and fooled["hit_rate"] == 0.0


def test_best_within_budget_takes_the_most_accurate_finished_trial_of_any_tier():
    """Planted trained search: tier m's pick (b) had to cost more than s's (a); the most
    accurate finished trial within m's budget is a itself, so under the other rule m is a;
    c (stopped early) and d (over l's budget) never count, so l is a too."""
    def trial(key, ms, final, epochs=30):
        return {"key": key, "sample": {"k": key}, "latency_ms": ms, "final": final,
                "trained_epochs": epochs, "params": 1}

    search = {"method": "trained", "seed": 0, "picks": {}, "selection": {
        "s": {"rungs": [3, 10, 30], "trials": [trial("a", 0.05, 0.80)]},
        "m": {"rungs": [3, 10, 30], "trials": [trial("b", 0.09, 0.78),
                                               trial("c", 0.08, 0.95, epochs=10)]},
        "l": {"rungs": [3, 10, 30], "trials": [trial("d", 0.50, 0.99)]}}}
    budgets = {"s": {"latency_ms": 0.06}, "m": {"latency_ms": 0.1}, "l": {"latency_ms": 0.4}}
    picks = tables.best_within_budget(search, budgets)
    assert {tier: pick["sample"]["k"] for tier, pick in picks.items()} == \
        {"s": "a", "m": "a", "l": "a"}
    budgets["s"]["latency_ms"] = 0.04  # nothing finished fits: no pick rather than a guess
    assert "s" not in tables.best_within_budget(search, budgets)
