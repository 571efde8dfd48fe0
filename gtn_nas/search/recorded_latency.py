"""Measured latencies kept with a search, so that a resumed search sees the numbers it saw.

A latency measured on this machine changes from one measurement to the next (the machine's
load, its noise). A search whose budgets are latency percentiles of random students, and whose
candidates are feasible or not by their latency, would therefore propose other candidates
after a restart than before it, and the successive halving it resumes would train students it
had not proposed. :class:`RecordedLatency` wraps a device's latency model: every student is
timed once, and the timings are written atomically to ``latencies-<device>.json`` in the
search folder, where a later run of the same search reads them instead of timing again.

Only a *measured* model is recorded; a table's prediction and the roofline estimate are the
same every time. The file names the model's source, the device and the input it was timed at;
a file that does not match (another profile, data of another size) is ignored and replaced.

Example:
    >>> latency = RecordedLatency(model, folder / "latencies.json", key)     # doctest: +SKIP
    >>> latency(sample); latency.save()                                     # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from gtn_nas.fileio import atomic_write_text

FORMAT = "gtn-nas-latencies/1"


def file_name(device: str) -> str:
    """The file of a device's timings in a search folder."""
    return f"latencies-{device}.json"


def _sample_text(sample: Mapping[str, Any]) -> str:
    return json.dumps({str(k): sample[k] for k in sorted(sample)}, sort_keys=True)


class RecordedLatency:
    """A latency model that times each sample once and keeps the timings in ``path``.

    Args:
        model: The device's latency model (a callable ``sample -> ms`` with a ``source``).
        path: The JSON file of the timings (read when it exists and matches ``identity``).
        identity: What the timings depend on besides the sample (device, input shape,
            model source); a file recorded under another identity is not used.
        save_every: New timings after which the file is written without being asked (a
            search killed while it times students keeps most of them).
    """

    save_every = 25

    def __init__(self, model: Callable[[Mapping[str, Any]], float], path: str | Path,
                 identity: Mapping[str, Any]) -> None:
        self.model, self.path = model, Path(path)
        self.identity = {str(k): v for k, v in identity.items()}
        self.source = getattr(model, "source", "measured")
        self.timings: dict[str, float] = {}
        self.reused = 0
        """Timings read from the file instead of measured (each time one is asked for)."""
        self._unsaved = 0
        data = self._read()
        if data is not None and data.get("identity") == json.loads(json.dumps(self.identity)):
            self.timings = {str(k): float(v) for k, v in data.get("timings", {}).items()}
        self._recorded = frozenset(self.timings)

    def _read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # absent or unreadable: time again
        return data if isinstance(data, dict) and data.get("format") == FORMAT else None

    def __getattr__(self, name: str) -> Any:  # the model's table, noise, ... stay reachable
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def __call__(self, sample: Mapping[str, Any]) -> float:
        key = _sample_text(sample)
        if key in self.timings:
            self.reused += key in self._recorded
            return self.timings[key]
        value = float(self.model(sample))
        self.timings[key] = value
        self._unsaved += 1
        if self._unsaved >= self.save_every:
            self.save()
        return value

    def save(self) -> None:
        """Writes the timings (atomically) when any was added since the last write."""
        if not self._unsaved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(
            {"format": FORMAT, "identity": self.identity, "timings": self.timings},
            sort_keys=True))
        self._unsaved = 0
