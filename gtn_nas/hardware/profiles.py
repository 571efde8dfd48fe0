"""Hardware profiles: one typed, validated description of a deployment target.

A hardware profile (a YAML file; bundled ones are package data in ``gtn_nas/hw_profiles/``, see
:mod:`gtn_nas.hardware.profile_files`) says what the device is
(:class:`DeviceFacts`), how models run on it (:class:`RuntimeSpec`: ONNX Runtime execution
providers, threads, precision, opset), which input they take (:class:`InputSpec`), how latency
is measured (:class:`MeasurementSpec`) and the budgets of the student tiers ``s``, ``m`` and ``l``
(:class:`TierBudget`). :func:`load_profile` reads one by bundled name or by path and validates
it; every problem is one :class:`~gtn_nas.errors.ConfigError` line naming the file and the field.

Units: latency in milliseconds; ``mflops`` budgets in millions of FLOPs as counted by fvcore
(one multiply-add = one FLOP, see :mod:`gtn_nas.space.costs`); ``params_m`` in millions of
parameters; ``peak_gflops`` in the vendor convention (one fused multiply-add = two FLOPs);
memory bandwidth in GB/s.

Example:
    >>> profile = load_profile("host_cpu")
    >>> profile.tiers()
    ['s', 'm', 'l']
    >>> profile.runtime.providers
    ('CPUExecutionProvider',)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gtn_nas.config import from_mapping, read_yaml
from gtn_nas.errors import ConfigError, PluginError
from gtn_nas.hardware.profile_files import bundled_dir
from gtn_nas.hardware.profile_schema import (BUDGET_METRICS, OPSET_RANGE, TIERS, DeviceFacts,
                                             HardwareProfile, InputSpec, MeasurementSpec,
                                             RuntimeSpec, TierBudget)
from gtn_nas.registry import Registry

__all__ = [
    "TIERS", "PROFILES_DIR", "DeviceFacts", "RuntimeSpec", "InputSpec", "MeasurementSpec",
    "TierBudget", "HardwareProfile", "profile_names", "load_profile", "validate_profile",
]

PROFILES_DIR: Path = bundled_dir()
"""Folder of the bundled profiles (``<name>.yaml``): package data, read through
:mod:`importlib.resources`, so an installed wheel has them too."""

ENTRY_POINT_GROUP = "gtn_nas.profiles"
PROFILE_PLUGINS: Registry[Any] = Registry("hardware profile", ENTRY_POINT_GROUP)
"""Profiles of installed packages: each entry point of :data:`ENTRY_POINT_GROUP` names the path
of a YAML profile (or a callable returning it), validated like any profile file; a bundled
profile of the same name wins."""


def plugin_profile_path(name: str) -> Path:
    """The YAML file that an installed package's profile ``name`` points to.

    Raises:
        ConfigError: no package declares ``name``.
        PluginError: its entry point fails to import or names no file.
    """
    target = PROFILE_PLUGINS.get(name)
    where = f"hardware profile plugin '{name}' ({PROFILE_PLUGINS.origin(name)})"
    try:
        path = Path(os.fspath(target() if callable(target) else target)).expanduser()
    except Exception as exc:  # noqa: BLE001 - a broken package: name it in one line
        raise PluginError(f"{where} gives no file path: {type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                          ) from exc
    if not path.is_file():
        raise PluginError(f"{where} names {path}, which is not a file")
    return path.resolve()

# --------------------------------------------------------------------------------- loading

def profile_names() -> list[str]:
    """Names of the bundled profiles (stems of ``gtn_nas/hw_profiles/*.yaml``), sorted.

    Example:
        >>> profile_names()
        ['host_cpu', 'jetson', 'raspberry_pi4']
    """
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml") if path.is_file())


def _resolve(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    text = os.fspath(name_or_path)
    names = profile_names()
    bundled = ", ".join(names) or "none"
    looks_like_path = (os.sep in text or "/" in text or path.suffix in (".yaml", ".yml", ".json"))
    if path.is_dir():
        raise ConfigError(f"hardware profile {text} is a directory, not a YAML file "
                          f"(bundled profiles: {bundled})")
    if not looks_like_path and text in names:
        return PROFILES_DIR / f"{text}.yaml"
    if not looks_like_path and text in PROFILE_PLUGINS:
        return plugin_profile_path(text)
    if looks_like_path:
        bundled_file = PROFILES_DIR / path.name
        if path.parent == Path(".") and bundled_file.is_file():
            return bundled_file  # "jetson.yaml" names the bundled file
        raise ConfigError(f"hardware profile file {text} does not exist "
                          f"(bundled profiles: {bundled})")
    close = difflib.get_close_matches(text, names + PROFILE_PLUGINS.names(), n=3, cutoff=0.5)
    hint = f" (did you mean: {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown hardware profile '{text}'{hint}; bundled profiles: {bundled}; "
                      f"or give the path of a YAML file")


def _check_keys(cls: type, data: Any, where: str, required: tuple[str, ...]) -> None:
    """Unknown keys first (a typo is not "missing"), then missing required fields."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of options, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=3)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{where}: unknown option '{key}'{hint}")
    for name in required:
        if name not in data:
            raise ConfigError(f"{where}: {name}: required field is missing (required: "
                              f"{', '.join(required)})")


_SECTIONS: dict[str, tuple[type, tuple[str, ...]]] = {
    "device": (DeviceFacts, ("kind", "peak_gflops", "memory_bandwidth_gbs")),
    "runtime": (RuntimeSpec, ()),
    "input": (InputSpec, ()),
    "measurement": (MeasurementSpec, ()),
}


def _parse(data: Any, where: str) -> HardwareProfile:
    if not isinstance(data, Mapping):
        kind = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{where}: a hardware profile must be a mapping of fields, got {kind}")
    _check_keys(HardwareProfile, data, where, ("name", "description", "device", "budgets"))
    values = dict(data)
    for key, (cls, required) in _SECTIONS.items():
        if key in values:
            _check_keys(cls, values[key], f"{where}: {key}", required)
            values[key] = from_mapping(cls, values[key], f"{where}: {key}")
    budgets = values["budgets"]
    if not isinstance(budgets, Mapping):
        raise ConfigError(f"{where}: budgets: expected a mapping of tiers ({', '.join(TIERS)}), "
                          f"got {type(budgets).__name__}")
    _check_tier_names(budgets, where)
    parsed = {}
    for tier, limits in budgets.items():
        _check_keys(TierBudget, limits, f"{where}: budgets.{tier}", ())
        parsed[str(tier)] = from_mapping(TierBudget, limits, f"{where}: budgets.{tier}")
    values["budgets"] = parsed
    return from_mapping(HardwareProfile, values, where)


def load_profile(name_or_path: str | os.PathLike) -> HardwareProfile:
    """Loads and validates a hardware profile.

    Args:
        name_or_path: The path of an existing YAML file, else the name of a bundled profile
            (``jetson``, ``raspberry_pi4``, ``host_cpu``; see :func:`profile_names`).

    Returns:
        The profile, with ``source`` set to the absolute path of its file.

    Raises:
        ConfigError: Unknown name (with close matches and the bundled list), missing file,
            malformed YAML, or an invalid field (one line naming the file and the field).

    Example:
        >>> load_profile("jetson").name
        'jetson_orin_nano'
        >>> load_profile("jetsn")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gtn_nas.errors.ConfigError: unknown hardware profile 'jetsn' (did you mean: jetson?); ...
    """
    path = _resolve(name_or_path)
    where = str(path)
    profile = _parse(read_yaml(path, "hardware profile"), where)
    validate_profile(profile, where)
    profile.source = path
    return profile


# ------------------------------------------------------------------------------ validation

def _positive(value: Any, where: str, path: str, minimum: float = 0.0,
              strict: bool = True) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (value > minimum if strict else value >= minimum))
    if not ok:
        rule = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ConfigError(f"{where}: {path}: must be a finite number {rule} (got {value!r})")


def _check_providers(providers: tuple[str, ...], where: str) -> None:
    if not providers:
        raise ConfigError(f"{where}: runtime.providers: empty; list at least one ONNX Runtime "
                          f"execution provider (e.g. CPUExecutionProvider)")
    import onnxruntime  # deferred: only validation needs it

    known = list(onnxruntime.get_all_providers())
    seen: set[str] = set()
    for provider in providers:
        if provider in seen:
            raise ConfigError(f"{where}: runtime.providers: '{provider}' is listed twice")
        seen.add(provider)
        if provider not in known:
            close = _close_providers(str(provider), known)
            hint = (f"did you mean: {', '.join(close)}?" if close
                    else f"known: {', '.join(known)}")
            raise ConfigError(f"{where}: runtime.providers: '{provider}' is not an ONNX Runtime "
                              f"execution provider ({hint})")


def _close_providers(name: str, known: list[str]) -> list[str]:
    """Close matches of ``name`` among ``known``: by short name ("cuda", "TensorRT"), then typos."""
    suffix = "executionprovider"
    short = {p.lower().removesuffix(suffix): p for p in known}
    full = {p.lower(): p for p in known}
    found = [short[m] for m in difflib.get_close_matches(
        name.lower().removesuffix(suffix), list(short), n=3, cutoff=0.6)]
    found += [full[m] for m in difflib.get_close_matches(name.lower(), list(full), n=3,
                                                         cutoff=0.9)]
    return list(dict.fromkeys(found))[:3]


def _check_tier_names(budgets: Mapping[Any, Any], where: str) -> None:
    extra = [str(tier) for tier in budgets if tier not in TIERS]
    if extra:
        raise ConfigError(f"{where}: budgets.{extra[0]}: unknown tier (tiers: "
                          f"{', '.join(TIERS)})")
    missing = [tier for tier in TIERS if tier not in budgets]
    if missing:
        raise ConfigError(f"{where}: budgets.{missing[0]}: tier is missing (every profile "
                          f"budgets tiers {', '.join(TIERS)})")


def _check_budgets(budgets: Mapping[str, TierBudget], where: str) -> None:
    _check_tier_names(budgets, where)
    for tier in TIERS:
        budget = budgets[tier]
        if not isinstance(budget, TierBudget):
            raise ConfigError(f"{where}: budgets.{tier}: expected a TierBudget, got "
                              f"{type(budget).__name__}")
        limits = budget.limits()
        if not limits:
            raise ConfigError(f"{where}: budgets.{tier}: no limit set (set at least one of "
                              f"{', '.join(BUDGET_METRICS)})")
        for metric, value in limits.items():
            _positive(value, where, f"budgets.{tier}.{metric}")
    for metric in BUDGET_METRICS:
        set_in = [(tier, budgets[tier].limits()[metric]) for tier in TIERS
                  if metric in budgets[tier].limits()]
        for (small, low), (large, high) in zip(set_in, set_in[1:]):
            if low > high:
                raise ConfigError(
                    f"{where}: budgets.{large}.{metric}: {high:g} is below budgets.{small}."
                    f"{metric} ({low:g}); tiers must be ordered {' <= '.join(TIERS)}")


def validate_profile(profile: HardwareProfile, where: str) -> None:
    """Checks the values of ``profile``; raises one ConfigError line naming ``where`` and the field.

    Types are checked when loading (:func:`gtn_nas.config.from_mapping`); this checks values:
    positive device figures, known ONNX Runtime providers (known, not necessarily available on
    this machine), sane opset, input shape ``(C, H, W)`` with ``H == W``, measurement counts, and
    budgets for exactly the tiers ``s``, ``m``, ``l``, ordered ``s <= m <= l`` per metric.

    Args:
        profile: The profile to check.
        where: Label of its origin for messages (usually the file path).

    Raises:
        ConfigError: The first problem found.

    Example:
        >>> profile = load_profile("jetson")
        >>> profile.runtime.opset = 3
        >>> validate_profile(profile, "jetson.yaml")
        Traceback (most recent call last):
        ...
        gtn_nas.errors.ConfigError: jetson.yaml: runtime.opset: 3 is outside 7..25
    """
    for name in ("name", "description"):
        value = getattr(profile, name)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: {name}: must be a non-empty string (got {value!r})")

    device = profile.device
    if device.kind not in ("cpu", "gpu", "npu"):
        raise ConfigError(f"{where}: device.kind: {device.kind!r} is not allowed "
                          f"(allowed: cpu, gpu, npu)")
    _positive(device.peak_gflops, where, "device.peak_gflops")
    _positive(device.memory_bandwidth_gbs, where, "device.memory_bandwidth_gbs")
    if device.cores is not None and (isinstance(device.cores, bool)
                                     or not isinstance(device.cores, int) or device.cores < 1):
        raise ConfigError(f"{where}: device.cores: must be an integer >= 1 "
                          f"(got {device.cores!r})")

    runtime = profile.runtime
    if runtime.engine != "onnxruntime":
        raise ConfigError(f"{where}: runtime.engine: {runtime.engine!r} is not allowed "
                          f"(allowed: onnxruntime)")
    _check_providers(tuple(runtime.providers), where)
    if isinstance(runtime.threads, bool) or not isinstance(runtime.threads, int) \
            or runtime.threads < 0:
        raise ConfigError(f"{where}: runtime.threads: must be an integer >= 0, 0 = ONNX "
                          f"Runtime's default (got {runtime.threads!r})")
    if runtime.precision not in ("fp32", "fp16"):
        raise ConfigError(f"{where}: runtime.precision: {runtime.precision!r} is not allowed "
                          f"(allowed: fp32, fp16)")
    low, high = OPSET_RANGE
    if isinstance(runtime.opset, bool) or not isinstance(runtime.opset, int) \
            or not low <= runtime.opset <= high:
        raise ConfigError(f"{where}: runtime.opset: {runtime.opset!r} is outside {low}..{high}")

    shape = tuple(profile.input.shape)
    if len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                              for v in shape):
        raise ConfigError(f"{where}: input.shape: {list(shape)} is not [C, H, W] with three "
                          f"positive integers")
    if shape[1] != shape[2]:
        raise ConfigError(f"{where}: input.shape: H ({shape[1]}) must equal W ({shape[2]}): "
                          f"only square inputs are supported")
    batch = profile.input.batch
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"{where}: input.batch: must be an integer >= 1 (got {batch!r})")

    measurement = profile.measurement
    if isinstance(measurement.warmup, bool) or not isinstance(measurement.warmup, int) \
            or measurement.warmup < 0:
        raise ConfigError(f"{where}: measurement.warmup: must be an integer >= 0 "
                          f"(got {measurement.warmup!r})")
    if isinstance(measurement.repeats, bool) or not isinstance(measurement.repeats, int) \
            or measurement.repeats < 1:
        raise ConfigError(f"{where}: measurement.repeats: must be an integer >= 1 "
                          f"(got {measurement.repeats!r})")
    if measurement.statistic not in ("median", "mean", "p90"):
        raise ConfigError(f"{where}: measurement.statistic: {measurement.statistic!r} is not "
                          f"allowed (allowed: median, mean, p90)")

    _check_budgets(profile.budgets, where)

    table = profile.latency_table
    if table is not None and (not isinstance(table, str) or not table.strip()):
        raise ConfigError(f"{where}: latency_table: must be a non-empty file name or null "
                          f"(got {table!r})")
