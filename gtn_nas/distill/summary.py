"""The summary of a distillation run: every job's ``result.json`` under the output folder
collected into one table per (student, method) (``summary.md``, ``.csv``, ``.json``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from gtn_nas.fileio import atomic_write_text

RESULT_NAME = "result.json"
RESULT_FORMAT = "gtn-nas-distill-result/1"
GUARD_NAME = "guard.json"


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """A job's ``result.json`` if it is complete and readable, else None."""
    path = run_dir / RESULT_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RESULT_FORMAT else None


def collect_results(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished job's ``result.json`` under ``out_dir``."""
    out = Path(out_dir)
    results = []
    for path in sorted(out.rglob(RESULT_NAME)):
        record = read_result(path.parent)
        if record is not None:
            record["run_dir"] = str(path.parent.relative_to(out))
            results.append(record)
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    import statistics

    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (student, method): costs, latency and test top-1 mean +- std over seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in results:
        groups.setdefault((record["student"], record["method"]), []).append(record)
    rows = []
    for (student, method), records in groups.items():
        records.sort(key=lambda r: r["seed"])
        first = records[0]
        last_mean, last_std = _mean_std([r["test_acc"] for r in records])
        best_mean, best_std = _mean_std([r["test_acc_best"] for r in records])
        latency, source = _latency_of(first)
        rows.append({"student": student, "method": method, "params": first["params"],
                     "mflops": first["mflops"], "latency_ms": latency,
                     "latency_source": source, "seeds": [r["seed"] for r in records],
                     "test_acc_mean": last_mean, "test_acc_std": last_std,
                     "test_acc_best_mean": best_mean, "test_acc_best_std": best_std,
                     "epochs": first["epochs"], "tier": first.get("info", {}).get("tier")})
    rows.sort(key=lambda r: (r["method"], r["params"], r["student"]))
    return rows


def _latency_of(record: Mapping[str, Any]) -> tuple[float | None, str]:
    info = record.get("info") or {}
    measured = info.get("measured") or {}
    if measured.get("median_ms") is not None:
        return float(measured["median_ms"]), f"measured ({info.get('profile', 'search')})"
    if info.get("latency_ms") is not None:
        return float(info["latency_ms"]), f"{info.get('latency_source')} " \
                                          f"({info.get('profile', 'search')})"
    export = record.get("export") or {}
    if export.get("ort_ms_batch1") is not None:
        return float(export["ort_ms_batch1"]), "measured here (ORT, batch 1)"
    return None, "-"


def write_summary(out_dir: str | os.PathLike, teacher_acc: float | None = None
                  ) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """Writes ``summary.md``, ``summary.csv`` and ``summary.json`` from the run directories
    under ``out_dir`` (what ``gtn-nas report DIR`` does after sharded runs)."""
    import csv
    import io

    from gtn_nas.report import markdown_table

    out = Path(out_dir)
    if teacher_acc is None:
        try:
            teacher_acc = float(json.loads((out / "teacher.json").read_text())["test_acc"])
        except (OSError, ValueError, KeyError, TypeError):
            teacher_acc = None
    results = collect_results(out)
    rows = summarise(results)
    try:
        guard = list(json.loads((out / GUARD_NAME).read_text())["lines"])
    except (OSError, ValueError, KeyError, TypeError):
        guard = []
    paths = {"json": atomic_write_text(out / "summary.json", json.dumps(
        {"teacher_test_acc": teacher_acc, "guard": guard, "rows": rows, "runs": results},
        indent=1) + "\n")}
    buffer = io.StringIO()
    columns = ["student", "method", "params", "mflops", "latency_ms", "latency_source",
               "test_acc_mean", "test_acc_std", "test_acc_best_mean", "test_acc_best_std",
               "seeds", "epochs", "teacher_test_acc"]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "seeds": " ".join(map(str, row["seeds"])),
                         "teacher_test_acc": teacher_acc})
    paths["csv"] = atomic_write_text(out / "summary.csv", buffer.getvalue())
    table = [[r["student"], r["method"], f"{r['params']:,}", f"{r['mflops']:.2f}",
              "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f} ({r['latency_source']})",
              f"{r['test_acc_mean']:.4f} ± {r['test_acc_std']:.4f}",
              f"{r['test_acc_best_mean']:.4f} ± {r['test_acc_best_std']:.4f}",
              len(r["seeds"]), r["epochs"]] for r in rows]
    lines = ["# Distillation summary", "",
             f"Teacher test top-1: {'-' if teacher_acc is None else f'{teacher_acc:.4f}'}; "
             f"{len(results)} finished runs.", "",
             markdown_table(["student", "method", "params", "MFLOPs", "latency ms (source)",
                             "test top-1 (last epoch)", "test top-1 (best on val)", "seeds",
                             "epochs"], table), "",
             "Top-1 is mean ± standard deviation over seeds, on the test split; 'best on val' "
             "takes each seed's epoch with the best validation accuracy."]
    lines += [""] + [f"**Guard:** {line}." for line in guard] if guard else []
    paths["md"] = atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return paths, rows


def guard_against_baseline(out: Path, baseline: str | None, teacher_acc: float,
                           students: list[str]) -> list[str]:
    """The teacher guard (:func:`gtn_nas.distill.deploy.teacher_guard`) for every student with finished
    runs in the teacherless ``baseline`` directory; the lines are also kept in ``guard.json``
    for the summary. Accuracy alone: the mean test top-1 of its best-on-validation weights."""
    from gtn_nas.distill.deploy import teacher_guard
    from gtn_nas.distill.distillers import TEACHERLESS

    if baseline is None:  # no stale lines from an earlier run with a baseline
        if (out / GUARD_NAME).exists():
            atomic_write_text(out / GUARD_NAME, json.dumps({"baseline": None,
                                                            "lines": []}) + "\n")
        return []
    folder = Path(baseline)
    by_student: dict[str, list[dict[str, Any]]] = {}
    for record in collect_results(folder):
        if record.get("method") in TEACHERLESS:
            by_student.setdefault(record["student"], []).append(record)
    lines = []
    for name in students:
        records = by_student.get(name)
        if not records:
            continue
        alone = sum(r["test_acc_best"] for r in records) / len(records)
        line = teacher_guard(name, teacher_acc, alone, records[0]["method"])
        if line:
            lines.append(line)
    atomic_write_text(out / GUARD_NAME, json.dumps({"baseline": str(folder),
                                                    "lines": lines}) + "\n")
    return lines
