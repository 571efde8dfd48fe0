"""Benchmark (issue 8): the same seeded search twice on one latency table, the second time with
a busy-loop on every core; the picks must be the same and every output written.

Run (after building this machine's table, e.g. with bench/latency_table.py --save FILE):
    ./dev python bench/latency_busy_search.py --table /tmp/resnet.latency.json
Prints the picks of both runs, the re-measurement's noise, load factor and verdict, and the
notes, as Markdown for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import tempfile
import time

from gtn_nas.space.plugins import build_space
from gtn_nas.hardware.profiles import load_profile
from gtn_nas.search.strategy import run_search
from gtn_nas.search.report import save_search


def _spin(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def _search(space, profile, table: str, evals: int, seed: int, out: str):
    start = time.perf_counter()
    result = run_search(space, profile, budget_evals=evals, seed=seed, latency_table=table,
                        remeasure=True)
    paths = save_search(result, out, space, profile)
    return result, paths, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hw", default="host_cpu")
    parser.add_argument("--space", default="resnet_supernet")
    parser.add_argument("--table", required=True)
    parser.add_argument("--evals", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    profile = load_profile(args.hw)
    channels, size, _ = profile.input.shape
    space = build_space(args.space, in_channels=channels, input_size=size)
    profile = dataclasses.replace(profile, latency_table=args.table)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs["quiet"] = _search(space, profile, args.table, args.evals, args.seed,
                                f"{tmp}/quiet")
        cores = os.cpu_count() or 2
        stop_at = time.time() + 3600
        spinners = [multiprocessing.Process(target=_spin, args=(stop_at,), daemon=True)
                    for _ in range(cores)]
        for proc in spinners:
            proc.start()
        try:
            runs["busy"] = _search(space, profile, args.table, args.evals, args.seed,
                                   f"{tmp}/busy")
        finally:
            for proc in spinners:
                proc.terminate()
                proc.join()
        written = {name: sorted(p.name for p in (paths["summary"].parent).rglob("*")
                                if p.is_file()) for name, (_, paths, _) in runs.items()}
    print(f"`{args.space}` on {profile.name}, {args.evals} evaluations, seed {args.seed}, "
          f"table {args.table}; busy run with {cores} busy-loop processes; load average "
          f"{os.getloadavg()[0]:.1f} at the end\n")
    print("| run | tier | pick (MFLOPs) | predicted ms | re-measured ms | load-normalised ms |")
    print("|---|---|---|---|---|---|")
    for name, (result, _, _) in runs.items():
        for tier, pick in result.picks.items():
            m = pick.measured or {}
            print(f"| {name} | {tier} | {pick.mflops:.1f} | {pick.latency_ms:.3f} | "
                  f"{m.get('median_ms', float('nan')):.3f} | "
                  f"{m.get('normalized_ms', float('nan')):.3f} |")
    same = all(runs["quiet"][0].picks[t].sample == runs["busy"][0].picks[t].sample
               for t in runs["quiet"][0].picks)
    print(f"\nsame picks: {same}")
    for name, (result, _, seconds) in runs.items():
        check = result.remeasurement
        print(f"- {name}: {seconds:.0f} s; reference spread {check.get('noise', 0) * 100:.1f}%, "
              f"load factor {check.get('load')}, trusted {check.get('trusted')}; files: "
              f"{', '.join(written[name])}")
        for note in result.notes:
            print(f"  - note: {note}")


if __name__ == "__main__":
    main()
