"""A search's measured latencies are kept with it, so a resumed search sees the budgets and
candidates it saw (gtn_nas.search.recorded_latency)."""

from __future__ import annotations

import json
import random

import pytest

from conftest import EXAMPLE_PLUGIN
from gtn_nas.hardware.profiles import load_profile
from gtn_nas.search import devices
from gtn_nas.search.recorded_latency import RecordedLatency
from gtn_nas.space.plugins import build_space


class NoisyMeasurement:
    """A stand-in for a measured model: the students' cost in MFLOPs times a random factor
    that differs at every call, as a busy machine's timings do."""

    source = "measured"

    def __init__(self, space, seed: int) -> None:
        from gtn_nas.space.costs import UnitCosts

        self.costs, self.random, self.calls = UnitCosts(space), random.Random(seed), 0

    def __call__(self, sample) -> float:
        self.calls += 1
        return self.costs.flops(sample) / 1e9 * self.random.uniform(0.7, 1.3)


@pytest.fixture(scope="module")
def toy():
    return build_space(EXAMPLE_PLUGIN, width_mult=0.25, input_size=8)


def test_timings_are_read_back_under_the_same_identity_only(toy, tmp_path):
    path = tmp_path / "latencies.json"
    samples = list({json.dumps(s, sort_keys=True): s for s in map(toy.sample, range(40))}
                   .values())[:5]
    assert len(samples) == 5
    first = RecordedLatency(NoisyMeasurement(toy, 0), path, {"device": "a"})
    timed = [first(s) for s in samples]
    assert first(samples[0]) == timed[0] and first.model.calls == 5  # each student timed once
    first.save()
    again = RecordedLatency(NoisyMeasurement(toy, 1), path, {"device": "a"})
    assert [again(s) for s in samples] == timed and again.model.calls == 0
    assert again.reused == 5 and again.source == "measured"
    other = RecordedLatency(NoisyMeasurement(toy, 1), path, {"device": "b"})
    assert [other(s) for s in samples] != timed and other.model.calls == 5
    path.write_text("{not json")
    broken = RecordedLatency(NoisyMeasurement(toy, 2), path, {"device": "a"})
    broken(samples[0])
    assert broken.model.calls == 1  # an unreadable file is timed again, not an error
    broken.save()
    assert json.loads(path.read_text())["format"] == "gtn-nas-latencies/1"


def test_a_killed_search_keeps_what_it_timed(toy, tmp_path):
    """Written every ``save_every`` new timings, so a kill loses at most that many."""
    path = tmp_path / "latencies.json"
    latency = RecordedLatency(NoisyMeasurement(toy, 0), path, {"device": "a"})
    latency.save_every = 3
    for sample in list({json.dumps(s, sort_keys=True): s for s in map(toy.sample, range(40))}
                       .values())[:7]:
        latency(sample)
    assert len(json.loads(path.read_text())["timings"]) == 6  # no save() called


def test_a_resumed_search_sees_the_budgets_and_picks_it_saw(toy, tmp_path, monkeypatch):
    """Budgets from latency percentiles of random students, candidates feasible by latency:
    with a fresh (differently noisy) measurement per run, the search folder's timings make
    the second run's budgets and picks the first's, and without a folder they differ."""
    models = []

    def noisy(space, profile, unit_costs, *, mode="auto", table=None):
        models.append(NoisyMeasurement(space, len(models)))
        return models[-1]

    monkeypatch.setattr(devices, "device_latency", noisy)
    jetson = load_profile("jetson")  # does not run here: nothing is re-measured for real

    def search(folder):
        result = devices.search_devices(toy, [jetson], scorer=None, scored_by="proxy",
                                        budget_evals=30, budget_students=40, folder=folder)
        result = result[jetson.name]
        return ({t: dict(b) for t, b in result.budgets.items()},
                {t: p.sample for t, p in result.picks.items()})

    first = search(tmp_path / "search")
    assert (tmp_path / "search" / f"latencies-{jetson.name}.json").is_file()
    assert search(tmp_path / "search") == first
    assert models[1].calls == 0  # every latency read back, none timed
    assert search(None)[0] != first[0]  # the noise is real: unrecorded, the budgets move
