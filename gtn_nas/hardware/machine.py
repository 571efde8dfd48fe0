"""The machine a latency table was measured on, and whether this machine is the same one.

A latency table describes one machine: the CPU model and its instruction-set extensions (a CPU
without AVX-512 ran our students ~30% slower than one with it), the cores the process may use,
the runtime's threads, and the ONNX Runtime version and providers. :func:`machine_record` reads
these facts here (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere); :func:`machine_mismatches`
lists how two records differ in what decides speed.

Example:
    >>> record = machine_record(threads=2)
    >>> machine_mismatches(record, record)
    []
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Mapping

# Instruction-set extensions that change the kernels ONNX Runtime (MLAS) picks.
ISA_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
             "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
             "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "sve2", "i8mm",
             "bf16", "fphp", "asimdhp")

# The fields compared when a table is loaded (informational fields are not compared).
DECIDING = ("cpu_model", "isa", "cores", "threads", "onnxruntime", "providers", "arch")


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str | None, list[str]]:
    """(CPU model, instruction-set flags we care about) from ``/proc/cpuinfo``, if readable."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None, []
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if model is None:  # ARM kernels often give only implementer/part numbers
        parts = [line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.lower().startswith(("cpu implementer", "cpu part"))][:2]
        model = "arm " + "/".join(parts) if parts else None
    return model, [flag for flag in ISA_FLAGS if flag in flags]


def usable_cores() -> int:
    """CPUs this process may run on (affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_record(threads: int = 0, providers: tuple[str, ...] | list[str] = ()
                   ) -> dict[str, Any]:
    """What decides latency on this machine, as a JSON-ready dict.

    Args:
        threads: The runtime's intra-op threads (0 = ONNX Runtime's default).
        providers: The execution providers the measurements used.
    """
    import onnxruntime as ort
    import torch

    model, isa = _cpuinfo()
    return {"cpu_model": model or platform.processor() or platform.machine(),
            "isa": isa, "cores": usable_cores(), "threads": int(threads),
            "onnxruntime": ort.__version__, "providers": list(providers),
            "arch": platform.machine(), "available_providers": ort.get_available_providers(),
            "hostname_hash": _short_hash(platform.node()), "torch": torch.__version__,
            "python": platform.python_version()}


def _short_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]


def machine_mismatches(table: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """How ``table``'s machine differs from ``here`` in what decides speed (empty: same).

    Example:
        >>> machine_mismatches({"cpu_model": "A", "isa": ["avx2"], "onnxruntime": "1.31.1"},
        ...                    {"cpu_model": "B", "isa": ["avx2", "avx512f"],
        ...                     "onnxruntime": "1.31.1"})
        ["cpu 'A' vs 'B' here", 'instruction sets: avx512f only here']
    """
    problems = []
    for key in DECIDING:
        if key not in table or key not in here:
            if key in ("cpu_model", "isa", "onnxruntime") and key not in table:
                problems.append(f"the table records no {key}")
            continue
        theirs, ours = table[key], here[key]
        if key == "isa":
            only_there = sorted(set(theirs) - set(ours))
            only_here = sorted(set(ours) - set(theirs))
            if only_there or only_here:
                parts = ([f"{' '.join(only_there)} only there"] if only_there else []) + \
                        ([f"{' '.join(only_here)} only here"] if only_here else [])
                problems.append("instruction sets: " + "; ".join(parts))
        elif key == "providers":
            if list(theirs) != list(ours):
                problems.append(f"providers {list(theirs)} vs {list(ours)} here")
        elif theirs != ours:
            label = {"cpu_model": "cpu", "onnxruntime": "onnxruntime"}.get(key, key)
            problems.append(f"{label} {theirs!r} vs {ours!r} here")
    return problems
