"""``gtn-nas run``: teacher -> search -> distill -> export -> report, in one run directory."""

from __future__ import annotations

import argparse
import time

from gtn_nas.cli.common import out, val_accuracies
from gtn_nas.cli.flags import add_config_flags, given

RUN_FLAGS = ("data", "seed", "teacher.space", "teacher.sampler", "teacher.train.epochs",
             "search.hw", "search.budget_evals", "distill.method", "distill.train.epochs",
             "distill.seeds", "distill.labelled")
"""The settings of a :class:`~gtn_nas.run.config.RunConfig` that are flags (the rest are
``--config`` keys): the data section, and a few of each stage's."""


def cmd_run(args: argparse.Namespace) -> int:
    from gtn_nas.run.config import load_run_config
    from gtn_nas.run.pipeline import run_pipeline

    if args.config:
        from gtn_nas.config import read_yaml
        from gtn_nas.space.students import space_spec_of_file

        data = read_yaml(args.config, "config file")
        teacher = data.get("teacher") if isinstance(data, dict) else None
        space_spec_of_file(teacher if isinstance(teacher, dict) else {}, args.config,
                           trusted=args.space)
    config = load_run_config(args.config, given(args, args.config_flags, dotted=True))
    path = args.out or time.strftime("runs/run-%Y%m%d-%H%M%S")

    def epoch(record: dict) -> None:
        out(f"  epoch {record['epoch']}: {val_accuracies(record)}  ({record['seconds']:.1f} s)")

    started = time.perf_counter()
    result = run_pipeline(config, path, resume=args.resume, on_stage=out, on_epoch_end=epoch)
    for row in result.summary_rows:
        gain = "-" if row["gain"] is None else f"{row['gain'] * 100:+.1f} points"
        main = row["methods"].get(config.distill.method)
        if main is None:
            continue
        out(f"  {row['student']}: {row['params']:,} params, {row['mflops']:.2f} MFLOPs, "
            f"test top-1 {main['test_acc_best_mean'] * 100:.1f}% ({main['method']}); gain over "
            f"training alone: {gain}")
    out(f"report: {result.report}  ({time.perf_counter() - started:.0f} s)")
    return 0


def register(commands) -> None:
    from gtn_nas.run.config import RunConfig
    from gtn_nas.teacher.config import TeacherRunConfig
    from gtn_nas.distill.config import student_recipe

    defaults = RunConfig()
    recipes = defaults.distill.recipes
    kd, dkd = recipes["kd"], recipes["dkd"]
    run = commands.add_parser("run", help="the whole job: GTN teacher -> search -> distill -> "
                                          "export -> report.md")
    run.add_argument("--config", help="YAML file with every stage's settings "
                                      "(examples/configs/); flags override it")
    flags = add_config_flags(run, defaults, only=RUN_FLAGS, names={
        "teacher.train.epochs": "--teacher-epochs", "distill.train.epochs": "--student-epochs"},
        helps={
        "teacher.train.epochs": f"epochs of the teacher's GTN fine-tuning (default: {{default}}, "
                                f"after {defaults.teacher.pretrain_train.epochs} epochs of "
                                f"standard pre-training; `gtn-nas train-teacher` trains "
                                f"{TeacherRunConfig().train.epochs})",
        "distill.train.epochs": f"distillation epochs per student (default: {{default}}; "
                                f"`gtn-nas distill` trains {student_recipe().epochs})",
        "search.budget_evals": "search candidates per device (default: {default}; `gtn-nas "
                               "search` evaluates 600)",
        "distill.method": f"distiller: kd (default), dkd, fitnets, at, gpd, with the "
                          f"short-schedule recipes of distill.recipes (kd: T = "
                          f"{kd['temperature']:g}, CE {kd['ce_weight']:g}, KD "
                          f"{kd['kd_weight']:g}; dkd: beta {dkd['beta']:g}; `gtn-nas distill` "
                          f"keeps the papers' T = 4, CE 0.1, KD 0.9)"})
    run.add_argument("--out", help="run directory (default: runs/run-<date>-<time>)")
    run.add_argument("--resume", action="store_true",
                     help="continue a killed run from its last finished stage")
    run.set_defaults(func=cmd_run, config_flags=flags)
