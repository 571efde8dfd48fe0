"""Benchmark: costs across the paper's space and the speed of the space's basic operations.

Run: ./dev python bench/space_costs.py [--students 200] [--width-mult 1.0]
Prints Markdown for docs/BENCHMARKS.md: the presets' parameters and FLOPs, the spread of FLOPs
and parameters over random students, and the time to sample, validate and freeze a student.
"""

from __future__ import annotations

import argparse
import statistics
import time

from gtn_nas.space.costs import count_flops, count_params
from gtn_nas.space.plugins import build_space


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--space", default="resnet_supernet")
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--width-mult", type=float, default=1.0)
    args = parser.parse_args()
    space = build_space(args.space, width_mult=args.width_mult)
    example = space.example_input()
    print(f"space {space.spec}, options {space.options}, {space.size():,} students\n")
    print("| preset | params | MFLOPs |\n|---|---|---|")
    for name in space.presets:
        student = space.freeze(space.preset(name))
        print(f"| {name} | {count_params(student):,} | {count_flops(student, example) / 1e6:.1f} |")

    flops, params, t_sample, t_validate, t_freeze, t_flops = [], [], [], [], [], []
    for seed in range(args.students):
        t0 = time.perf_counter()
        sample = space.sample(seed)
        t1 = time.perf_counter()
        space.validate(sample)
        t2 = time.perf_counter()
        student = space.freeze(sample)
        t3 = time.perf_counter()
        flops.append(count_flops(student, example) / 1e6)
        t4 = time.perf_counter()
        params.append(count_params(student) / 1e6)
        t_sample.append(t1 - t0)
        t_validate.append(t2 - t1)
        t_freeze.append(t3 - t2)
        t_flops.append(t4 - t3)

    def spread(values: list[float]) -> str:
        qs = statistics.quantiles(values, n=10)
        return (f"{min(values):.2f} / {qs[0]:.2f} / {statistics.median(values):.2f} / "
                f"{qs[-1]:.2f} / {max(values):.2f}")

    print(f"\n{args.students} random students (seeds 0..{args.students - 1}): "
          "min / p10 / median / p90 / max\n")
    print("| quantity | spread |\n|---|---|")
    print(f"| MFLOPs | {spread(flops)} |")
    print(f"| M params | {spread(params)} |")
    print(f"| sample (ms) | {spread([t * 1e3 for t in t_sample])} |")
    print(f"| validate (ms) | {spread([t * 1e3 for t in t_validate])} |")
    print(f"| freeze (ms) | {spread([t * 1e3 for t in t_freeze])} |")
    print(f"| fvcore FLOP count (ms) | {spread([t * 1e3 for t in t_flops])} |")


if __name__ == "__main__":
    main()
