"""``gtn-nas run``: teacher -> search -> distill -> export -> report, in one run directory."""

from __future__ import annotations

import argparse
import time

from gtn_nas.cli.common import out, val_accuracies


def cmd_run(args: argparse.Namespace) -> int:
    from gtn_nas.cli.distill_cmds import parse_seeds
    from gtn_nas.config import NULL
    from gtn_nas.run.config import load_run_config
    from gtn_nas.run.pipeline import run_pipeline

    if args.config:
        from gtn_nas.config import read_yaml
        from gtn_nas.space.students import space_spec_of_file

        data = read_yaml(args.config, "config file")
        teacher = data.get("teacher") if isinstance(data, dict) else None
        space_spec_of_file(teacher if isinstance(teacher, dict) else {}, args.config,
                           trusted=args.space)
    overrides = {"data.name": args.data, "data.root": args.data_root, "seed": args.seed,
                 "teacher.train.epochs": args.teacher_epochs, "teacher.sampler": args.sampler,
                 "teacher.space": args.space,
                 "search.budget_evals": args.budget_evals,
                 "search.hw": list(args.hw) if args.hw else None,
                 "distill.method": args.method,
                 "distill.train.epochs": args.student_epochs,
                 "distill.seeds": list(parse_seeds(args.seeds)) if args.seeds else None}
    if args.labelled is not None:
        overrides["distill.labelled"] = NULL if args.labelled == "all" else _count(args.labelled)
    if args.download:
        overrides["data.download"] = True
    config = load_run_config(args.config, overrides)
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


def _count(text: str) -> int:
    from gtn_nas.errors import ConfigError

    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--labelled must be a number of images or all, got "
                          f"'{text}'") from None


def register(commands) -> None:
    run = commands.add_parser("run", help="the whole job: GTN teacher -> search -> distill -> "
                                          "export -> report.md")
    run.add_argument("--config", help="YAML file with every stage's settings "
                                      "(examples/configs/); flags override it")
    run.add_argument("--data", help="dataset (default: digits)")
    run.add_argument("--data-root", help="dataset folder (default: Debian's package for "
                                         "fashion-mnist, else $XDG_CACHE_HOME/gtn-nas/data)")
    run.add_argument("--download", action="store_true",
                     help="fetch a missing fashion-mnist or cifar100 with torchvision into "
                          "--data-root or $XDG_CACHE_HOME/gtn-nas/data (needs internet)")
    run.add_argument("--seed", type=int, help="seeds every stage (default: 0)")
    run.add_argument("--space", help="the teacher's branch space (a plugin file to trust it)")
    run.add_argument("--sampler", help="GTN sampler: uniform (default), learned or "
                                       "adversarial")
    run.add_argument("--teacher-epochs", type=int,
                     help="epochs of the teacher's GTN fine-tuning (default: 6, after 30 "
                          "epochs of standard pre-training; `gtn-nas train-teacher` trains "
                          "240)")
    run.add_argument("--hw", action="append",
                     help="extra hardware profile to search for (host_cpu always runs); "
                          "repeatable")
    run.add_argument("--budget-evals", type=int,
                     help="search candidates per device (default: 200; `gtn-nas search` "
                          "evaluates 600)")
    run.add_argument("--method", help="distiller: kd (default), dkd, fitnets, at, gpd, with "
                                      "the short-schedule recipes of distill.recipes (kd: "
                                      "T = 1, CE 0.5, KD 0.5; dkd: beta 2; `gtn-nas distill` "
                                      "keeps the papers' T = 4, CE 0.1, KD 0.9)")
    run.add_argument("--student-epochs", type=int,
                     help="distillation epochs per student (default: 10; `gtn-nas distill` "
                          "trains 240)")
    run.add_argument("--seeds", help="comma-separated student seeds (default: 0)")
    run.add_argument("--labelled", help="labelled images the students learn from (default: "
                                        "250; through the teacher they also learn from the "
                                        "other training images); all: every label, what dkd "
                                        "and gpd need")
    run.add_argument("--out", help="run directory (default: runs/run-<date>-<time>)")
    run.add_argument("--resume", action="store_true",
                     help="continue a killed run from its last finished stage")
    run.set_defaults(func=cmd_run)
