"""Benchmark: a `gtn-nas distill --method kd` job against the plain PyTorch loop doing the same
work (bench/plain_kd_loop.py), both timed as whole processes, back to back, alternating order.

Run: ./dev python bench/distill_overhead.py --teacher T.pt [--epochs 4,20] [--repeats 3]
     [--threads 2] [--limit 2000]
The teacher only has to match the data (Fashion-MNIST 16x16, 10 classes); any
`gtn-nas train-teacher --data fashion-mnist --image-size 16` output does. Without --teacher a
1-epoch resnet32 is trained first (its accuracy does not change the timing). Prints a Markdown
table (median and range of the wall times, ratio of medians) for docs/BENCHMARKS.md; the job
runs with --no-export (the ONNX export is a deliverable the plain loop does not make).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n"
                         f"{done.stderr[-600:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher")
    parser.add_argument("--student", default="s_nas_s")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--epochs", default="4,20")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    gtn = shutil.which("gtn-nas") or "gtn-nas"
    work = Path(tempfile.mkdtemp(prefix="distill-overhead-"))
    teacher = args.teacher
    if teacher is None:
        print("training a 1-epoch resnet32 teacher (timing only)", file=sys.stderr)
        timed([gtn, "train-teacher", "--data", "fashion-mnist", "--image-size", "16",
               "--limit", str(args.limit), "--epochs", "1", "--out", str(work / "teacher")],
              env)
        teacher = str(work / "teacher" / "teacher.pt")
    common = ["--students", args.student, "--data", "fashion-mnist",
              "--image-size", "16", "--limit", str(args.limit), "--teacher", teacher]
    rows = []
    for epochs in [int(e) for e in args.epochs.split(",")]:
        job_times, plain_times = [], []
        for repeat in range(args.repeats + 1):  # the first pair warms the file cache, unused
            out = work / f"job-{epochs}-{repeat}"
            job = [gtn, "distill", *common, "--epochs", str(epochs), "--no-export",
                   "--out", str(out)]
            plain = [sys.executable, str(HERE / "plain_kd_loop.py"), "--teacher", teacher,
                     "--student", args.student, "--limit", str(args.limit),
                     "--epochs", str(epochs)]
            pair = [("job", job), ("plain", plain)]
            if repeat % 2:
                pair.reverse()
            for name, command in pair:
                seconds = timed(command, env)
                if repeat:
                    (job_times if name == "job" else plain_times).append(seconds)
                print(f"epochs {epochs} repeat {repeat}: {name} {seconds:.1f} s",
                      file=sys.stderr)
            shutil.rmtree(out, ignore_errors=True)
        rows.append((epochs, job_times, plain_times))
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{cpu_model()}, {args.threads} threads per process, {args.student}, "
          f"Fashion-MNIST 16x16, {args.limit} training images, 6,000 validation, "
          f"{args.repeats} repeats (median, range):\n")
    print("| epochs | distill job (s) | plain loop (s) | job / plain |")
    print("|---|---|---|---|")
    for epochs, job_times, plain_times in rows:
        job_med, plain_med = statistics.median(job_times), statistics.median(plain_times)
        print(f"| {epochs} | {job_med:.1f} ({min(job_times):.1f}-{max(job_times):.1f}) | "
              f"{plain_med:.1f} ({min(plain_times):.1f}-{max(plain_times):.1f}) | "
              f"{job_med / plain_med:.2f}x |")


if __name__ == "__main__":
    main()
