"""Benchmark: kill -9 at random moments of teacher training, distillation, ``gtn-nas run``,
``search`` and ``profile``, resume, and compare with an uninterrupted run (the long version of
tests/test_fault_injection.py; the harness is tests/faults.py).

Run: ./dev python bench/fault_injection.py [--trials 30] [--seed 0] [--jobs 2]
     [--stages teacher,distill,run,search,profile] [--max-kills 2] [--work DIR] [--keep]

One uninterrupted reference per stage, then ``--trials`` trials spread round-robin over the
stages, ``--jobs`` at a time. Each trial kills its command (SIGKILL to its process group) after
a random marker file appears plus a random delay, from 0 to the time the reference still ran
after that marker (seeded: trial ``i`` uses ``Random(seed * 1000 + i)``; every second round of
trials also kills the first resumed run), resumes until it completes and compares every file
with the reference: tensors of every ``*.pt`` bit for bit, metrics without ``seconds``,
JSON/YAML summaries without timing fields, the same file set, no ``.*.tmp``, every checkpoint
loadable. Every command runs from a snapshot of the source tree taken at the start.
Prints a Markdown table of trials and the number that passed; exits 1 if any failed.

Settings (tiny, on the embedded digits): teacher = GTN ``tiny`` teacher, 2 epochs of 4 steps
(4, not 3: see the GTN recalibration note in tests/test_fault_injection.py); distill = KD of
``s_nas_s`` and ``s_nas_m`` from the reference teacher, 2 epochs of 3 steps, exported to ONNX;
run = tests/test_pipeline.py's TINY run (teacher 2 epochs of 4 steps, 6-candidate search,
KD and the no-teacher baseline of s/m/l, 1 epoch of 3 steps each, exports, report); search =
evolution over 60 candidates of the default space at width 0.25 and 8x8, ranked by params,
latency estimated for a tiny device profile (not this machine, so no re-measurement: the
search is seeded and writes the same files again); profile = the latency table of that space
on this CPU (12 fit students, no adaptive rounds, 4 validation students, 1 warm-up + 3 timed
runs): its values are timings, so the trial's table is compared with the reference's by
structure (the same keys and list lengths) and must load.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from faults import (HEADER, Completed, Stage, compare_runs, distill_stage,  # noqa: E402
                    kill_and_resume, profile_stage, run_stage, run_to_completion,
                    search_stage, snapshot, table_row, teacher_stage)

TEACHER = ["--teacher", "tiny", "--data", "digits", "--limit", "300", "--epochs", "2",
           "--max-steps-per-epoch", "4", "--batch-size", "32"]
DISTILL = ["--students", "s_nas_s", "s_nas_m", "--data", "digits", "--limit", "300",
           "--epochs", "2", "--max-steps-per-epoch", "3", "--batch-size", "32"]
RUN = {"data": {"name": "digits", "limit": 300}, "seed": 0,
       "teacher": {"teacher": "tiny", "train": {"epochs": 2, "max_steps_per_epoch": 4,
                                                "batch_size": 32}},
       "search": {"budget_evals": 6},
       "distill": {"train": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 32}}}
TINY_SPACE = ["--width-mult", "0.25", "--input-size", "8"]
SEARCH = [*TINY_SPACE, "--latency-mode", "estimate", "--score", "params", "--budget-evals",
          "60"]
PROFILE = [*TINY_SPACE, "--fit-students", "12", "--adaptive-rounds", "0",
           "--validation-students", "4", "--noise-rounds", "2"]


def tiny_profile(path: Path) -> Path:
    """The bundled host_cpu profile made tiny (8x8 input, 1 thread, 1 + 3 timed runs) and
    declared as another device (no re-measurement during a search)."""
    root = Path(__file__).resolve().parents[1]
    profile = yaml.safe_load((root / "hw_profiles" / "host_cpu.yaml").read_text())
    profile.update(name="tiny_cpu", latency_table=None,
                   measurement={"warmup": 1, "repeats": 3, "statistic": "median"})
    profile["runtime"]["threads"] = 1
    profile["input"]["shape"] = [3, 8, 8]
    profile["device"]["runs_here"] = False
    path.write_text(yaml.safe_dump(profile))
    return path


def _with_delays(stage: Stage, reference: Completed) -> Stage:
    """``stage`` with each marker's kill delay drawn from 0 to the time the reference still
    ran after that marker appeared (markers the reference never showed are dropped)."""
    delays = {marker: (0.0, max(0.1, reference.seconds - at))
              for marker, at in reference.marker_times.items()}
    return replace(stage, markers=tuple(m for m in stage.markers if m in delays), delays=delays)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="trials run side by side")
    parser.add_argument("--stages", default="teacher,distill,run,search,profile")
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the trial folders")
    parser.add_argument("--max-kills", type=int, default=2,
                        help="kills per trial cycle 1..N over the rounds (a resumed run is "
                             "killed again)")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    work = Path(args.work or tempfile.mkdtemp(prefix="gtn-nas-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    snapshot(work / "src")  # every command runs this copy of the code, whatever is edited

    config = work / "run.yaml"
    config.write_text(yaml.safe_dump(RUN))
    teacher = teacher_stage(TEACHER)
    device = str(tiny_profile(work / "tiny_cpu.yaml"))
    references: dict[str, Path] = {}
    durations: dict[str, float] = {}
    completions: dict[str, Completed] = {}

    def reference(name: str, stage: Stage) -> None:
        out = work / name / "ref" / "out"
        done = run_to_completion(stage, out)
        if done.returncode != 0:
            raise SystemExit(f"the uninterrupted {name} run failed:\n{done.stderr}")
        references[name], durations[name], completions[name] = out, done.seconds, done

    # the teacher reference first: distillation learns from it
    need_teacher = "teacher" in stages or "distill" in stages
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(reference, "run", run_stage(config))] if "run" in stages else []
        if need_teacher:
            reference("teacher", teacher)
        for future in futures:
            future.result()
    by_name: dict[str, Stage] = {"teacher": teacher, "run": run_stage(config),
                                 "search": search_stage(["--hw", device, *SEARCH]),
                                 "profile": profile_stage(["--hw", device, *PROFILE])}
    for name in ("search", "profile"):
        if name in stages:
            reference(name, by_name[name])
    if "distill" in stages:
        teacher_pt = references["teacher"] / "teacher.pt"
        by_name["distill"] = distill_stage(["--teacher", str(teacher_pt), *DISTILL])
        reference("distill", by_name["distill"])
    for name in stages:  # kill within the reference's own duration after the marker
        by_name[name] = _with_delays(by_name[name], completions[name])
    print("references: " + ", ".join(f"{n} {durations[n]:.0f} s" for n in stages),
          flush=True)

    def trial(index: int):
        name = stages[index % len(stages)]
        out = work / name / f"trial{index}" / "out"
        rng = random.Random(args.seed * 1000 + index)
        result = kill_and_resume(by_name[name], out, rng, seed=index,
                                 kills=1 + (index // len(stages)) % args.max_kills)
        comparison = compare_runs(references[name], out, measured=by_name[name].measured)
        passed = result.completed and comparison.ok
        if passed and not args.keep:  # a failed trial's folder stays, to be looked at
            shutil.rmtree(out.parent, ignore_errors=True)
        row = table_row(index, result, comparison)
        print("  " + " | ".join(row), flush=True)
        if not passed:
            print(f"    {out}: returncodes {result.returncodes}; {comparison.problems()[:5]}; "
                  f"{result.stderr.strip().splitlines()[-1:] if result.stderr else ''}",
                  flush=True)
        return row

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        rows = list(pool.map(trial, range(args.trials)))
    passed = sum(row[-1] == "pass" for row in rows)
    killed = sum(row[4].startswith("yes") for row in rows)
    print()
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(f"{passed}/{len(rows)} trials passed ({killed} killed mid-run, "
          f"{len(rows) - killed} finished before the kill); seed {args.seed}; "
          f"{time.perf_counter() - started:.0f} s on {platform.node()} "
          f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}), "
          f"OMP_NUM_THREADS=1")
    if passed == len(rows) and not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
