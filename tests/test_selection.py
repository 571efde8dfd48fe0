"""Picks chosen by trained accuracy: budgets from the device, proposals, and successive
halving scheduled by Optuna, on planted learning curves (the trials' training is replaced by
curves whose answer is known) and once for real on a tiny recipe."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from gtn_nas.config import DataConfig
from gtn_nas.distill.jobs import DistillRunConfig
from gtn_nas.engine import TrainConfig
from gtn_nas.errors import ConfigError
from gtn_nas.hardware.profiles import TierBudget, load_profile
from gtn_nas.search import trials
from gtn_nas.search.budgets import device_budgets, latency_budgets
from gtn_nas.search.selection import (HalvingConfig, bands, network_key, propose,
                                      sample_key, select_by_training)
from gtn_nas.search.strategy import Candidate
from gtn_nas.space.costs import UnitCosts
from gtn_nas.space.plugins import build_space

EPOCHS = 10


@pytest.fixture(scope="module")
def space():
    return build_space("resnet_supernet", num_classes=10, in_channels=3, input_size=8,
                       width_mult=0.25)


def _candidates(space, count, latency=lambda i: 1.0):
    costs = UnitCosts(space)
    made, seen, seed = [], set(), 0
    while len(made) < count:
        sample = space.sample(seed)
        seed += 1
        if network_key(space, sample) in seen:
            continue
        seen.add(network_key(space, sample))
        made.append(Candidate(sample, costs.params(sample), costs.flops(sample) / 1e6,
                              latency(len(made)), "measured", float(count - len(made))))
    return made


def _recipe():
    return DistillRunConfig(method="none", students=("search",), data=DataConfig("digits"),
                            train=TrainConfig(epochs=EPOCHS, schedule="cosine", progress=False))


@pytest.fixture
def planted(monkeypatch):
    """Replaces the trials' training by planted validation curves (key -> list of EPOCHS
    accuracies), keeping each run's epochs between trials as a checkpoint would; counts the
    epochs each candidate trained."""
    state = SimpleNamespace(curves={}, runs={}, trained={}, interrupt=None)

    def history(run_dir):
        return list(state.runs.get(str(run_dir), []))

    def train_job(config, spec, seed, splits, teacher, digest, run_dir, *, on_epoch_end=None):
        done = state.runs.setdefault(str(run_dir), [])
        for epoch in range(len(done) + 1, config.train.epochs + 1):
            if state.interrupt == (spec.name, epoch):
                state.interrupt = None
                raise KeyboardInterrupt
            record = {"epoch": epoch, "val/acc": state.curves[spec.name][epoch - 1],
                      "seconds": 0.5}
            done.append(record)
            state.trained[spec.name] = state.trained.get(spec.name, 0) + 1
            if on_epoch_end is not None:
                on_epoch_end(record)
        return None, SimpleNamespace(history=list(done))

    monkeypatch.setattr("gtn_nas.distill.jobs.train_job", train_job)
    monkeypatch.setattr(trials, "_history", history)
    monkeypatch.setattr("gtn_nas.search.selection._history", history)
    monkeypatch.setattr(trials, "HEARTBEAT_S", 1)
    monkeypatch.setattr(trials, "GRACE_S", 2)
    return state


def _plant(state, candidates, finals):
    for candidate, value in zip(candidates, finals):
        state.curves[sample_key(candidate.sample)] = [value] * EPOCHS


def test_halving_rungs_by_hand():
    assert HalvingConfig().rungs(30) == [3, 9, 27, 30]
    assert HalvingConfig().rungs(10) == [1, 3, 9, 10]
    assert HalvingConfig(reduction_factor=2, min_epochs=2).rungs(10) == [2, 4, 8, 10]
    assert HalvingConfig().rungs(1) == [1]
    with pytest.raises(ConfigError, match="reduction_factor must be an integer >= 2"):
        HalvingConfig(reduction_factor=1).validate()
    with pytest.raises(ConfigError, match="band must be in"):
        HalvingConfig(band=1.5).validate()


def test_the_best_first_candidate_stops_every_other_at_the_first_rung(space, planted,
                                                                        tmp_path):
    """Planted: accuracies fall with the proposal order, so asynchronous halving promotes the
    first candidate only; the pick is it, the others train one epoch each."""
    candidates = _candidates(space, 9)
    _plant(planted, candidates, [0.9 - 0.05 * i for i in range(9)])
    chosen = select_by_training(space, {"s": candidates}, {"s": {"latency_ms": 2.0}},
                                _recipe(), tmp_path, device="dev", splits=object())
    selection = chosen["s"]
    assert selection.pick.key == sample_key(candidates[0].sample)
    assert selection.pick.final == pytest.approx(0.9)
    assert selection.per_rung() == [9, 1, 1, 1]
    assert planted.trained == {sample_key(c.sample): EPOCHS if i == 0 else 1
                               for i, c in enumerate(candidates)}
    assert [t.state for t in selection.trials].count("pruned") == 8


def test_rising_candidates_are_all_promoted_and_the_last_is_picked(space, planted, tmp_path):
    candidates = _candidates(space, 4)
    _plant(planted, candidates, [0.5, 0.6, 0.7, 0.8])
    chosen = select_by_training(space, {"s": candidates}, {"s": {"latency_ms": 2.0}},
                                _recipe(), tmp_path, device="dev", splits=object(),
                                halving=HalvingConfig(candidates=4))
    assert chosen["s"].pick.key == sample_key(candidates[3].sample)
    assert chosen["s"].per_rung() == [4, 4, 4, 4]


def test_a_tier_takes_the_best_finished_candidate_of_any_tier_within_its_budget(
        space, planted, tmp_path):
    """m may pick a student trained for s when it is the most accurate one within m's budget
    that costs more than s's pick; s's own pick never serves m."""
    made = _candidates(space, 6, latency=lambda i: [1.0, 1.2, 1.1, 1.3, 2.0, 2.5][i])
    s_own, m_own = made[:3], made[3:]
    _plant(planted, s_own, [0.6, 0.9, 0.95])  # rising: all three trained to the end
    _plant(planted, m_own, [0.7, 0.65, 0.6])  # falling: only the first
    budgets = {"s": {"latency_ms": 1.25}, "m": {"latency_ms": 3.0}}
    chosen = select_by_training(space, {"s": s_own, "m": m_own}, budgets, _recipe(), tmp_path,
                                device="dev", splits=object(),
                                halving=HalvingConfig(candidates=3))
    assert chosen["s"].pick.key == sample_key(s_own[2].sample)   # 95%, 1.1 ms
    assert chosen["m"].pick.key == sample_key(s_own[1].sample)   # 90%, 1.2 ms > 1.1 ms
    assert "trained for another tier" in chosen["m"].why
    assert "no costlier than tier s's pick" in chosen["m"].notes[0]


def test_an_interrupted_search_continues_without_training_an_epoch_twice(space, planted,
                                                                       tmp_path):
    candidates = _candidates(space, 5)
    _plant(planted, candidates, [0.5, 0.9, 0.6, 0.8, 0.7])
    args = (space, {"s": candidates}, {"s": {"latency_ms": 2.0}}, _recipe(), tmp_path)
    planted.interrupt = (sample_key(candidates[1].sample), 4)  # killed inside a trial
    with pytest.raises(KeyboardInterrupt):
        select_by_training(*args, device="dev", splits=object(),
                           halving=HalvingConfig(candidates=5))
    first = dict(planted.trained)
    chosen = select_by_training(*args, device="dev", splits=object(),
                                halving=HalvingConfig(candidates=5))
    assert chosen["s"].pick.key == sample_key(candidates[1].sample)
    interrupted = dict(planted.trained)
    # an uninterrupted search of the same candidates trains exactly as many epochs
    planted.runs.clear()
    planted.trained.clear()
    again = select_by_training(*args[:4], tmp_path / "fresh", device="dev", splits=object(),
                               halving=HalvingConfig(candidates=5))
    assert interrupted == planted.trained and first != interrupted
    assert again["s"].pick.key == chosen["s"].pick.key


def test_a_storage_of_another_search_is_refused(space, planted, tmp_path):
    candidates = _candidates(space, 3)
    _plant(planted, candidates, [0.5, 0.6, 0.7])
    select_by_training(space, {"s": candidates}, {"s": {"latency_ms": 2.0}}, _recipe(),
                       tmp_path, device="dev", splits=object(), halving=HalvingConfig(3))
    with pytest.raises(ConfigError, match="already holds study dev/s of another search"):
        select_by_training(space, {"s": candidates[:2]}, {"s": {"latency_ms": 2.0}},
                           _recipe(), tmp_path, device="dev", splits=object(),
                           halving=HalvingConfig(2))


def test_proposals_lie_in_the_band_best_score_first_one_per_network(space):
    candidates = _candidates(space, 8, latency=lambda i: 0.25 * (i + 1))  # 0.25 .. 2.0 ms
    for c in candidates:
        c.score = -c.latency_ms  # a score that prefers fast students
    limits = {"latency_ms": 1.6}
    chosen = propose(space, candidates, limits, 3, low=0.8)
    assert [c.latency_ms for c in chosen] == [1.0, 1.25, 1.5]
    # too few in the band: the best-scored below it fill up
    assert [c.latency_ms for c in propose(space, candidates, limits, 6, low=1.4)] == \
        [1.5, 0.25, 0.5, 0.75, 1.0, 1.25]
    # identity at an unchanged shape is the same network as zero: proposed once
    base = dict(candidates[0].sample)
    twin = dict(base)
    layer = next(f"layer{i}" for i in range(2, 7)
                 if base[f"layer{i}/op"] == "zero" and base.get(f"layer{i - 1}/op") != "zero")
    twin[f"{layer}/op"] = "identity"
    if network_key(space, twin) == network_key(space, base):
        pair = [dataclasses.replace(candidates[0]),
                dataclasses.replace(candidates[0], sample=space.validate(twin))]
        assert len(propose(space, pair, {"latency_ms": 10.0}, 2)) == 1
    assert bands({"s": {"latency_ms": 1.0}, "m": {"latency_ms": 1.5}}) == {"s": 0.5, "m": 1.0}


def test_budgets_come_from_each_devices_latencies(space):
    host, jetson = load_profile("host_cpu"), load_profile("jetson")
    costs = UnitCosts(space)

    class Model:
        def __init__(self, per, source):
            self.per, self.source = per, source

        def __call__(self, sample):
            return self.per(sample)

    by_flops = Model(lambda s: costs.flops(s) / 1e6, "estimated")
    by_params = Model(lambda s: costs.params(s) / 1e4, "measured")
    budgets, rule = device_budgets(space, host, by_params, students=40, seed=3)
    values = [costs.params(space.sample((3 * 100_003 + i) % 2 ** 32)) / 1e4 for i in range(40)]
    assert [budgets[t].latency_ms for t in "sml"] == [
        float(f"{np.percentile(values, q):.5g}") for q in (25, 50, 90)]
    assert "latency percentiles 25/50/90 of 40 random students on host_cpu" in rule
    other, _ = device_budgets(space, jetson, by_flops, students=40, seed=3)
    assert other["s"].latency_ms != budgets["s"].latency_ms
    # the profile's own budgets where its input is the students'
    at_32 = build_space("resnet_supernet", num_classes=10, in_channels=3, input_size=32,
                        width_mult=0.25)
    own, rule = device_budgets(at_32, host, by_params)
    assert own == host.budgets and rule.startswith("the profile's own budgets")
    with pytest.raises(ConfigError, match="latency budgets need a latency model"):
        device_budgets(space, host, None)
    with pytest.raises(ConfigError, match="unknown budget rule"):
        device_budgets(space, host, by_params, rule="flops")
    assert latency_budgets([1.0, 2.0, 3.0, 4.0, 5.0])["l"] == TierBudget(latency_ms=4.6)


def test_with_tiers_best_a_tier_takes_its_most_accurate_student_even_the_tier_belows(
        space, planted, tmp_path):
    """The planted search above under the other rule: m's most accurate student within its
    budget is s's pick (95%, 1.1 ms), so m takes it and says the tiers coincide; the same
    trials (nothing trained again) serve both rules."""
    made = _candidates(space, 6, latency=lambda i: [1.0, 1.2, 1.1, 1.3, 2.0, 2.5][i])
    s_own, m_own = made[:3], made[3:]
    _plant(planted, s_own, [0.6, 0.9, 0.95])
    _plant(planted, m_own, [0.7, 0.65, 0.6])
    budgets = {"s": {"latency_ms": 1.25}, "m": {"latency_ms": 3.0}}
    args = (space, {"s": s_own, "m": m_own}, budgets, _recipe(), tmp_path)
    distinct = select_by_training(*args, device="dev", splits=object(),
                                  halving=HalvingConfig(candidates=3))
    trained = dict(planted.trained)
    best = select_by_training(*args, device="dev", splits=object(),
                              halving=HalvingConfig(candidates=3, tiers="best"))
    assert planted.trained == trained  # the second choice trained nothing
    assert distinct["m"].pick.key == sample_key(s_own[1].sample)
    assert best["s"].pick.key == best["m"].pick.key == sample_key(s_own[2].sample)
    assert "the same student as tier s's" in best["m"].notes[0]
    with pytest.raises(ConfigError, match="tiers must be distinct or best"):
        HalvingConfig(tiers="biggest").validate()


def test_a_rung_that_cannot_tell_its_candidates_apart_is_named():
    """Planted curves: at epoch 1 all three sit at 10.0-10.5% and one stops there (a coin
    toss, named); at epoch 3 they spread over 30 points (a real cut, not named)."""
    from gtn_nas.search.selection import TrialRecord, blind_rungs

    def record(key, values, final, epochs):
        return TrialRecord(key, {}, 1.0, 1.0, 1, 0.0, "complete", values, final, epochs)

    records = [record("a", {1: 0.100, 3: 0.50, 9: 0.8}, 0.8, 9),
               record("b", {1: 0.105, 3: 0.20}, None, 3),
               record("c", {1: 0.101}, None, 1)]
    notes = blind_rungs(records, [1, 3, 9])
    assert len(notes) == 1 and notes[0].startswith("at epoch 1 its 3 candidates were within "
                                                   "0.5 points")
    assert "so the 1 it stopped there" in notes[0]
    assert blind_rungs(records, [1, 3, 9], spread=0.004) == []
