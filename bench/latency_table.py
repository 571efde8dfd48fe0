"""Benchmark: a device's latency predictor against ONNX Runtime measurements of held-out
students, with the machine's noise floor beside it; build time and predictions per second.

Run on the machine itself (2 cores here):
    ./dev python bench/latency_table.py --space resnet_supernet [--students 100]
    ./dev python bench/latency_table.py --space mbconv --table /tmp/mbconv.latency.json
Builds the table (``gtn-nas profile``'s defaults) unless ``--table`` names one built for the
same space here, then measures ``--students`` random students with seeds the build did not
use (width 1, 100 classes, 32x32, batch 1 by default) twice, in two passes, and prints Markdown
for docs/BENCHMARKS.md: the predictor against the first pass, the second pass against the first
(the device's own repeat) and the predictor against both passes' geometric mean. The load average before and after is printed: on a shared machine the
measurements, and so the errors, include other jobs' noise.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from gtn_nas.space.costs import UnitCosts
from gtn_nas.hardware.latency import measure_module, noise_floor, student_input_shape
from gtn_nas.hardware.latency_build import (build_latency_table, describe_metrics, error_metrics,
                                   split_metrics)
from gtn_nas.hardware.latency_predictor import LatencyTable
from gtn_nas.space.plugins import build_space
from gtn_nas.hardware.profiles import load_profile


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hw", default="host_cpu")
    parser.add_argument("--space", default="resnet_supernet")
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--table", help="an existing table file (default: build one)")
    parser.add_argument("--save", help="where to save the built table")
    args = parser.parse_args()
    profile = load_profile(args.hw)
    channels, size, _ = profile.input.shape
    space = build_space(args.space, in_channels=channels, input_size=size,
                        width_mult=args.width_mult)
    unit_costs = UnitCosts(space)
    shape = student_input_shape(space, profile)
    load_before = os.getloadavg()
    if args.table:
        table = LatencyTable.load(args.table, space, profile)
        build_s = table.build_seconds
    else:
        start = time.perf_counter()
        table = build_latency_table(space, profile, seed=0)
        build_s = time.perf_counter() - start
        if args.save:
            table.save(args.save)
    known = {tuple(space.validate(r).items()) for r in [table.noise.get("reference", {})]
             if r}
    held_out = []
    i = 0
    while len(held_out) < args.students:
        sample = space.sample(900_000 + i)  # the build uses other seeds
        i += 1
        if tuple(sample.items()) not in known:
            held_out.append(sample)
    predicted = [table.predict(sample, unit_costs) for sample in held_out]
    start = time.perf_counter()
    passes = [[measure_module(space.freeze(sample, seed=0).eval(), shape, profile)
               .value(table.statistic) for sample in held_out] for _ in range(2)]
    measure_s = time.perf_counter() - start
    measured = passes[0]
    retest = error_metrics(passes[1], passes[0])
    both = error_metrics(predicted, np.sqrt(np.asarray(passes[0]) * np.asarray(passes[1])))
    noise_after = noise_floor(space.freeze(space.reference_sample, seed=0).eval(), shape,
                              profile)
    load_after = os.getloadavg()

    samples = [space.sample(800_000 + j) for j in range(200)]
    for sample in samples:
        table.predict(sample, unit_costs)  # warms the per-step cost cache, as a search does
    start = time.perf_counter()
    for _ in range(5):
        for sample in samples:
            table.predict(sample, unit_costs)
    per_second = 5 * len(samples) / (time.perf_counter() - start)

    metrics = split_metrics(predicted, measured)
    m = np.asarray(measured)
    print(f"{args.space} (width {args.width_mult}) on {profile.name}: table of "
          f"{len(table.steps)} unit steps / {len(table.kernels)} fused kernels, fitted on "
          f"{table.fit['students']} students; {args.students} held-out random students "
          f"measured {m.min():.2f} .. {m.max():.2f} ms; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| quantity | value |\n|---|---|")
    print(f"| MAPE | {metrics['mape'] * 100:.1f}% |")
    print(f"| RMSPE | {metrics['rmspe'] * 100:.1f}% |")
    print(f"| within +-5% | {metrics['within_5pct'] * 100:.0f}% |")
    print(f"| within +-10% | {metrics['within_10pct'] * 100:.0f}% |")
    print(f"| worst | {metrics['worst']['error'] * 100:+.0f}% "
          f"({metrics['worst']['predicted_ms']:.3f} vs {metrics['worst']['measured_ms']:.3f} "
          f"ms) |")
    print(f"| median signed error | {metrics['median_signed'] * 100:+.1f}% |")
    for part, label in (("under_1ms", "under 1 ms"), ("over_1ms", "1 ms and over")):
        if metrics[part].get("students"):
            print(f"| {label} | {describe_metrics(metrics[part])} |")
    print(f"| noise floor (spread of repeated measurements of one model) | build "
          f"{table.noise['spread'] * 100:.1f}%, after the benchmark "
          f"{noise_after['spread'] * 100:.1f}% (max deviation "
          f"{noise_after['max_deviation'] * 100:.0f}%) |")
    print(f"| the device's own repeat: the same students measured again (second pass vs "
          f"first) | {describe_metrics(retest)} |")
    print(f"| predicted vs the geometric mean of both passes | {describe_metrics(both)} |")
    print(f"| the table's own validation | {describe_metrics(table.validation)} |")
    print(f"| predictions per second (cached unit costs) | {per_second:,.0f} |")
    print(f"| build time (s) | {build_s:.0f} |")
    print(f"| measuring the held-out students (s) | {measure_s:.0f} |")
    print(f"| machine | {table.machine.get('cpu_model')}, {table.machine.get('cores')} cores, "
          f"ORT {table.machine.get('onnxruntime')} |")


if __name__ == "__main__":
    main()
