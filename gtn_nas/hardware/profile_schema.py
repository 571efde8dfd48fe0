"""The typed schema of a hardware profile (what :mod:`gtn_nas.hardware.profiles` loads and
validates): :class:`DeviceFacts`, :class:`RuntimeSpec`, :class:`InputSpec`,
:class:`MeasurementSpec`, :class:`TierBudget` and :class:`HardwareProfile`. Units are those of
:mod:`gtn_nas.hardware.profiles`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gtn_nas.hardware.profile_files import latency_table_location

TIERS: tuple[str, ...] = ("s", "m", "l")
"""The student tiers every profile budgets, smallest first."""


OPSET_RANGE = (7, 25)
BUDGET_METRICS = ("latency_ms", "mflops", "params_m")


@dataclass
class DeviceFacts:
    """What the device is; used for estimates when no latency table exists.

    Attributes:
        kind: ``cpu``, ``gpu`` or ``npu``.
        peak_gflops: Peak arithmetic throughput in GFLOP/s (one FMA = two FLOPs).
        memory_bandwidth_gbs: Memory bandwidth in GB/s.
        cores: Number of compute cores (CPU cores, or CUDA cores of a GPU); informational.
        runs_here: The profile describes the machine gtn-nas runs on, so latencies can be
            measured here (only ``host_cpu.yaml`` among the bundled profiles).
        notes: Free text (where the figures come from).

    Example:
        >>> DeviceFacts(kind="cpu", peak_gflops=50.0, memory_bandwidth_gbs=20.0).runs_here
        False
    """

    kind: Literal["cpu", "gpu", "npu"]
    peak_gflops: float
    memory_bandwidth_gbs: float
    cores: int | None = None
    runs_here: bool = False
    notes: str | None = None


@dataclass
class RuntimeSpec:
    """How a model runs on the device: ONNX Runtime with these settings.

    Attributes:
        engine: The inference engine (only ``onnxruntime``).
        providers: Execution providers in order of preference (names ONNX Runtime knows).
        threads: Intra-op threads; 0 lets ONNX Runtime choose.
        precision: ``fp32`` or ``fp16``.
        opset: ONNX opset used for export.

    Example:
        >>> RuntimeSpec(threads=4).providers
        ('CPUExecutionProvider',)
    """

    engine: Literal["onnxruntime"] = "onnxruntime"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int = 0
    precision: Literal["fp32", "fp16"] = "fp32"
    opset: int = 17


@dataclass
class InputSpec:
    """The model input on the device.

    Attributes:
        shape: ``(C, H, W)`` of one image; ``H`` must equal ``W``.
        batch: Batch size of one inference.

    Example:
        >>> InputSpec().shape
        (3, 32, 32)
    """

    shape: tuple[int, ...] = (3, 32, 32)
    batch: int = 1


@dataclass
class MeasurementSpec:
    """The latency measurement protocol.

    Attributes:
        warmup: Untimed runs before timing.
        repeats: Timed runs.
        statistic: The figure reported as "the" latency: ``median``, ``mean`` or ``p90``.

    Example:
        >>> MeasurementSpec().statistic
        'median'
    """

    warmup: int = 10
    repeats: int = 50
    statistic: Literal["median", "mean", "p90"] = "median"


@dataclass
class TierBudget:
    """Limits of one tier; at least one is set and each set one is > 0.

    Attributes:
        latency_ms: Latency limit in milliseconds (per batch of ``input.batch``).
        mflops: FLOPs limit in millions, fvcore's count (one multiply-add = one FLOP).
        params_m: Parameter limit in millions.

    Example:
        >>> TierBudget(latency_ms=2.0, mflops=150).limits()
        {'latency_ms': 2.0, 'mflops': 150}
    """

    latency_ms: float | None = None
    mflops: float | None = None
    params_m: float | None = None

    def limits(self) -> dict[str, float]:
        """The limits that are set, by metric name.

        Example:
            >>> TierBudget(params_m=1.5).limits()
            {'params_m': 1.5}
        """
        return {name: getattr(self, name) for name in BUDGET_METRICS
                if getattr(self, name) is not None}


@dataclass
class HardwareProfile:
    """A deployment target: device facts, runtime, input, measurement protocol and tier budgets.

    Attributes:
        name: Short identifier (e.g. ``jetson_orin_nano``).
        description: One sentence saying what the device is.
        device: Facts about the device.
        runtime: ONNX Runtime settings.
        input: Model input shape and batch.
        measurement: Latency measurement protocol.
        budgets: ``{"s": TierBudget, "m": ..., "l": ...}``.
        latency_table: Latency lookup table file, relative to the profile's folder (or absolute;
            for a bundled profile, relative to the user cache: see :meth:`latency_table_path`).
        source: The file the profile was loaded from (set by :func:`load_profile`, not from YAML).

    Example:
        >>> from gtn_nas.hardware.profiles import validate_profile
        >>> profile = HardwareProfile(
        ...     name="toy", description="a toy device",
        ...     device=DeviceFacts(kind="cpu", peak_gflops=10, memory_bandwidth_gbs=5),
        ...     budgets={t: TierBudget(mflops=m) for t, m in zip(TIERS, (50, 100, 200))})
        >>> validate_profile(profile, "toy")
        >>> profile.tiers()
        ['s', 'm', 'l']
    """

    name: str
    description: str
    device: DeviceFacts
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)
    input: InputSpec = field(default_factory=InputSpec)
    measurement: MeasurementSpec = field(default_factory=MeasurementSpec)
    budgets: dict[str, TierBudget] = field(default_factory=dict)
    latency_table: str | None = None
    source: Path | None = field(default=None, init=False, compare=False)

    def tiers(self) -> list[str]:
        """The budgeted tiers, smallest first (``["s", "m", "l"]`` for a valid profile).

        Example:
            >>> from gtn_nas.hardware.profiles import load_profile
            >>> load_profile("jetson").tiers()
            ['s', 'm', 'l']
        """
        return [tier for tier in TIERS if tier in self.budgets]

    def latency_table_path(self, *, writable: bool = False) -> Path | None:
        """The latency table file: beside the profile's file, relative to its folder; for a
        bundled profile in the user cache (``$XDG_CACHE_HOME/gtn-nas/latency/``), or the table
        shipped beside it in the package while this machine has none
        (:func:`gtn_nas.hardware.profile_files.latency_table_location`).

        Relative paths of a profile built in code (no ``source``) stay relative to the working
        directory. The file need not exist (``gtn-nas profile`` creates it).

        Args:
            writable: The file a new table is written to (never one in the package).

        Example:
            >>> from gtn_nas.hardware.profiles import load_profile
            >>> load_profile("host_cpu").latency_table_path().name
            'host_cpu.latency.json'
        """
        if self.latency_table is None:
            return None
        path = Path(self.latency_table).expanduser()
        if path.is_absolute() or self.source is None:
            return path
        return latency_table_location(self.source, path, writable=writable)
