"""Benchmark: how far this machine repeats its own latency measurement of the same students.

Run on the machine itself, with nothing else running:
    ./dev python bench/latency_retest.py --space resnet_supernet [--students 60]

Measures ``--students`` random students (width 1, the profile's input) with the profile's
protocol (fresh export and ONNX Runtime session, warm-up, repeats) in one pass, then all of
them again in a second pass, and compares the passes as a predictor is compared with a
measurement: MAPE, share within +-5% / +-10%, median signed change. Two statistics of the same
runs are compared (the profile's median and the minimum), and the spread of one student measured
8 times back to back in one session (what ``gtn-nas profile`` records as the noise floor) is
printed beside them. A latency predictor evaluated against single measurements cannot be
expected to beat the pass-to-pass figure.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from gtn_nas.space.costs import UnitCosts
from gtn_nas.space.export import onnx_session
from gtn_nas.hardware.latency import (_feed, export_student, noise_floor, providers_for,
                             student_input_shape, time_session)
from gtn_nas.hardware.latency_build import error_metrics, median_student
from gtn_nas.space.plugins import build_space
from gtn_nas.hardware.profiles import load_profile


def measure_pass(space, samples, shape, profile) -> list[list[float]]:
    """Every student's timed runs (ms), each in a fresh export and session."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, sample in enumerate(samples):
            path = export_student(space.freeze(sample, seed=0).eval(),
                                  Path(tmp) / f"{index}.onnx", shape, profile)
            session = onnx_session(path, providers=providers_for(profile),
                                   threads=profile.runtime.threads or None)
            runs.append(time_session(session, _feed(session, shape),
                                     profile.measurement.warmup, profile.measurement.repeats))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hw", default="host_cpu")
    parser.add_argument("--space", default="resnet_supernet")
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--students", type=int, default=60)
    parser.add_argument("--seed", type=int, default=500_000)
    args = parser.parse_args()
    profile = load_profile(args.hw)
    channels, size, _ = profile.input.shape
    space = build_space(args.space, in_channels=channels, input_size=size,
                        width_mult=args.width_mult)
    shape = student_input_shape(space, profile)
    samples = [space.sample(args.seed + i) for i in range(args.students)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    first = measure_pass(space, samples, shape, profile)
    second = measure_pass(space, samples, shape, profile)
    seconds = time.perf_counter() - started
    reference = space.freeze(median_student(space, UnitCosts(space), 0), seed=0).eval()
    back_to_back = noise_floor(reference, shape, profile)
    load_after = os.getloadavg()[0]

    print(f"{args.space} (width {args.width_mult}) on {profile.name}: {args.students} random "
          f"students measured twice ({profile.measurement.repeats} runs after "
          f"{profile.measurement.warmup} warm-up, {profile.runtime.threads} threads), "
          f"{seconds:.0f} s; load average {load_before:.1f} before, {load_after:.1f} after\n")
    print("| statistic | pass-to-pass MAPE | within +-5% | within +-10% | median change | "
          "students under 1 ms (MAPE) |")
    print("|---|---|---|---|---|---|")
    for name, statistic in (("median (the profile's)", np.median), ("minimum", np.min)):
        a = np.array([statistic(r) for r in first])
        b = np.array([statistic(r) for r in second])
        metrics = error_metrics(b, a)
        small = a < 1.0
        small_mape = (f"{np.mean(np.abs(b[small] / a[small] - 1)) * 100:.1f}% "
                      f"({int(small.sum())})" if small.any() else "none")
        print(f"| {name} | {metrics['mape'] * 100:.1f}% | {metrics['within_5pct'] * 100:.0f}% | "
              f"{metrics['within_10pct'] * 100:.0f}% | {metrics['median_signed'] * 100:+.1f}% | "
              f"{small_mape} |")
    print(f"\nBack-to-back in one session (the table's noise floor): spread "
          f"{back_to_back['spread'] * 100:.1f}%, max deviation "
          f"{back_to_back['max_deviation'] * 100:.1f}% over {len(back_to_back['rounds_ms'])} "
          f"measurements of the median-FLOPs student ({back_to_back['median_ms']:.2f} ms).")


if __name__ == "__main__":
    main()
