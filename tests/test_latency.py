"""Latency: ORT measurement, in-context kernels, the predictor (build, predict, file, checks),
machine records, latency models and the roofline estimate."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from conftest import EXAMPLE_PLUGIN
from gtn_nas.space.costs import UnitCosts
from gtn_nas.errors import ConfigError
from gtn_nas.hardware.latency import (EstimatedLatency, MeasuredLatency, estimate_latency_ms,
                             latency_model, measure_interleaved, measure_module,
                             reachable_steps)
from gtn_nas.hardware.latency_build import _coverage_students, build_latency_table, error_metrics
from gtn_nas.hardware.latency_kernels import measure_student, parse_profile
from gtn_nas.hardware.latency_predictor import LatencyTable, TableLatency, export_trees
from gtn_nas.hardware.machine import machine_mismatches, machine_record
from gtn_nas.space.plugins import build_space
from gtn_nas.hardware.profiles import MeasurementSpec, load_profile


@pytest.fixture(scope="module")
def quick_profile():
    profile = load_profile("host_cpu")
    return dataclasses.replace(profile, measurement=MeasurementSpec(warmup=2, repeats=5))


@pytest.fixture(scope="module")
def tiny_space():
    return build_space(EXAMPLE_PLUGIN, width_mult=0.25, input_size=8)


@pytest.fixture(scope="module")
def table(tiny_space, quick_profile):
    return build_latency_table(tiny_space, quick_profile, fit_students=12, adaptive_rounds=1,
                               adaptive_students=4, validation_students=3, noise_rounds=4,
                               profiled_runs=3)


def test_measurement_statistics_are_consistent(quick_profile):
    stats = measure_module(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (1, 3, 16, 16),
                           quick_profile)
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms
    assert stats.repeats == 5 and stats.spread >= 0


def test_kernels_are_attributed_to_the_units_that_run_them():
    events = [{"cat": "Node", "name": f"{node}_kernel_time", "dur": dur,
               "args": {"op_name": op, "input_type_shape": [{"float": [1, 4, 8, 8]}],
                        "output_type_shape": [{"float": [1, 4, 8, 8]}]}}
              for node, op, dur in [("/stem/conv/Relu_output_0_nchwc", "Conv", 10),
                                    ("ReorderInput", "ReorderInput", 3),
                                    ("/layer1/conv/Conv", "Conv", 20),
                                    ("ReorderOutput", "ReorderOutput", 2)] * 2]
    units = parse_profile(events, ["stem", "layer1", "head"], skip=1)
    assert [sig.split("|")[0] for sig, _ in units["stem"]] == ["Conv"]
    assert units["stem"][0][0].endswith("+Relu") and units["stem"][0][1] == 0.010
    # a reorder ONNX Runtime inserted goes to the unit that consumes it; a trailing one to
    # the last unit
    assert [sig.split("|")[0] for sig, _ in units["layer1"]] == ["ReorderInput", "Conv"]
    assert [sig.split("|")[0] for sig, _ in units["head"]] == ["ReorderOutput"]


@pytest.mark.parametrize("spec", ["resnet_supernet", "mbconv", EXAMPLE_PLUGIN],
                         ids=["resnet_supernet", "mbconv", "plugin"])
def test_every_space_gets_in_context_kernels_through_the_same_code(spec, quick_profile):
    space = build_space(spec, width_mult=0.25, input_size=8)
    student = space.freeze(space.sample(1), seed=0)
    run = measure_student(student, (1, space.in_channels, 8, 8), quick_profile, profiled_runs=2)
    assert run.measured_ms > 0 and set(run.units) == {n for n, _ in student.named_children()}
    assert run.units[list(run.units)[0]] and run.units["head"]  # stem and head run kernels
    assert 0 < run.kernel_ms()


def test_coverage_students_run_every_reachable_step(tiny_space):
    space = tiny_space
    costs = UnitCosts(space)
    wanted = {s.key() for s in reachable_steps(space, costs)}
    chosen, missing = _coverage_students(space, costs, wanted, seed=0, tries=5000)
    assert not missing
    covered = {s.key() for sample in chosen for s, c in costs.steps(sample) if c.present}
    assert covered == wanted


def test_a_built_table_covers_the_space_and_records_its_fit_and_validation(table, tiny_space):
    costs = UnitCosts(tiny_space)
    assert table.noise["spread"] >= 0 and len(table.noise["rounds_ms"]) == 4
    assert table.protocol == {**table.protocol, "warmup": 2, "repeats": 5,
                              "statistic": "median"}
    assert set(table.steps) == {s.key() for s in reachable_steps(tiny_space, costs)}
    assert all(entry["timed"] == "in-context" for entry in table.steps.values())
    assert table.kernels and table.fit["adaptive_rounds"] == 1
    assert "linear_mape" in table.model["selection"]  # trees kept only if they help
    fitted = table.fit["in_sample"]
    val = table.validation
    # how close the predictor comes is a timing, measured in bench/latency_table.py (docs/
    # BENCHMARKS.md, "Latency predictor on host_cpu"), not asserted here: on a busy machine it
    # varies; the fit itself is checked against a planted answer below
    assert 0 <= fitted["mape"] < float("inf") and fitted["students"] == table.fit["students"]
    assert {"mape", "rmspe", "within_5pct", "within_10pct", "worst", "under_1ms",
            "noise_floor"} <= set(val)
    assert val["students"] == 3 and val["under_1ms"]["students"] == 3
    # every validation student is measured twice: the device's own repeat beside the error
    assert val["retest"]["students"] == 3 and val["vs_both_passes"]["students"] == 3
    assert all(row["retest_ms"] > 0 for row in val["rows"])
    assert table.predict(tiny_space.sample(5), costs) > 0


def test_the_fit_recovers_a_planted_linear_latency(table, tiny_space):
    """Whole-student latencies planted as 1.3 x the summed step times + 0.002 ms per kernel +
    0.01 ms: the robust linear fit recovers the coefficients and the table predicts every
    student exactly (trees, if kept, correct nothing: their target is 0)."""
    import copy

    from gtn_nas.hardware.latency_build import _fit_model

    costs = UnitCosts(tiny_space)
    samples = [tiny_space.sample(100 + i) for i in range(30)]
    x = np.stack([table.features(s, costs) for s in samples])
    planted = 1.3 * x[:, 0] + 0.002 * x[:, 2] + 0.01
    rows = [{"sample": s, "measured_ms": float(y)} for s, y in zip(samples, planted)]
    fresh = copy.deepcopy(table)
    _, _, errors = _fit_model(fresh, rows, costs, seed=0)
    assert fresh.model["linear"] == pytest.approx([1.3, 0.002, 0.01], rel=1e-3)
    assert float(np.max(errors)) < 1e-4
    predicted = [fresh.predict(sample, costs) for sample in samples]
    np.testing.assert_allclose(predicted, planted, rtol=1e-4)


def test_exported_trees_evaluate_like_scikit_learn():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 7))
    y = np.sin(x[:, 0]) + x[:, 3] ** 2
    gbm = GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0).fit(x, y)
    table = LatencyTable("p", "s", {}, (1,), "median", {},
                         model={"trees": export_trees(gbm, x)})
    mine = np.array([table.correction(row) for row in x])
    np.testing.assert_allclose(mine, gbm.predict(x), rtol=1e-6, atol=1e-6)


def test_table_round_trip_and_refusals(table, tiny_space, quick_profile, tmp_path):
    path = table.save(tmp_path / "t.json")
    loaded = LatencyTable.load(path, tiny_space, quick_profile)
    costs = UnitCosts(tiny_space)
    sample = tiny_space.sample(3)
    assert loaded.predict(sample, costs) == pytest.approx(table.predict(sample, costs))

    def refused(match, space=tiny_space, profile=quick_profile, file=path):
        with pytest.raises(ConfigError, match=match) as info:
            LatencyTable.load(file, space, profile)
        assert len(str(info.value).splitlines()) == 1
        return str(info.value)

    refused("was built for space", space=build_space(EXAMPLE_PLUGIN, width_mult=0.5,
                                                      input_size=8))
    refused("was built for profile host_cpu, not jetson", profile=load_profile("jetson"))
    refused("holds batch-1 median latencies", profile=dataclasses.replace(
        quick_profile, input=dataclasses.replace(quick_profile.input, batch=8)))
    refused("measured with 2 threads", profile=dataclasses.replace(
        quick_profile, runtime=dataclasses.replace(quick_profile.runtime, threads=4)))
    data = json.loads(path.read_text())
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**data, "format": "gtn-nas-latency-table/1"}))
    assert "rebuild it with: gtn-nas profile" in refused("table format", file=old)
    # another machine: the record names another CPU without AVX-512 and another runtime
    other = tmp_path / "other.json"
    machine = {**data["machine"], "cpu_model": "AMD EPYC 7B13", "isa": ["avx", "avx2", "fma"],
               "onnxruntime": "1.0.0"}
    other.write_text(json.dumps({**data, "machine": machine}))
    message = refused("measured on another machine", file=other)
    assert "AMD EPYC 7B13" in message and "rebuild it here with: gtn-nas profile --hw" in message
    # a device's table (the profile does not run here) is not checked against this machine
    device = dataclasses.replace(quick_profile, device=dataclasses.replace(
        quick_profile.device, runs_here=False))
    assert LatencyTable.load(other, tiny_space, device).machine["cpu_model"] == "AMD EPYC 7B13"
    with pytest.raises(ConfigError, match="does not exist"):
        LatencyTable.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a gtn-nas latency table"):
        LatencyTable.load(tmp_path / "bad.json")
    resnet = build_space("resnet_supernet", width_mult=0.25, input_size=8)
    with pytest.raises(ConfigError, match="has no entry"):
        table.predict(resnet.sample(0), UnitCosts(resnet))


def test_latency_model_modes(table, tiny_space, quick_profile, tmp_path, caplog,
                             monkeypatch):
    costs = UnitCosts(tiny_space)
    path = table.save(tmp_path / "t.json")
    here = dataclasses.replace(quick_profile, latency_table=str(path))
    assert isinstance(latency_model(tiny_space, here, costs, max_table_mape=1.0), TableLatency)
    assert isinstance(latency_model(tiny_space, here, costs, mode="estimate"),
                      EstimatedLatency)
    data = json.loads(path.read_text())
    data["machine"]["isa"] = ["avx2"]
    (tmp_path / "other.json").write_text(json.dumps(data))
    elsewhere = dataclasses.replace(here, latency_table=str(tmp_path / "other.json"))
    with caplog.at_level(logging.WARNING):
        model = latency_model(tiny_space, elsewhere, costs)       # auto: measure instead
    assert isinstance(model, MeasuredLatency) and "another machine" in caplog.text
    poor = dataclasses.replace(table, validation={**table.validation, "mape": 0.4})
    poor.save(tmp_path / "poor.json")                             # e.g. 8x8 digits inputs
    assert isinstance(latency_model(tiny_space, dataclasses.replace(
        here, latency_table=str(tmp_path / "poor.json")), costs), MeasuredLatency)
    with pytest.raises(ConfigError, match="another machine"):
        latency_model(tiny_space, elsewhere, costs, mode="table")
    from gtn_nas.hardware.profiles import TierBudget

    flops_only = dataclasses.replace(elsewhere, budgets={t: TierBudget(mflops=m) for t, m in
                                                         zip("sml", (1, 2, 3))})
    assert latency_model(tiny_space, flops_only, costs) is None   # nothing to measure for
    with pytest.raises(ConfigError, match="unknown latency mode"):
        latency_model(tiny_space, here, costs, mode="guess")
    calls = []
    real = measure_module
    monkeypatch.setattr("gtn_nas.hardware.latency.measure_module",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    sample = tiny_space.sample(0)
    assert model(sample) == model(dict(sample)) > 0 and len(calls) == 1  # cached
    assert model.source == "measured"


def test_interleaved_measurement_reports_the_reference_noise(quick_profile):
    result = measure_interleaved({"a": nn.Conv2d(3, 8, 3), "b": nn.Conv2d(3, 16, 3)},
                                 nn.Conv2d(3, 4, 3), (1, 3, 16, 16), quick_profile, rounds=3)
    assert set(result["rounds"]) == {"a", "b"} and len(result["reference"]) == 3 * 3
    assert result["noise"] >= 0 and all(r > 0 for r in result["ratio"].values())


def test_machine_record_and_mismatches():
    here = machine_record(threads=2, providers=["CPUExecutionProvider"])
    assert {"cpu_model", "isa", "cores", "threads", "onnxruntime", "providers"} <= set(here)
    assert machine_mismatches(here, here) == []
    other = {**here, "isa": [f for f in here["isa"] if f != "avx2"] + ["sve"], "cores": 64}
    problems = machine_mismatches(other, here)
    assert any("instruction sets" in p for p in problems) and any("cores" in p for p in problems)
    assert "the table records no cpu_model" in machine_mismatches({}, here)


def test_error_metrics_by_hand():
    metrics = error_metrics([1.0, 2.08, 2.76, 4.0], [1.0, 2.0, 3.0, 5.0])
    assert metrics["mape"] == pytest.approx((0 + 0.04 + 0.08 + 0.2) / 4)
    assert metrics["rmspe"] == pytest.approx(((0.04 ** 2 + 0.08 ** 2 + 0.2 ** 2) / 4) ** 0.5)
    assert metrics["within_5pct"] == 0.5 and metrics["within_10pct"] == 0.75
    assert metrics["worst"]["error"] == pytest.approx(-0.2)


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


def test_profile_command_prints_and_stores_its_validation(tmp_path, capsys):
    import yaml

    from gtn_nas.cli import main

    data = yaml.safe_load(load_profile("host_cpu").source.read_text())
    data.update(name="tiny", input={"shape": [3, 8, 8], "batch": 1},
                measurement={"warmup": 1, "repeats": 5, "statistic": "median"})
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    out = tmp_path / "tiny.latency.json"
    code = main(["profile", "--hw", str(tmp_path / "tiny.yaml"), "--space", EXAMPLE_PLUGIN,
                 "--width-mult", "0.25", "--fit-students", "8", "--adaptive-rounds", "0",
                 "--validation-students", "3", "--noise-rounds", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for words in ("noise floor", "MAPE", "RMSPE", "within +-5%", "within +-10%", "worst",
                  "under 1 ms", "tiny.latency.png"):
        assert words in printed, words
    assert (tmp_path / "tiny.latency.png").stat().st_size > 0
    stored = json.loads(out.read_text())["validation"]
    assert {"mape", "rmspe", "within_5pct", "within_10pct", "worst", "under_1ms",
            "over_1ms", "rows"} <= set(stored)


def test_the_kill_harness_compares_tables_by_structure_and_requires_them_to_load(table,
                                                                                 tmp_path):
    """bench/fault_injection.py's profile trials: a table's values are timings (never equal
    twice), so a trial's table passes with other numbers (and another model form), and fails
    with other steps or student counts, or when it does not load."""
    import json
    from faults import compare_runs

    reference, trial = tmp_path / "ref", tmp_path / "cut"
    table.save(reference / "table.json")
    data = json.loads((reference / "table.json").read_text())

    def trial_with(change) -> list[str]:
        changed = json.loads(json.dumps(data))
        change(changed)
        trial.mkdir(exist_ok=True)
        (trial / "table.json").write_text(json.dumps(changed))
        return compare_runs(reference, trial, measured=True).problems()

    def retimed(d):
        def scaled(value):
            if isinstance(value, dict):
                return {k: scaled(v) for k, v in value.items()}
            if isinstance(value, list):
                return [scaled(v) for v in value]
            return value * 1.7 if isinstance(value, float) else value

        d["steps"], d["kernels"] = scaled(d["steps"]), scaled(d["kernels"])
        d["build_seconds"] += 3

    assert trial_with(retimed) == []
    assert trial_with(lambda d: d["model"].update(trees=None)) == []  # the timings decide
    assert trial_with(lambda d: d["steps"].popitem()) == ["summaries: table.json"]
    assert trial_with(lambda d: d["fit"].update(students=3)) == ["summaries: table.json"]
    problems = trial_with(lambda d: d.update(format="gtn-nas-latency-table/1"))
    assert problems[0] == "summaries: table.json"
    assert problems[1].startswith("corrupt: table.json (does not load: ")
    assert compare_runs(reference, trial).problems() == ["summaries: table.json"]  # by value
