"""The hardware-aware search on a toy space with a known optimum, budgets and outputs."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import yaml

from conftest import EXAMPLE_PLUGIN
from gtn_nas.cli import main
from gtn_nas.costs import UnitCosts
from gtn_nas.errors import ConfigError, InfeasibleBudgetError
from gtn_nas.plugins import build_space
from gtn_nas.profiles import TierBudget, load_profile
from gtn_nas.scoring import proxy_score
from gtn_nas.search import Candidate, Evaluator, minimal_costs, pareto_front, run_search


@pytest.fixture(scope="module")
def toy():
    return build_space(EXAMPLE_PLUGIN, width_mult=0.25, input_size=8)


def _profile(s, m, l):
    """host_cpu with FLOP budgets only (no latency: nothing is measured or estimated)."""
    profile = load_profile("host_cpu")
    budgets = {"s": TierBudget(mflops=s), "m": TierBudget(mflops=m), "l": TierBudget(mflops=l)}
    return dataclasses.replace(profile, budgets=budgets, latency_table=None)


def _brute_force(space):
    costs = UnitCosts(space)
    choices = space.choices()
    results = []
    for values in itertools.product(*choices.values()):
        sample = space.validate(dict(zip(choices, values)))
        flops, params = costs.flops(sample), costs.params(sample)
        results.append((sample, flops / 1e6, proxy_score(params, flops)))
    return results


@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_search_finds_the_known_optimum_of_each_tier(toy, strategy):
    everything = _brute_force(toy)
    mflops = sorted(f for _, f, _ in everything)
    budgets = (mflops[3], mflops[13], mflops[-1])  # s admits 4 students, l all 27
    result = run_search(toy, _profile(*budgets), strategy=strategy, budget_evals=240, seed=0)
    for tier, limit in zip("sml", budgets):
        best = max((e for e in everything if e[1] <= limit), key=lambda e: e[2])
        assert result.picks[tier].sample == best[0], tier
        assert result.picks[tier].mflops <= limit
    assert result.latency_source == "none"


def test_same_seed_same_picks_and_budgets_hold(toy):
    profile = _profile(0.3, 0.6, 2.0)
    a = run_search(toy, profile, budget_evals=30, seed=3)
    b = run_search(toy, profile, budget_evals=30, seed=3)
    assert {t: c.sample for t, c in a.picks.items()} == {t: c.sample for t, c in b.picks.items()}
    for tier, pick in a.picks.items():
        assert pick.violation(a.budgets[tier]) == 0


def test_minimal_costs_are_exact(toy):
    everything = _brute_force(toy)
    minima = minimal_costs(toy, UnitCosts(toy))
    assert minima["mflops"] == pytest.approx(min(f for _, f, _ in everything))
    paper = build_space("resnet_supernet", width_mult=0.25, input_size=8)
    costs = UnitCosts(paper)
    bare = paper.validate({f"layer{i}/op": "zero" for i in range(1, 7)})
    assert minimal_costs(paper, costs)["params_m"] == pytest.approx(costs.params(bare) / 1e6)


def test_infeasible_budgets_name_the_smallest_reachable_cost(toy):
    smallest = minimal_costs(toy, UnitCosts(toy))["mflops"]
    with pytest.raises(InfeasibleBudgetError, match=r"tier s: MFLOPs <= 0\.001 is below the "
                                                    r"smallest reachable"):
        run_search(toy, _profile(0.001, 1.0, 2.0), budget_evals=30)
    assert smallest > 0.001
    with pytest.raises(ConfigError, match="unknown strategy 'annealing'"):
        run_search(toy, _profile(0.3, 0.6, 2.0), strategy="annealing")


def test_pareto_front_by_hand():
    def cand(latency, score):
        return Candidate({}, 1, 1.0, latency, "table", score)

    points = [cand(1, 0.5), cand(2, 0.4), cand(2, 0.7), cand(3, 0.6), cand(4, 0.9)]
    front = pareto_front(points)
    assert [(c.latency_ms, c.score) for c in front] == [(1, 0.5), (2, 0.7), (4, 0.9)]


def test_evaluator_caches_canonical_samples(toy):
    evaluator = Evaluator(toy, UnitCosts(toy), None)
    sample = toy.sample(0)
    assert evaluator(sample) is evaluator(dict(sample))
    assert len(evaluator.seen) == 1


def test_search_cli_writes_all_outputs(tmp_path, capsys):
    profile = tmp_path / "toy.yaml"
    data = yaml.safe_load(load_profile("host_cpu").source.read_text())
    data.update(name="toy", latency_table=None,
                input={"shape": [3, 8, 8], "batch": 1},
                budgets={"s": {"mflops": 0.3}, "m": {"mflops": 0.6}, "l": {"mflops": 2.0}})
    profile.write_text(yaml.safe_dump(data))
    out = tmp_path / "search"
    code = main(["search", "--hw", str(profile), "--space", EXAMPLE_PLUGIN, "--width-mult",
                 "0.25", "--budget-evals", "30", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {"candidates.json", "pareto.csv", "pareto.png", "summary.md",
                     "students/s.yaml", "students/m.yaml", "students/l.yaml"}
    candidates = json.loads((out / "candidates.json").read_text())["candidates"]
    assert len(candidates) >= 3
    pick = yaml.safe_load((out / "students" / "s.yaml").read_text())
    assert pick["tier"] == "s" and pick["mflops"] <= 0.3
    assert "| s |" in (out / "summary.md").read_text()
    code = main(["search", "--hw", str(profile), "--space", EXAMPLE_PLUGIN, "--width-mult",
                 "0.25", "--budget-evals", "30", "--out", str(tmp_path / "x"),
                 "--strategy", "bogus"])
    assert code == 2


def test_search_through_a_gtn_teacher(tmp_path, capsys):
    run = tmp_path / "gtn"
    assert main(["train-teacher", "--method", "gtn", "--teacher", "tiny", "--data", "synthetic",
                 "--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2",
                 "--out", str(run)]) == 0
    profile = tmp_path / "p.yaml"
    data = yaml.safe_load(load_profile("host_cpu").source.read_text())
    data.update(name="p", latency_table=None,
                budgets={"s": {"mflops": 2}, "m": {"mflops": 5}, "l": {"mflops": 100}})
    profile.write_text(yaml.safe_dump(data))
    out = tmp_path / "search"
    code = main(["search", "--hw", str(profile), "--teacher", str(run / "teacher.pt"),
                 "--budget-evals", "12", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    scores = [c["score"] for c in json.loads((out / "candidates.json").read_text())["candidates"]]
    assert all(0.0 <= s <= 1.0 for s in scores), "scores are validation accuracies"
    assert "GTN branch-1 validation accuracy" in printed
    code = main(["search", "--hw", str(profile), "--teacher", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "y")])
    assert code == 2


def test_latency_budgets_from_a_table_and_remeasured_picks(toy, tmp_path):
    from gtn_nas.latency import build_latency_table
    from gtn_nas.profiles import MeasurementSpec

    base = dataclasses.replace(load_profile("host_cpu"),
                               measurement=MeasurementSpec(warmup=1, repeats=3))
    table = build_latency_table(toy, base, overhead_students=1, validation_students=2)
    path = table.save(tmp_path / "t.json")
    costs = UnitCosts(toy)
    predictions = sorted(table.predict(toy.sample(i), costs) for i in range(30))
    limit = predictions[len(predictions) // 2]
    profile = dataclasses.replace(base, budgets={"s": TierBudget(latency_ms=limit),
                                                 "m": TierBudget(latency_ms=limit * 2),
                                                 "l": TierBudget(latency_ms=limit * 4)})
    result = run_search(toy, profile, budget_evals=30, latency_table=str(path),
                        remeasure=False)
    assert result.latency_source == "table" and result.latency_validation["students"] == 2
    for tier, pick in result.picks.items():
        assert pick.latency_ms <= result.budgets[tier]["latency_ms"]
    # a table that under-predicts 100x: every re-measured pick misses, none is kept silently
    table.entries = {k: v / 100 for k, v in table.entries.items()}
    table.overhead_ms, table.floor_ms = 0.0, 0.0
    low = table.save(tmp_path / "low.json")
    tiny_budget = dataclasses.replace(profile, budgets={
        "s": TierBudget(latency_ms=limit / 20), "m": TierBudget(latency_ms=limit / 10),
        "l": TierBudget(latency_ms=limit / 5)})
    with pytest.raises(InfeasibleBudgetError, match="measured over"):
        run_search(toy, tiny_budget, budget_evals=30, latency_table=str(low), remeasure=True)


def test_estimated_latency_minimum_is_exact(toy):
    from gtn_nas.latency import EstimatedLatency

    profile = load_profile("raspberry_pi4")
    costs = UnitCosts(toy)
    estimate = EstimatedLatency(toy, profile, costs)
    everything = [toy.validate(dict(zip(toy.choices(), values)))
                  for values in itertools.product(*toy.choices().values())]
    smallest = min(estimate(sample) for sample in everything)
    assert minimal_costs(toy, costs, estimate)["latency_ms"] == pytest.approx(smallest)


def test_branch_scorer_counts_correct_predictions():
    import torch

    from gtn_nas.scoring import BranchScorer

    class Teacher(torch.nn.Module):
        def forward_with_features(self, x):
            return x, [x, x, x]

    class Branches(torch.nn.Module):
        def branch(self, index, feature, sample):
            # predicts class 0 for sample "a", class 1 otherwise
            logits = torch.zeros(len(feature), 2)
            logits[:, 0 if sample["op"] == "a" else 1] = 1.0
            return logits

    labels = torch.tensor([0, 0, 0, 1])
    scorer = BranchScorer(Teacher(), Branches(), torch.zeros(4, 1), labels, batch_size=3)
    assert scorer({"op": "a"}) == 0.75 and scorer({"op": "b"}) == 0.25
