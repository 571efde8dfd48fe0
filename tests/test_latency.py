"""Latency: ORT measurement, lookup tables (build, predict, save/load, checks), estimates."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from conftest import EXAMPLE_PLUGIN
from gtn_nas.costs import UnitCosts
from gtn_nas.errors import ConfigError
from gtn_nas.latency import (LatencyTable, build_latency_table, estimate_latency_ms,
                             measure_module, reachable_steps)
from gtn_nas.plugins import build_space
from gtn_nas.profiles import MeasurementSpec, load_profile


@pytest.fixture(scope="module")
def quick_profile():
    profile = load_profile("host_cpu")
    return dataclasses.replace(profile, measurement=MeasurementSpec(warmup=1, repeats=3))


@pytest.fixture(scope="module")
def tiny_space():
    return build_space(EXAMPLE_PLUGIN, width_mult=0.25, input_size=8)


@pytest.fixture(scope="module")
def table(tiny_space, quick_profile):
    return build_latency_table(tiny_space, quick_profile, overhead_students=2,
                               validation_students=3)


def test_measurement_statistics_are_consistent(quick_profile):
    stats = measure_module(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (1, 3, 16, 16),
                           quick_profile)
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms
    assert stats.repeats == 3 and stats.spread >= 0


def test_table_covers_every_student_and_predicts_the_sum_of_its_parts(table, tiny_space):
    unit_costs = UnitCosts(tiny_space)
    assert len(table.entries) == len(reachable_steps(tiny_space, unit_costs))
    for seed in range(10):
        sample = tiny_space.sample(seed)
        parts = table.parts(sample, unit_costs)
        assert len(parts) == len(tiny_space.units)  # nothing is dropped in this space
        assert table.predict(sample, unit_costs) == pytest.approx(
            max(sum(ms for _, ms in parts) + table.overhead_ms, table.floor_ms), abs=1e-12)
        assert table.predict(sample, unit_costs) >= table.floor_ms > 0
    assert set(table.validation) >= {"mape", "within_10pct", "students", "rows"}
    assert 0 <= table.validation["within_10pct"] <= 1
    assert table.machine["onnxruntime"]


def test_table_round_trip_and_refusals(table, tiny_space, quick_profile, tmp_path):
    path = table.save(tmp_path / "t.json")
    loaded = LatencyTable.load(path, tiny_space, quick_profile)
    assert loaded.entries == table.entries and loaded.overhead_ms == table.overhead_ms
    other_space = build_space(EXAMPLE_PLUGIN, width_mult=0.5, input_size=8)
    with pytest.raises(ConfigError, match="was built for space"):
        LatencyTable.load(path, other_space, quick_profile)
    with pytest.raises(ConfigError, match="was built for profile host_cpu, not jetson"):
        LatencyTable.load(path, tiny_space, load_profile("jetson"))
    batched = dataclasses.replace(quick_profile, input=dataclasses.replace(
        quick_profile.input, batch=8))
    with pytest.raises(ConfigError, match="holds batch-1 median latencies"):
        LatencyTable.load(path, tiny_space, batched)
    with pytest.raises(ConfigError, match="does not exist"):
        LatencyTable.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a gtn-nas latency table"):
        LatencyTable.load(tmp_path / "bad.json")
    resnet = build_space("resnet_supernet", width_mult=0.25, input_size=8)
    with pytest.raises(ConfigError, match="has no entry"):
        table.predict(resnet.sample(0), UnitCosts(resnet))


def test_tables_are_built_on_the_device_only(tiny_space):
    with pytest.raises(ConfigError, match="runs on TensorrtExecutionProvider, which is not "
                                          "available here"):
        build_latency_table(tiny_space, load_profile("jetson"))


def test_unavailable_providers_are_a_clear_error(quick_profile):
    gpu_only = dataclasses.replace(quick_profile, runtime=dataclasses.replace(
        quick_profile.runtime, providers=("TensorrtExecutionProvider",)))
    with pytest.raises(ConfigError, match="none of its providers .* is available here"):
        measure_module(nn.Linear(4, 4), (1, 4), gpu_only)


def test_roofline_estimate_by_hand(quick_profile):
    linear = nn.Linear(1000, 100)
    x = torch.zeros(1, 1000)
    profile = dataclasses.replace(quick_profile, device=dataclasses.replace(
        quick_profile.device, peak_gflops=1.0, memory_bandwidth_gbs=1000.0))
    compute_ms = 2 * 1000 * 100 / 1e9 * 1e3       # compute-bound on this device: 0.2 ms
    assert estimate_latency_ms(linear, x, profile) == pytest.approx(compute_ms)
    slow_memory = dataclasses.replace(profile, device=dataclasses.replace(
        profile.device, peak_gflops=1e6, memory_bandwidth_gbs=0.001))
    values = 1000 * 100 + 100 + 1000 + 100          # weights, bias, input, output
    assert estimate_latency_ms(linear, x, slow_memory) == pytest.approx(values * 4 / 1e6 * 1e3)
