"""The hardware-aware search on a toy space with a known optimum, budgets and outputs."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import yaml

from conftest import EXAMPLE_PLUGIN
from gtn_nas.cli import main
from gtn_nas.space.costs import UnitCosts
from gtn_nas.errors import ConfigError, InfeasibleBudgetError
from gtn_nas.space.plugins import build_space
from gtn_nas.hardware.profiles import TierBudget, load_profile
from gtn_nas.search.scoring import proxy_score
from gtn_nas.search.strategy import Candidate, Evaluator, minimal_costs, pareto_front, run_search


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
                     "students/s.yaml", "students/m.yaml", "students/l.yaml",
                     ".gtn-nas.lock",  # one writer per folder (gtn_nas.locks)
                     "latencies-toy.json"}  # what a rerun reads back (measured latency)
    candidates = json.loads((out / "candidates.json").read_text())["candidates"]
    assert len(candidates) >= 3
    pick = yaml.safe_load((out / "students" / "s.yaml").read_text())
    assert pick["tier"] == "s" and pick["mflops"] <= 0.3
    assert "| s |" in (out / "summary.md").read_text()
    code = main(["search", "--hw", str(profile), "--space", EXAMPLE_PLUGIN, "--width-mult",
                 "0.25", "--budget-evals", "30", "--out", str(tmp_path / "x"),
                 "--strategy", "bogus"])
    assert code == 2


@pytest.mark.slow
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
                 "--budget-evals", "12", "--score", "branch", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    scores = [c["score"] for c in json.loads((out / "candidates.json").read_text())["candidates"]]
    if "not ranking by them" in printed:  # one epoch: at chance, a named proxy ranks instead
        assert "log10(FLOPs)" in printed
    else:
        assert "GTN teacher branch score" in printed
        assert all(0.0 <= s <= 1.0 for s in scores), "scores are validation accuracies"
    code = main(["search", "--hw", str(profile), "--teacher", str(run / "teacher.pt"),
                 "--budget-evals", "12", "--epochs", "2", "--candidates", "3", "--limit", "200",
                 "--budget-students", "30", "--out", str(tmp_path / "auto")])
    printed = capsys.readouterr().out
    # the teacher run's data is known: picks by trained accuracy, budgets in ms on the device
    assert code == 0 and "proposals ranked by log10(FLOPs)" in printed, printed
    assert "picks by trained accuracy" in printed and "latency percentiles" in printed
    assert (tmp_path / "auto" / "halving.png").is_file()
    code = main(["search", "--hw", str(profile), "--teacher", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "y")])
    assert code == 2


@pytest.fixture(scope="module")
def tiny_table(toy, tmp_path_factory):
    """A small latency table of the toy space, and host_cpu with latency budgets from it."""
    from gtn_nas.hardware.latency_build import build_latency_table
    from gtn_nas.hardware.profiles import MeasurementSpec

    base = dataclasses.replace(load_profile("host_cpu"),
                               measurement=MeasurementSpec(warmup=1, repeats=5))
    table = build_latency_table(toy, base, fit_students=10, adaptive_rounds=0,
                                validation_students=2, noise_rounds=3, profiled_runs=2)
    path = table.save(tmp_path_factory.mktemp("table") / "t.json")
    costs = UnitCosts(toy)
    predictions = sorted(table.predict(toy.sample(i), costs) for i in range(30))
    limit = predictions[len(predictions) // 2]
    profile = dataclasses.replace(base, budgets={"s": TierBudget(latency_ms=limit),
                                                 "m": TierBudget(latency_ms=limit * 2),
                                                 "l": TierBudget(latency_ms=limit * 4)})
    return table, path, profile


def test_latency_budgets_from_a_table(toy, tiny_table):
    table, path, profile = tiny_table
    result = run_search(toy, profile, budget_evals=30, latency_table=str(path),
                        remeasure=False)
    assert result.latency_source == "table" and result.latency_validation["students"] == 2
    assert "noise_floor" in result.latency_validation
    for tier, pick in result.picks.items():
        assert pick.latency_ms <= result.budgets[tier]["latency_ms"]


def test_busy_machine_keeps_the_table_picks_and_writes_every_output(toy, tiny_table,
                                                                    tmp_path, monkeypatch):
    """Issue 8: a busy machine used to fail the whole search (InfeasibleBudgetError after 20
    re-measured candidates) and change the picks; now the table's picks are kept, the notes
    say why, and every output is written. Same seed, same table: same picks."""
    import random

    from gtn_nas.search.report import save_search

    table, path, profile = tiny_table
    quiet = run_search(toy, profile, budget_evals=30, seed=4, latency_table=str(path),
                       remeasure=False)
    rng = random.Random(0)
    monkeypatch.setattr("gtn_nas.hardware.latency.time_session",  # 5-50x slower, erratic
                        lambda session, feed, warmup, repeats: [rng.uniform(5, 50) * 0.05
                                                                for _ in range(repeats)])
    busy = run_search(toy, profile, budget_evals=30, seed=4, latency_table=str(path),
                      remeasure=True)
    assert {t: c.sample for t, c in busy.picks.items()} == \
        {t: c.sample for t, c in quiet.picks.items()}
    assert busy.remeasurement["trusted"] is False and busy.remeasurement["noise"] > 0.05
    assert any("not trusted" in note for note in busy.notes)
    assert all(pick.measured["median_ms"] > 0 for pick in busy.picks.values())
    paths = save_search(busy, tmp_path / "out", toy, profile)
    assert all(p.is_file() for p in paths["students"].values())
    summary = paths["summary"].read_text()
    assert "NOT trusted" in summary and "spread" in summary


def test_trusted_remeasurement_replaces_a_pick_over_budget(toy, tiny_table, monkeypatch):
    table, path, profile = tiny_table
    baseline = table.noise["median_ms"]

    def quiet_machine(space, profile, samples, reference, rounds):
        # the picks run 50x the reference, their alternatives 0.01x; no noise, no load
        ratio = {name: 0.01 if "#" in name else 50.0 for name in samples}
        return {"rounds": {name: [ratio[name] * baseline] * rounds for name in samples},
                "reference": [baseline] * rounds, "noise": 0.0, "ratio": ratio}

    monkeypatch.setattr("gtn_nas.search.remeasure._measure", quiet_machine)
    result = run_search(toy, profile, budget_evals=30, seed=4, latency_table=str(path),
                        remeasure=True)
    assert result.remeasurement["trusted"] is True and result.remeasurement["load"] == 1.0
    replaced = [note for note in result.notes if "replaced by the next best" in note]
    kept = [note for note in result.notes if "no alternative fitted" in note]
    assert replaced and len(replaced) + len(kept) == 3
    for tier, pick in result.picks.items():
        if any(note.startswith(f"tier {tier}:") for note in replaced):
            assert pick.measured["normalized_ms"] <= result.budgets[tier]["latency_ms"]


def test_multi_device_search_writes_every_devices_picks(tmp_path, capsys):
    host = yaml.safe_load(load_profile("host_cpu").source.read_text())
    host.update(name="here", latency_table=None, input={"shape": [3, 8, 8], "batch": 1},
                measurement={"warmup": 1, "repeats": 5, "statistic": "median"},
                budgets={"s": {"mflops": 0.3}, "m": {"mflops": 0.6}, "l": {"mflops": 2.0}})
    (tmp_path / "here.yaml").write_text(yaml.safe_dump(host))
    out = tmp_path / "search"
    code = main(["search", "--hw", str(tmp_path / "here.yaml"), "--hw", "jetson", "--space",
                 EXAMPLE_PLUGIN, "--width-mult", "0.25", "--budget-evals", "30",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for device in ("here", "jetson_orin_nano"):
        for tier in "sml":
            pick = yaml.safe_load((out / device / "students" / f"{tier}.yaml").read_text())
            assert pick["tier"] == tier and pick["profile"] == device
        assert (out / device / "summary.md").is_file()
        assert (out / device / "pareto.png").is_file()
    summary = (out / "summary.md").read_text()
    assert "| here | s |" in summary and "| jetson_orin_nano | l |" in summary
    assert "ESTIMATED" in summary and "jetson_orin_nano/students/s.yaml" in summary
    assert main(["search", "--hw", "jetson", "--hw", "jetson", "--space", EXAMPLE_PLUGIN,
                 "--out", str(tmp_path / "x")]) == 2


def test_estimated_latency_minimum_is_exact(toy):
    from gtn_nas.hardware.latency import EstimatedLatency

    profile = load_profile("raspberry_pi4")
    costs = UnitCosts(toy)
    estimate = EstimatedLatency(toy, profile, costs)
    everything = [toy.validate(dict(zip(toy.choices(), values)))
                  for values in itertools.product(*toy.choices().values())]
    smallest = min(estimate(sample) for sample in everything)
    assert minimal_costs(toy, costs, estimate)["latency_ms"] == pytest.approx(smallest)


def test_branch_scorer_counts_correct_predictions():
    import torch

    from gtn_nas.search.scoring import BranchScorer

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
