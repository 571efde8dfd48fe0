"""A custom search-space plugin used end to end: GTN teacher -> search -> distill -> export.

The space is examples/custom_space_plugin.py (three blocks, each conv3 | conv5 | sep3), named
as a file plugin; nothing is installed. The same steps on the command line:

    PLUGIN=examples/custom_space_plugin.py:build_tiny_space
    gtn-nas train-teacher --method gtn --space $PLUGIN --data digits --out runs/tiny-gtn
    gtn-nas search --hw host_cpu --teacher runs/tiny-gtn/teacher.pt --space $PLUGIN --out runs/tiny-search
    gtn-nas distill --teacher runs/tiny-gtn/teacher.pt --students runs/tiny-search --space $PLUGIN
    gtn-nas export --student runs/distill-kd-digits/s/seed0/student_best.pt --space $PLUGIN --out s.onnx

Run it:  ./dev python examples/custom_space_end_to_end.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gtn_nas.config import DataConfig
from gtn_nas.distill.jobs import DistillRunConfig, distill
from gtn_nas.engine import TrainConfig
from gtn_nas.space.export import export_student_checkpoint
from gtn_nas.hardware.profiles import load_profile
from gtn_nas.search.devices import search_devices
from gtn_nas.search.report import save_search
from gtn_nas.search.scoring import load_branch_scorer
from gtn_nas.search.selection import HalvingConfig
from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

PLUGIN = f"{Path(__file__).resolve().parent / 'custom_space_plugin.py'}:build_tiny_space"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings, for a smoke run")
    parser.add_argument("--out", default=time.strftime("runs/custom-space-%Y%m%d-%H%M%S"))
    args = parser.parse_args()
    out = Path(args.out)
    steps = 4 if args.quick else None
    epochs = (1, 1) if args.quick else (6, 10)
    data = DataConfig("digits", limit=600 if args.quick else None)  # every stage's data

    # 1. a GTN teacher whose grafted branches are copies of the plugin space's blocks
    teacher_config = TeacherRunConfig(
        method="gtn", teacher="tiny" if args.quick else "resnet32", data=data,
        space=PLUGIN, width_mult=0.5,
        train=TrainConfig(epochs=epochs[0], max_steps_per_epoch=steps, progress=False))
    teacher = train_teacher(teacher_config, out / "teacher", on_epoch_end=lambda r: print(
        f"teacher epoch {r['epoch']}: val acc {r['val/acc']:.3f}, branch 1 "
        f"{r.get('val/branch1_acc', float('nan')):.3f}")).teacher_path

    # 2. s/m/l for this machine: latency budgets measured here, proposals ranked through
    #    the teacher's branch, picks chosen by training the best proposals (without a
    #    teacher) by successive halving
    space, scorer = load_branch_scorer(teacher, PLUGIN)
    profile = load_profile("host_cpu")
    alone = DistillRunConfig(method="none", students=("search",), space=PLUGIN, data=data,
                             train=TrainConfig(epochs=epochs[1], max_steps_per_epoch=steps,
                                               schedule="cosine", progress=False))
    result = search_devices(space, [profile], scorer=scorer,
                            scored_by="GTN branch-1 validation accuracy",
                            budget_evals=24 if args.quick else 120,
                            budget_students=12 if args.quick else 100, select="trained",
                            recipe=alone, halving=HalvingConfig(candidates=3 if args.quick
                                                                else 9),
                            folder=out / "search", say=print)[profile.name]
    paths = save_search(result, out / "search", space, profile)
    for tier, pick in result.picks.items():
        print(f"{tier}: {space.describe_sample(pick.sample)} ({pick.latency_ms:.3f} ms, "
              f"validation {pick.val_acc * 100:.1f}%)")

    # 3. distil the picks from the teacher (the plugin is trusted because we name it)
    run = DistillRunConfig(teacher=str(teacher), students=(str(out / "search"),), space=PLUGIN,
                           data=data,
                           train=TrainConfig(epochs=epochs[1], max_steps_per_epoch=steps,
                                             schedule="cosine", progress=False))
    distilled = distill(run, out / "distill", on_job=print)

    # 4. export one student again from its checkpoint (distill already exported each)
    report = export_student_checkpoint(out / "distill" / "s" / "seed0" / "student_best.pt",
                                       out / "s.onnx", space=PLUGIN)
    print(f"{report.path}: parity {report.max_abs_diff:.1e} on {report.parity_inputs}")
    print(f"search summary: {paths['summary']}; distillation summary: "
          f"{distilled.summary['md']}")


if __name__ == "__main__":
    main()
