"""``gtn-nas distill``, ``gtn-nas export`` and ``gtn-nas report``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gtn_nas.cli.common import out
from gtn_nas.cli.flags import add_config_flags, given
from gtn_nas.cli.teacher_cmd import ON_BAD_IMAGE_HELP, refuse_untrusted_config_space
from gtn_nas.distill.config import DistillRunConfig
from gtn_nas.errors import ConfigError


def cmd_distill(args: argparse.Namespace) -> int:
    from gtn_nas.config import load_config
    from gtn_nas.distill.jobs import distill, parse_shard

    refuse_untrusted_config_space(args.config, args.space)
    config = load_config(DistillRunConfig, args.config, given(args, args.config_flags))
    if args.on_bad_image:  # files read during training (imagefolder)
        config.data.options = {**config.data.options, "on_bad_image": args.on_bad_image}
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
    from gtn_nas.run.config import RunConfig

    recipes = RunConfig().distill.recipes
    kd, dkd = recipes["kd"], recipes["dkd"]
    run_epochs = RunConfig().distill.train.epochs
    dist = commands.add_parser("distill", help="train students from a teacher (KD, DKD, "
                                               "FitNets, AT, GPD; ls, none without one)")
    dist.add_argument("--config", help="YAML file of options (command-line flags override it)")
    # every field of DistillRunConfig (its data and train sections included) is a flag; the
    # students' seeds are --seeds
    flags = add_config_flags(dist, DistillRunConfig(), exclude=("train.seed", "train.progress"),
                             helps={
        "method": f"kd (default), dkd, fitnets, at, gpd; without a teacher: none (plain CE) or "
                  f"ls (label smoothing); `gtn-nas list distillers` shows the installed ones. "
                  f"Options default to the papers' (kd: T = 4, CE 0.1, KD 0.9), not to `gtn-nas "
                  f"run`'s short-schedule recipes (kd: T = {kd['temperature']:g}, CE "
                  f"{kd['ce_weight']:g}, KD {kd['kd_weight']:g}; dkd: beta {dkd['beta']:g})",
        "train.epochs": f"epochs per student (default: {{default}}, the GTN supplement's "
                        f"recipe; `gtn-nas run` trains its students {run_epochs})",
        "train.schedule": "cosine (default, as in `gtn-nas run`), step or constant",
        "train.val_every": "validate every K epochs and after the last (default {default}); "
                           "the best student is chosen among the validated epochs"})
    dist.add_argument("--on-bad-image", choices=("stop", "skip"), help=ON_BAD_IMAGE_HELP)
    dist.add_argument("--shard", help="K/N: run every N-th job starting at the K-th")
    dist.add_argument("--out", help="output directory (default: runs/distill-<method>-<data>)")
    dist.set_defaults(func=cmd_distill, config_flags=flags)

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
