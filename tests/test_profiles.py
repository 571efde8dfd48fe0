"""Hardware profiles: the bundled ones load and validate; every broken field is one clear line."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from gtn_nas.config import to_plain
from gtn_nas.errors import ConfigError
from gtn_nas.hardware.profiles import (
    PROFILES_DIR, TIERS, DeviceFacts, HardwareProfile, TierBudget, load_profile, profile_names,
    validate_profile,
)

BUNDLED = ["host_cpu", "jetson", "raspberry_pi4"]

VALID = {
    "name": "toy",
    "description": "a toy device",
    "device": {"kind": "cpu", "peak_gflops": 10.0, "memory_bandwidth_gbs": 5.0, "cores": 2},
    "runtime": {"providers": ["CPUExecutionProvider"], "threads": 2, "precision": "fp32",
                "opset": 17},
    "input": {"shape": [3, 32, 32], "batch": 1},
    "measurement": {"warmup": 2, "repeats": 5, "statistic": "median"},
    "budgets": {"s": {"latency_ms": 1.0, "mflops": 100},
                "m": {"latency_ms": 2.0, "mflops": 300},
                "l": {"latency_ms": 4.0, "mflops": 900}},
    "latency_table": "toy.latency.json",
}


def write(tmp_path: Path, data, name: str = "toy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def broken(path: tuple[str, ...], value=None, delete: bool = False) -> dict:
    """VALID with the field at ``path`` set to ``value`` (or deleted)."""
    data = copy.deepcopy(VALID)
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


# ------------------------------------------------------------------------- bundled profiles

def test_profile_names_lists_the_bundled_three():
    assert profile_names() == BUNDLED
    # package data (gtn_nas/hw_profiles/), so an installed wheel has them too
    assert PROFILES_DIR == Path(__file__).resolve().parents[1] / "gtn_nas" / "hw_profiles"


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_profiles_load_and_validate(name):
    profile = load_profile(name)
    validate_profile(profile, name)  # idempotent: a loaded profile re-validates
    assert profile.source == PROFILES_DIR / f"{name}.yaml"
    assert profile.tiers() == list(TIERS)
    assert profile.device.runs_here is (name == "host_cpu")
    assert profile.input.shape == (3, 32, 32) and profile.input.batch == 1
    for tier in TIERS:
        assert profile.budgets[tier].limits().keys() >= {"latency_ms", "mflops"}


def test_bundled_profile_contents():
    jetson = load_profile("jetson")
    assert jetson.name == "jetson_orin_nano" and jetson.device.kind == "gpu"
    assert jetson.runtime.providers == ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                        "CPUExecutionProvider")
    assert jetson.runtime.precision == "fp16" and jetson.latency_table_path() is None
    pi = load_profile("raspberry_pi4")
    assert pi.runtime.threads == 4 and pi.device.cores == 4 and pi.device.kind == "cpu"
    host = load_profile("host_cpu")
    assert host.runtime.threads == 2 and host.runtime.providers == ("CPUExecutionProvider",)
    # The paper's presets (188 / 698 / 1220 MFLOPs) fall in tiers s / m / l of the host.
    for mflops, tier in ((188, "s"), (698, "m"), (1220, "l")):
        assert mflops <= host.budgets[tier].mflops


def test_latency_table_path_resolves_next_to_the_file(tmp_path, monkeypatch):
    sub = tmp_path / "profiles"
    sub.mkdir()
    path = write(sub, VALID)
    monkeypatch.chdir(tmp_path)  # a relative path on the command line
    profile = load_profile("profiles/toy.yaml")
    assert profile.source == path.resolve()
    assert profile.latency_table_path() == path.resolve().parent / "toy.latency.json"
    assert profile.latency_table_path(writable=True) == profile.latency_table_path()
    absolute = write(tmp_path, broken(("latency_table",), str(tmp_path / "t.json")), "abs.yaml")
    assert load_profile(absolute).latency_table_path() == tmp_path / "t.json"


def test_a_bundled_profile_keeps_its_table_in_the_user_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    host = load_profile("host_cpu")
    expected = cache / "gtn-nas" / "latency" / "host_cpu.latency.json"
    assert host.latency_table_path() == expected  # read and written there, never in the package
    assert host.latency_table_path(writable=True) == expected
    # by name, by the bundled file's path or through the checkout's hw_profiles link: the same
    assert load_profile(PROFILES_DIR / "host_cpu.yaml").latency_table_path() == expected
    link = Path(__file__).resolve().parents[1] / "hw_profiles" / "host_cpu.yaml"
    if link.exists():
        assert load_profile(link).latency_table_path() == expected


@pytest.mark.parametrize("xdg", [None, "", "relative/cache"])
def test_without_an_absolute_xdg_cache_home_the_cache_is_home_dot_cache(tmp_path, monkeypatch,
                                                                       xdg):
    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)  # XDG: a relative value is ignored
    assert load_profile("host_cpu").latency_table_path() == \
        tmp_path / ".cache" / "gtn-nas" / "latency" / "host_cpu.latency.json"


def test_a_table_shipped_in_the_package_is_read_until_this_machine_builds_its_own(
        tmp_path, monkeypatch):
    from gtn_nas.hardware import profile_files

    package = tmp_path / "package" / "hw_profiles"  # stands in for the installed package data
    package.mkdir(parents=True)
    write(package, VALID, "toy.yaml")
    (package / "toy.latency.json").write_text("{}")
    monkeypatch.setattr(profile_files, "bundled_dir", lambda: package)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "gtn-nas" / "latency" / "toy.latency.json"
    toy = load_profile(package / "toy.yaml")
    assert toy.latency_table_path() == package / "toy.latency.json"
    assert toy.latency_table_path(writable=True) == cached  # a build never writes the package
    cached.parent.mkdir(parents=True)
    cached.write_text("{}")
    assert toy.latency_table_path() == cached  # this machine's own table wins


def test_load_by_path_and_by_name_are_equal(tmp_path):
    by_name = load_profile("jetson")
    by_path = load_profile(PROFILES_DIR / "jetson.yaml")
    copied = load_profile(write(tmp_path, (PROFILES_DIR / "jetson.yaml").read_text(), "j.yaml"))
    assert by_name == by_path == copied
    assert copied.source != by_name.source
    assert load_profile("jetson.yaml") == by_name


def test_plain_round_trip(tmp_path):
    profile = load_profile("host_cpu")
    plain = to_plain(profile)
    plain.pop("source")
    assert load_profile(write(tmp_path, plain)) == profile


def test_profile_built_in_code_validates():
    profile = HardwareProfile(
        name="code", description="built in code",
        device=DeviceFacts(kind="npu", peak_gflops=100, memory_bandwidth_gbs=10),
        budgets={"s": TierBudget(params_m=0.5), "m": TierBudget(params_m=1.0),
                 "l": TierBudget(params_m=2.0)})
    validate_profile(profile, "code")
    assert profile.budgets["m"].limits() == {"params_m": 1.0}
    assert profile.latency_table_path() is None
    profile.budgets["l"] = TierBudget(params_m=0.7)
    with pytest.raises(ConfigError, match=r"^code: budgets\.l\.params_m: .*s <= m <= l"):
        validate_profile(profile, "code")


# ----------------------------------------------------------------------------- bad profiles

def load_error(tmp_path: Path, data) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path.resolve()}:") or message.startswith(f"{path}:"), message
    return message


def test_valid_toy_profile_loads(tmp_path):
    profile = load_profile(write(tmp_path, VALID))
    assert profile.name == "toy" and profile.budgets["l"].limits() == {"latency_ms": 4.0,
                                                                       "mflops": 900.0}


@pytest.mark.parametrize("field", ["name", "description", "device", "budgets"])
def test_missing_required_field(tmp_path, field):
    message = load_error(tmp_path, broken((field,), delete=True))
    assert f": {field}: required field is missing" in message


@pytest.mark.parametrize("field", ["kind", "peak_gflops", "memory_bandwidth_gbs"])
def test_missing_device_field(tmp_path, field):
    message = load_error(tmp_path, broken(("device", field), delete=True))
    assert f": device: {field}: required field is missing" in message


@pytest.mark.parametrize("path, key, expected", [
    ((), "budget", "unknown option 'budget' (did you mean: budgets?)"),
    (("device",), "peek_gflops",
     "device: unknown option 'peek_gflops' (did you mean: peak_gflops?)"),
    (("runtime",), "thread", "runtime: unknown option 'thread' (did you mean: threads?)"),
    (("input",), "size", "input: unknown option 'size'"),
    (("measurement",), "repeat", "measurement: unknown option 'repeat' (did you mean: repeats?)"),
    (("budgets", "m"), "latency",
     "budgets.m: unknown option 'latency' (did you mean: latency_ms?)"),
])
def test_unknown_keys_name_their_nesting(tmp_path, path, key, expected):
    data = copy.deepcopy(VALID)
    node = data
    for part in path:
        node = node[part]
    node[key] = 1
    assert load_error(tmp_path, data).endswith(expected)


def test_misspelled_required_key_is_reported_as_unknown(tmp_path):
    text = (PROFILES_DIR / "jetson.yaml").read_text().replace("peak_gflops:", "peek_gflops:")
    path = write(tmp_path, text, "jetson.yaml")
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert str(info.value) == (f"{path.resolve()}: device: unknown option 'peek_gflops' "
                               f"(did you mean: peak_gflops?)")
    data = broken(("budgets",), delete=True)
    data["budget"] = VALID["budgets"]
    assert "unknown option 'budget' (did you mean: budgets?)" in load_error(tmp_path, data)


def test_source_is_not_a_yaml_field(tmp_path):
    assert "unknown option 'source'" in load_error(tmp_path, broken(("source",), "x.yaml"))


@pytest.mark.parametrize("path, value, expected", [
    (("device", "peak_gflops"), 0, "device.peak_gflops: must be a finite number > 0"),
    (("device", "peak_gflops"), -5.0, "device.peak_gflops: must be a finite number > 0"),
    (("device", "peak_gflops"), float("inf"), "device.peak_gflops: must be a finite number > 0"),
    (("device", "peak_gflops"), "fast", "device: peak_gflops: 'fast' is not a float"),
    (("device", "memory_bandwidth_gbs"), 0.0, "device.memory_bandwidth_gbs: must be"),
    (("device", "kind"), "tpu", "device: kind: 'tpu' is not allowed (allowed: cpu, gpu, npu)"),
    (("device", "cores"), 0, "device.cores: must be an integer >= 1"),
    (("runtime", "threads"), -1, "runtime.threads: must be an integer >= 0"),
    (("runtime", "opset"), 6, "runtime.opset: 6 is outside 7..25"),
    (("runtime", "opset"), 26, "runtime.opset: 26 is outside 7..25"),
    (("runtime", "precision"), "int8", "runtime: precision: 'int8' is not allowed"),
    (("runtime", "engine"), "tensorrt", "runtime: engine: 'tensorrt' is not allowed"),
    (("input", "shape"), [3, 32], "input.shape: [3, 32] is not [C, H, W]"),
    (("input", "shape"), [3, 0, 0], "input.shape: [3, 0, 0] is not [C, H, W]"),
    (("input", "shape"), [3, 32, 16], "input.shape: H (32) must equal W (16)"),
    (("input", "batch"), 0, "input.batch: must be an integer >= 1"),
    (("measurement", "warmup"), -1, "measurement.warmup: must be an integer >= 0"),
    (("measurement", "repeats"), 0, "measurement.repeats: must be an integer >= 1"),
    (("measurement", "statistic"), "max", "measurement: statistic: 'max' is not allowed"),
    (("name",), "", "name: must be a non-empty string"),
    (("description",), 3, "description: 3 is not a string"),
    (("latency_table",), "  ", "latency_table: must be a non-empty file name"),
])
def test_bad_values(tmp_path, path, value, expected):
    assert expected in load_error(tmp_path, broken(path, value))


def test_zero_warmup_is_allowed(tmp_path):
    profile = load_profile(write(tmp_path, broken(("measurement", "warmup"), 0)))
    assert profile.measurement.warmup == 0


def test_unknown_provider_lists_close_matches(tmp_path):
    data = broken(("runtime", "providers"), ["CUDAExecutionProvider", "CPUExecutionProvder"])
    message = load_error(tmp_path, data)
    assert re.search(r"runtime\.providers: 'CPUExecutionProvder' is not an ONNX Runtime "
                     r"execution provider \(did you mean: CPUExecutionProvider", message)


def test_provider_short_names_suggest_the_full_name(tmp_path):
    message = load_error(tmp_path, broken(("runtime", "providers"), ["cuda"]))
    assert "'cuda' is not an ONNX Runtime execution provider (did you mean: " \
        "CUDAExecutionProvider?)" in message


def test_unknown_provider_without_close_match_lists_known(tmp_path):
    message = load_error(tmp_path, broken(("runtime", "providers"), ["Quantum"]))
    assert "runtime.providers: 'Quantum'" in message and "known: " in message
    assert "CPUExecutionProvider" in message


def test_unavailable_but_known_provider_is_fine(tmp_path):
    data = broken(("runtime", "providers"), ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    assert load_profile(write(tmp_path, data)).runtime.providers[0] == "TensorrtExecutionProvider"


@pytest.mark.parametrize("providers, expected", [
    ([], "runtime.providers: empty"),
    (["CPUExecutionProvider", "CPUExecutionProvider"], "listed twice"),
])
def test_empty_or_repeated_providers(tmp_path, providers, expected):
    assert expected in load_error(tmp_path, broken(("runtime", "providers"), providers))


def test_budgets_missing_tier(tmp_path):
    data = copy.deepcopy(VALID)
    del data["budgets"]["m"]
    assert "budgets.m: tier is missing" in load_error(tmp_path, data)


def test_budgets_extra_tier(tmp_path):
    data = copy.deepcopy(VALID)
    data["budgets"]["xl"] = {"mflops": 5000}
    assert "budgets.xl: unknown tier (tiers: s, m, l)" in load_error(tmp_path, data)
    data["budgets"]["xl"] = 5000  # named as a tier before its contents are read
    assert "budgets.xl: unknown tier (tiers: s, m, l)" in load_error(tmp_path, data)


def test_budgets_checked_in_code_too():
    profile = load_profile("jetson")
    del profile.budgets["l"]
    with pytest.raises(ConfigError, match=r"^here: budgets\.l: tier is missing"):
        validate_profile(profile, "here")


def test_budgets_not_a_mapping(tmp_path):
    assert "budgets: expected a mapping of tiers" in load_error(tmp_path, broken(("budgets",),
                                                                                 [1, 2, 3]))


def test_tier_without_limits(tmp_path):
    message = load_error(tmp_path, broken(("budgets", "s"), {}))
    assert "budgets.s: no limit set (set at least one of latency_ms, mflops, params_m)" in message


@pytest.mark.parametrize("metric, value", [("latency_ms", 0), ("mflops", -10), ("params_m", 0)])
def test_non_positive_limit(tmp_path, metric, value):
    message = load_error(tmp_path, broken(("budgets", "m", metric), value))
    assert f"budgets.m.{metric}: must be a finite number > 0" in message


def test_limit_of_the_wrong_type(tmp_path):
    message = load_error(tmp_path, broken(("budgets", "l", "mflops"), "lots"))
    assert "budgets.l: mflops: 'lots' is not a float" in message


@pytest.mark.parametrize("tier, metric, value, expected", [
    ("m", "mflops", 50, "budgets.m.mflops: 50 is below budgets.s.mflops (100)"),
    ("l", "latency_ms", 1.5, "budgets.l.latency_ms: 1.5 is below budgets.m.latency_ms (2)"),
])
def test_tiers_must_be_ordered(tmp_path, tier, metric, value, expected):
    message = load_error(tmp_path, broken(("budgets", tier, metric), value))
    assert expected in message and "tiers must be ordered s <= m <= l" in message


def test_order_skips_tiers_without_the_metric(tmp_path):
    data = copy.deepcopy(VALID)
    del data["budgets"]["m"]["mflops"]
    data["budgets"]["l"]["mflops"] = 50  # below s, with m unset in between
    assert "budgets.l.mflops: 50 is below budgets.s.mflops (100)" in load_error(tmp_path, data)
    data["budgets"]["l"]["mflops"] = 150
    assert load_profile(write(tmp_path, data)).budgets["m"].mflops is None


def test_equal_tiers_are_allowed(tmp_path):
    data = broken(("budgets", "m", "mflops"), 100)
    assert load_profile(write(tmp_path, data)).budgets["m"].mflops == 100


@pytest.mark.parametrize("text, expected", [
    ("name: [unclosed\n", "malformed YAML/JSON"),
    ("", "a hardware profile must be a mapping of fields, got an empty file"),
    ("- a\n- b\n", "a hardware profile must be a mapping of fields, got a list"),
    ("name: a\nname: b\n", "duplicate key 'name'"),
])
def test_malformed_files(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(expected)) as info:
        load_profile(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------ names

def test_unknown_name_suggests_close_match():
    with pytest.raises(ConfigError) as info:
        load_profile("jetsn")
    message = str(info.value)
    assert "unknown hardware profile 'jetsn' (did you mean: jetson?)" in message
    assert "bundled profiles: host_cpu, jetson, raspberry_pi4" in message


def test_unknown_name_without_match_lists_bundled():
    with pytest.raises(ConfigError, match=r"bundled profiles: host_cpu, jetson, raspberry_pi4"):
        load_profile("mainframe")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist \(bundled profiles: host_cpu"):
        load_profile(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"is a directory"):
        load_profile(tmp_path)
