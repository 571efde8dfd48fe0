"""Benchmark: where a distill job's and a teacher epoch's time goes, per phase.

Run: ./dev python bench/profile_phases.py [--teacher T.pt] [--limit 2000] [--epochs 4]
     [--threads 2]
Profiles with torch.profiler (CPU activity): the engine marks its phases with
``record_function`` (``engine/data``, ``engine/forward``, ``engine/backward``,
``engine/optimizer``, ``engine/metrics``, ``engine/validation``, ``engine/checkpoint``) and distillers mark the teacher's forward (``distill/teacher_forward``,
inside ``engine/forward``). Three runs on Fashion-MNIST 16x16: a KD distill job (s_nas_s, the
whole job: data, teacher accuracy once, training, test, saving), one epoch of a standard
resnet32 teacher and one of a GTN (uniform) teacher. Prints a Markdown table of seconds and
shares of the profiled wall time; the profiler's own overhead inflates every phase a little.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from distill_overhead import cpu_model

PHASES = ("engine/data", "engine/forward", "distill/teacher_forward", "engine/backward",
          "engine/optimizer", "engine/metrics", "engine/validation", "engine/checkpoint")


def profiled(run) -> tuple[float, dict[str, float]]:
    """Wall seconds of ``run()`` under the profiler and seconds per phase label."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        run()
        wall = time.perf_counter() - started
    totals = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages() if e.key in PHASES}
    return wall, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="a Fashion-MNIST 16x16 teacher.pt (default: the "
                                          "1-epoch standard teacher this script trains)")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from gtn_nas.config import DataConfig
    from gtn_nas.distill.jobs import DistillRunConfig, distill
    from gtn_nas.engine import TrainConfig
    from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

    work = Path(tempfile.mkdtemp(prefix="profile-phases-"))
    data = DataConfig("fashion-mnist", image_size=16, limit=args.limit)
    columns: dict[str, tuple[float, dict[str, float]]] = {}
    for method in ("standard", "gtn"):
        config = TeacherRunConfig(method=method, teacher="resnet32", data=data,
                                  eval_paths=2,  # the run's setting
                                  train=TrainConfig(epochs=1, lr=0.05, progress=False))
        columns[f"{method} teacher, 1 epoch"] = profiled(
            lambda c=config, m=method: train_teacher(c, work / m))
    teacher = args.teacher or str(work / "standard" / "teacher.pt")
    config = DistillRunConfig(teacher=teacher, students=("s_nas_s",), method="kd", export=False,
                              data=data, train=TrainConfig(epochs=args.epochs, lr=0.05,
                                                        schedule="cosine", progress=False))
    columns = {f"KD job, {args.epochs} epochs": profiled(lambda: distill(config, work / "kd")),
               **columns}
    print(f"\n{cpu_model()}, {args.threads} threads, Fashion-MNIST 16x16, {args.limit} training "
          f"images, 6,000 validation; seconds (share of the profiled wall time):\n")
    print("| phase | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for phase in PHASES:
        cells = []
        for wall, totals in columns.values():
            seconds = totals.get(phase)
            cells.append("-" if seconds is None else f"{seconds:.2f} ({seconds / wall:.0%})")
        print(f"| {phase} | " + " | ".join(cells) + " |")
    cells = []
    for wall, totals in columns.values():
        # teacher_forward is inside engine/forward
        inside = sum(v for k, v in totals.items() if k != "distill/teacher_forward")
        cells.append(f"{wall - inside:.2f} ({(wall - inside) / wall:.0%})")
    print("| outside the loop (set-up, data loading, teacher accuracy, test, saving) | "
          + " | ".join(cells) + " |")
    print("| **wall (profiled)** | " + " | ".join(f"{w:.2f}" for w, _ in columns.values())
          + " |")


if __name__ == "__main__":
    main()
