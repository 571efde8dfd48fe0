"""Benchmark: distillation methods on one preset student, digits, several seeds.

Run: ./dev python bench/distill_methods_digits.py [--student s_nas_s] [--epochs 10]
     [--seeds 0,1,2] [--teacher-epochs 15] [--out runs/bench-distill]

Trains (or reuses) a standard resnet32 teacher on digits, then distils the student with each
method (KD, DKD, GPD with the teacher; GPD without a teacher; plain cross-entropy) through
`gtn_nas.distill.jobs.distill`, the same code as `gtn-nas distill`. Finished runs are skipped,
so an interrupted benchmark continues where it stopped. Prints a Markdown table for
docs/BENCHMARKS.md: test top-1 mean +- std over seeds, and seconds per epoch.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from gtn_nas.config import DataConfig
from gtn_nas.distill.jobs import DistillRunConfig, distill
from gtn_nas.engine import TrainConfig
from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

METHODS = [("kd", True, {}), ("dkd", True, {"warmup_epochs": 2}), ("gpd", True, {}),
           ("gpd", False, {}), ("none", False, {})]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--student", default="s_nas_s")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--out", default="runs/bench-distill")
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    out = Path(args.out)
    teacher_dir = out / "teacher"
    config = TeacherRunConfig(method="standard", teacher="resnet32", data=DataConfig("digits"),
                              train=TrainConfig(epochs=args.teacher_epochs, schedule="cosine",
                                                progress=False))
    teacher = train_teacher(config, teacher_dir, resume=True).teacher_path
    rows = []
    for method, with_teacher, options in METHODS:
        name = f"{method}{'' if with_teacher or method == 'none' else '-scratch'}"
        run = DistillRunConfig(teacher=str(teacher) if with_teacher else None,
                               students=(args.student,), method=method, method_options=options,
                               data=DataConfig("digits"), seeds=seeds, export=False,
                               train=TrainConfig(epochs=args.epochs, schedule="cosine",
                                                 progress=False))
        result = distill(run, out / name, on_job=lambda text: print(f"{name}: {text}",
                                                                    flush=True))
        row = result.rows[0]
        runs = [r for r in _runs(out / name)]
        seconds = statistics.fmean(r["seconds"] / r["epochs"] for r in runs)
        rows.append((name, row, seconds))
    teacher_acc = result.rows and _teacher_acc(out)
    print(f"\nstudent {args.student} (width 0.25, digits 8x8), {args.epochs} epochs, seeds "
          f"{list(seeds)}; teacher resnet32 standard, {args.teacher_epochs} epochs, test top-1 "
          f"{teacher_acc}")
    print("| method | teacher | test top-1 (last) | test top-1 (best on val) | s/epoch |")
    print("|---|---|---|---|---|")
    for name, row, seconds in rows:
        print(f"| {name} | {'yes' if 'scratch' not in name and name != 'none' else 'no'} | "
              f"{row['test_acc_mean'] * 100:.1f} ± {row['test_acc_std'] * 100:.1f} | "
              f"{row['test_acc_best_mean'] * 100:.1f} ± {row['test_acc_best_std'] * 100:.1f} | "
              f"{seconds:.2f} |")


def _runs(folder: Path):
    import json

    for path in sorted(folder.glob("*/seed*/result.json")):
        yield json.loads(path.read_text())


def _teacher_acc(out: Path) -> str:
    import json

    for path in out.glob("*/teacher.json"):
        return f"{json.loads(path.read_text())['test_acc'] * 100:.1f}%"
    return "-"


if __name__ == "__main__":
    main()
