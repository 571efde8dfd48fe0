"""Quickstart: the whole gtn-nas job from Python, with the same defaults as `gtn-nas run`.

    ./dev python examples/quickstart.py                 # the default run on digits (~3 min)
    ./dev python examples/quickstart.py --quick         # a smoke run (under a minute)

Each stage is also a function of its own (same defaults as its command):
    gtn_nas.teacher.train.train_teacher   (gtn-nas train-teacher)
    gtn_nas.search.strategy.run_search             (gtn-nas search)
    gtn_nas.distill.jobs.distill           (gtn-nas distill)
    gtn_nas.space.export.export_student_checkpoint (gtn-nas export)
"""

from __future__ import annotations

import argparse
import time

from gtn_nas.run.config import load_run_config
from gtn_nas.run.pipeline import run_pipeline

QUICK = {"teacher.teacher": "tiny", "teacher.train.epochs": 1,
         "teacher.train.max_steps_per_epoch": 5, "teacher.pretrain_train.epochs": 1,
         "teacher.pretrain_train.max_steps_per_epoch": 5, "search.budget_evals": 30,
         "distill.train.epochs": 2, "data.limit": 600}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings, for a smoke run")
    parser.add_argument("--out", default=time.strftime("runs/quickstart-%Y%m%d-%H%M%S"))
    args = parser.parse_args()
    config = load_run_config(None, QUICK if args.quick else None)
    result = run_pipeline(config, args.out, on_stage=print)
    for row in result.summary_rows:
        distilled = row["methods"][config.distill.method]
        gain = "-" if row["gain"] is None else f"{row['gain'] * 100:+.1f} points"
        print(f"{row['student']}: {row['params']:,} params, {row['mflops']:.2f} MFLOPs, "
              f"top-1 {distilled['test_acc_best_mean'] * 100:.1f}%, gain over training alone "
              f"{gain}")
    print(f"open {result.report}")


if __name__ == "__main__":
    main()
