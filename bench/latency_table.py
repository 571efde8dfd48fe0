"""Benchmark: the host_cpu latency table against ONNX Runtime measurements, prediction speed,
and the time of a 2,000-candidate search.

Run (after `./dev gtn-nas profile --hw host_cpu`):
    ./dev python bench/latency_table.py [--students 100] [--evals 2000]
Prints Markdown for docs/BENCHMARKS.md. The students are random samples of the paper's space
(width 1, 100 classes, 32x32, batch 1) with seeds the table build did not use.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from gtn_nas.costs import UnitCosts
from gtn_nas.latency import LatencyTable, measure_module, student_input_shape
from gtn_nas.plugins import build_space
from gtn_nas.profiles import load_profile
from gtn_nas.search import run_search


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hw", default="host_cpu")
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--evals", type=int, default=2000)
    args = parser.parse_args()
    profile = load_profile(args.hw)
    channels, size, _ = profile.input.shape
    space = build_space("resnet_supernet", in_channels=channels, input_size=size)
    table = LatencyTable.load(profile.latency_table_path(), space, profile)
    unit_costs = UnitCosts(space)
    shape = student_input_shape(space, profile)

    errors, rows = [], []
    for i in range(args.students):
        sample = space.sample(900_000 + i)
        predicted = table.predict(sample, unit_costs)
        measured = measure_module(space.freeze(sample, seed=0).eval(), shape,
                                  profile).value(table.statistic)
        errors.append((predicted - measured) / measured)
        rows.append((measured, predicted))
    abs_errors = np.abs(errors)

    samples = [space.sample(800_000 + i) for i in range(200)]
    for sample in samples:  # warm the per-step cost cache, as a search does
        table.predict(sample, unit_costs)
    start = time.perf_counter()
    repeats = 5
    for _ in range(repeats):
        for sample in samples:
            table.predict(sample, unit_costs)
    per_second = repeats * len(samples) / (time.perf_counter() - start)

    start = time.perf_counter()
    result = run_search(space, profile, strategy="evolution", budget_evals=args.evals, seed=0,
                        remeasure=False)
    search_seconds = time.perf_counter() - start

    measured = [m for m, _ in rows]
    print(f"profile {profile.name}, table of {len(table.entries)} steps "
          f"(overhead {table.overhead_ms:+.3f} ms), {args.students} held-out random students, "
          f"measured {min(measured):.2f} .. {max(measured):.2f} ms\n")
    print("| quantity | value |\n|---|---|")
    print(f"| MAPE | {abs_errors.mean() * 100:.1f}% |")
    print(f"| within +-10% | {np.mean(abs_errors <= 0.10) * 100:.0f}% |")
    print(f"| median signed error | {statistics.median(errors) * 100:+.1f}% |")
    print(f"| table's own validation (build time) | MAPE "
          f"{table.validation.get('mape', float('nan')) * 100:.1f}%, within +-10% "
          f"{table.validation.get('within_10pct', float('nan')) * 100:.0f}% |")
    print(f"| table predictions per second (cached steps) | {per_second:,.0f} |")
    print(f"| {args.evals}-candidate evolution search (s) | {search_seconds:.1f} "
          f"({len(result.candidates)} distinct) |")


if __name__ == "__main__":
    main()
