"""``gtn-nas distill``, ``gtn-nas export`` and ``gtn-nas report``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gtn_nas.cli.common import key_values, out
from gtn_nas.cli.teacher_cmd import add_device_arguments, refuse_untrusted_config_space
from gtn_nas.errors import ConfigError


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``; one clear error for anything else."""
    try:
        seeds = tuple(int(part) for part in str(text).split(",") if part.strip() != "")
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers (e.g. 0,1,2), got "
                          f"'{text}'") from None
    if not seeds:
        raise ConfigError(f"--seeds must name at least one seed, got '{text}'")
    return seeds


def cmd_distill(args: argparse.Namespace) -> int:
    from gtn_nas.config import load_config, to_plain
    from gtn_nas.distill.jobs import DistillRunConfig, distill, parse_shard

    refuse_untrusted_config_space(args.config, args.space)
    run = {k: getattr(args, k) for k in ("teacher", "method", "teacher_mode", "space",
                                         "width_mult", "baseline", "labelled")}
    run["data"] = {"name": args.data, "root": args.data_root, "image_size": args.image_size,
                   "limit": args.limit}
    if args.students:
        run["students"] = list(args.students)
    if args.seeds is not None:
        run["seeds"] = list(parse_seeds(args.seeds))
    if args.option:
        run["method_options"] = key_values(args.option, "--option")
    if args.data_option:
        run["data"]["options"] = key_values(args.data_option, "--data-option")
    if args.download:
        run["data"]["download"] = True
    if args.no_export:
        run["export"] = False
    config = load_config(DistillRunConfig, args.config, run)
    if args.on_bad_image:  # files read during training (imagefolder)
        config.data.options = {**config.data.options, "on_bad_image": args.on_bad_image}
    train = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "schedule",
                                           "accelerator", "devices", "strategy", "precision",
                                           "max_steps_per_epoch", "num_workers", "grad_clip",
                                           "val_every", "compile", "channels_last")}
    train = {k: v for k, v in train.items() if v is not None}
    if train:
        config.train = load_config(type(config.train), None, {**to_plain(config.train), **train})
    shard = parse_shard(args.shard)
    path = args.out or f"runs/distill-{config.method}-{config.data.name}"

    def epoch(record: dict) -> None:
        val = record.get("val/acc")
        out(f"  epoch {record['epoch']}: loss={record.get('train/loss', float('nan')):.4f}  "
            f"val acc={'-' if val is None else f'{val:.3f}'}  ({record['seconds']:.1f} s)")

    result = distill(config, path, shard=shard, on_job=out, on_epoch_end=epoch)
    if result.follower:  # a rank launched by --strategy ddp: rank 0 reports
        return 0
    out(f"{len(result.ran)} run(s) trained, {len(result.skipped)} finished earlier"
        + (f", {len(result.busy)} running in another process" if result.busy else ""))
    for row in result.rows:
        out(f"  {row['student']} ({row['method']}): {row['params']:,} params, "
            f"{row['mflops']:.2f} MFLOPs, test top-1 {row['test_acc_mean']:.4f} ± "
            f"{row['test_acc_std']:.4f} over {len(row['seeds'])} seed(s)")
    out(f"summary: {result.summary['md']} (csv, json beside it)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gtn_nas.space.export import export_student_checkpoint

    report = export_student_checkpoint(args.student, args.out, opset=args.opset,
                                       dynamic_batch=args.dynamic_batch, space=args.space,
                                       data=args.data, data_root=args.data_root)
    out(f"wrote {report.path} (opset {report.opset}, "
        f"{'dynamic' if report.dynamic_batch else 'fixed'} batch; ONNX checker passed)")
    out(f"parity on {report.parity_inputs}: max |ORT - PyTorch| = {report.max_abs_diff:.2e}")
    if report.ort_ms is not None:
        out(f"latency here, batch 1 (median): ONNX Runtime {report.ort_ms:.3f} ms, PyTorch "
            f"eager {report.torch_ms:.3f} ms ({report.torch_ms / report.ort_ms:.1f}x)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from gtn_nas.distill.jobs import write_summary

    folder = Path(args.dir)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a directory (give a distill or run directory)")
    if (folder / "run.json").is_file():
        from gtn_nas.run.pipeline import rebuild_report

        path = rebuild_report(folder)
        out(f"report: {path}")
        return 0
    paths, rows = write_summary(folder)
    if not rows:
        raise ConfigError(f"{folder} holds no finished distillation runs (no */seed*/result.json)")
    out(f"{len(rows)} student(s) summarised: {paths['md']} (csv, json beside it)")
    return 0


def register(commands) -> None:
    dist = commands.add_parser("distill", help="train students from a teacher (KD, DKD, "
                                               "FitNets, AT, GPD; ls, none without one)")
    dist.add_argument("--config", help="YAML file of options (command-line flags override it)")
    dist.add_argument("--teacher", help="teacher.pt (from train-teacher or gtn-nas run)")
    dist.add_argument("--students", nargs="+",
                      help="preset names, sample files and/or search output directories")
    dist.add_argument("--method", help="kd (default), dkd, fitnets, at, gpd; without a "
                                       "teacher: none (plain CE) or ls (label smoothing); "
                                       "`gtn-nas list distillers` shows the installed ones. "
                                       "Options default to the papers' (kd: T = 4, CE 0.1, "
                                       "KD 0.9), not to `gtn-nas run`'s short-schedule "
                                       "recipes (kd: T = 1, CE 0.5, KD 0.5; dkd: beta 2)")
    dist.add_argument("--baseline", help="the --out of a run of the same students with "
                                         "--method none or ls: says which students the "
                                         "teacher cannot help (its test top-1 not above "
                                         "theirs alone)")
    dist.add_argument("--option", action="append", metavar="KEY=VALUE",
                      help="method option (e.g. temperature=2, warmup_epochs=5); repeatable")
    dist.add_argument("--teacher-mode", help="eval (default) or train")
    dist.add_argument("--data", help="dataset (default: digits)")
    dist.add_argument("--data-root", help="dataset folder (default: Debian's package for "
                                          "fashion-mnist, else $XDG_CACHE_HOME/gtn-nas/data)")
    dist.add_argument("--on-bad-image", choices=("stop", "skip"),
                    help="imagefolder: an unreadable or empty image stops the run with one "
                         "line naming it (stop, the default) or is skipped (skip)")
    dist.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                      help="dataset option; repeatable")
    dist.add_argument("--download", action="store_true",
                      help="fetch a missing fashion-mnist or cifar100 with torchvision into "
                           "--data-root or $XDG_CACHE_HOME/gtn-nas/data (needs internet)")
    dist.add_argument("--image-size", type=int, help="resize images to this size")
    dist.add_argument("--limit", type=int, help="use at most this many training images")
    dist.add_argument("--labelled", type=int,
                      help="only this many training images keep their labels (the images a "
                           "--limit of it would train on); kd, fitnets and at also learn from "
                           "the rest through the teacher, none and ls train on the labelled")
    dist.add_argument("--space", help="space of preset names; names a plugin file to trust it")
    dist.add_argument("--width-mult", type=float, help="width of preset students (default 0.25)")
    dist.add_argument("--seeds", help="comma-separated seeds (default: 0)")
    dist.add_argument("--epochs", type=int,
                      help="epochs per student (default: 240, the GTN supplement's recipe; "
                           "`gtn-nas run` trains its students 10)")
    dist.add_argument("--batch-size", type=int, help="batch size (default: 64)")
    dist.add_argument("--lr", type=float, help="SGD learning rate (default: 0.05)")
    dist.add_argument("--schedule", help="cosine (default, as in `gtn-nas run`), step or "
                                         "constant")
    dist.add_argument("--grad-clip", type=float, help="gradient-norm clip")
    dist.add_argument("--max-steps-per-epoch", type=int, help="cap the steps of an epoch")
    dist.add_argument("--val-every", type=int, metavar="K",
                      help="validate every K epochs and after the last (default 1); the best "
                           "student is chosen among the validated epochs")
    add_device_arguments(dist)
    dist.add_argument("--shard", help="K/N: run every N-th job starting at the K-th")
    dist.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    dist.add_argument("--out", help="output directory (default: runs/distill-<method>-<data>)")
    dist.set_defaults(func=cmd_distill)

    exp = commands.add_parser("export", help="export a student checkpoint to ONNX (checked "
                                             "against PyTorch)")
    exp.add_argument("--student", required=True, help="student_last.pt / student_best.pt")
    exp.add_argument("--out", required=True, help="the .onnx file to write")
    exp.add_argument("--opset", type=int, default=17)
    exp.add_argument("--dynamic-batch", action="store_true", help="a dynamic batch dimension")
    exp.add_argument("--space", help="the plugin file the student was made with, to trust it")
    exp.add_argument("--data", help="dataset for the parity batch (default: the student's)")
    exp.add_argument("--data-root", help="dataset folder")
    exp.set_defaults(func=cmd_export)

    rep = commands.add_parser("report", help="rebuild the summary of a distill or run "
                                             "directory (e.g. after sharded runs)")
    rep.add_argument("dir", help="the directory")
    rep.set_defaults(func=cmd_report)
