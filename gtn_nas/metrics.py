"""What a training run logs (common floor): running means of a step's outputs and the metric
files (``metrics.jsonl``, ``metrics.csv``) rewritten from a run's history.

Example:
    >>> meter = RunningMeans()
    >>> meter.update({"loss": torch.tensor(0.5), "logits": torch.eye(2)}, torch.tensor([0, 0]))
    >>> meter.means()
    {'loss': 0.5, 'acc': 0.5}
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from gtn_nas.fileio import atomic_write_text


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrites ``metrics.jsonl`` and ``metrics.csv`` from the full history, atomically."""
    atomic_write_text(run_dir / "metrics.jsonl",
                      "".join(json.dumps(record) + "\n" for record in history))
    columns: list[str] = []
    for record in history:
        columns += [k for k in record if k not in columns and not isinstance(record[k],
                                                                              (list, dict))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())


class RunningMeans:
    """Running means of scalar outputs and accuracies of ``*logits`` outputs.

    Sums stay tensors (float64, on the outputs' device) until :meth:`means`, so a training step
    waits for no device-to-host copy; the arithmetic is the one a float sum would do
    (``mean * count`` per batch, added in double precision), so the means are bit-identical.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, Any] = {}

    def _add(self, key: str, value: Any, count: Any) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value * count
        self.counts[key] = self.counts.get(key, 0) + count

    def update(self, outputs: Mapping[str, Any], targets: torch.Tensor,
               extra: Mapping[str, Any] | None = None) -> None:
        count = int(targets.shape[0])
        labelled = targets >= 0  # unlabelled items (gtn_nas.distill.partial_labels) have no accuracy
        scored = labelled.sum().double()
        for key, value in outputs.items():
            if not isinstance(value, torch.Tensor):
                continue
            if key.endswith("logits"):
                name = "acc" if key == "logits" else key[: -len("logits")] + "acc"
                hits = ((value.detach().argmax(dim=-1) == targets) & labelled).sum().double()
                # a batch without labels adds 0 to both sums (0 / 1 * 0)
                self._add(name, hits / scored.clamp(min=1), scored)
            elif value.dim() == 0:
                self._add(key, value.detach().double(), count)
        for key, value in (extra or {}).items():
            if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor)
                                                   and value.dim() == 0):
                self._add(key, float(value), count)

    def means(self) -> dict[str, float]:
        out = {}
        for key, total in self.sums.items():
            count = float(self.counts[key])
            if count:
                out[key] = float(total) / count
        return out
