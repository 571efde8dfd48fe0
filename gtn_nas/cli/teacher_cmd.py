"""``gtn-nas train-teacher``: train a standard, SFTN or GTN teacher."""

from __future__ import annotations

import argparse

from gtn_nas.cli.common import out, val_accuracies
from gtn_nas.cli.flags import add_config_flags, given
from gtn_nas.teacher.config import TeacherRunConfig


def refuse_untrusted_config_space(config_path: str | None, space_flag: str | None) -> None:
    """A ``--config`` file is data: if it names a plugin file, ``--space`` must name it too."""
    if config_path is None:
        return
    from gtn_nas.config import read_yaml
    from gtn_nas.space.students import space_spec_of_file

    space_spec_of_file(read_yaml(config_path, "config file"), config_path, trusted=space_flag)


def cmd_train_teacher(args: argparse.Namespace) -> int:
    from gtn_nas.config import load_config
    from gtn_nas.teacher.train import train_teacher

    refuse_untrusted_config_space(args.config, args.space)
    config = load_config(TeacherRunConfig, args.config, given(args, args.config_flags))
    if args.on_bad_image:  # files read during training (imagefolder)
        config.data.options = {**config.data.options, "on_bad_image": args.on_bad_image}
    path = args.out or f"runs/{config.method}-{config.teacher}-{config.data.name}"

    def report(record: dict) -> None:
        out(f"epoch {record['epoch']}: loss={record.get('train/loss', float('nan')):.4f}  "
            f"{val_accuracies(record)}  ({record['seconds']:.1f} s)")

    result = train_teacher(config, path, resume=args.resume, on_epoch_end=report)
    if result.teacher_path is not None:
        out(f"teacher: {result.teacher_path}")
        out(f"run directory: {result.run_dir} (config.yaml, metrics.jsonl, metrics.csv"
            f"{', curves.png' if result.curves_path else ''}"
            f"{', branches.pt' if 'branches' in result.extra_paths else ''}, last.pt)")
    return 0


ON_BAD_IMAGE_HELP = ("imagefolder: an unreadable or empty image stops the run with one line "
                     "naming it (stop, the default) or is skipped (skip)")


def register(commands) -> None:
    from gtn_nas.run.config import RunConfig

    run = RunConfig()
    tt = commands.add_parser("train-teacher", help="train a teacher: standard, SFTN or GTN")
    tt.add_argument("--config", help="YAML file of options (command-line flags override it)")
    # every field of TeacherRunConfig (its data and train sections included) is a flag
    flags = add_config_flags(tt, TeacherRunConfig(), exclude=("train.progress",), helps={
        "train.epochs": f"training epochs (default: {{default}}, the papers' recipe; `gtn-nas "
                        f"run` pre-trains its teacher {run.teacher.pretrain_train.epochs} "
                        f"epochs, then fine-tunes it {run.teacher.train.epochs})",
        "train.lr": f"SGD learning rate (default: {{default}}; `gtn-nas run` fine-tunes at "
                    f"{run.teacher.train.lr:g})",
        "train.schedule": f"{{default}} (default), cosine or constant (`gtn-nas run` uses "
                          f"{run.teacher.train.schedule})"})
    tt.add_argument("--on-bad-image", choices=("stop", "skip"), help=ON_BAD_IMAGE_HELP)
    tt.add_argument("--out", help="run directory (default: runs/<method>-<teacher>-<data>)")
    tt.add_argument("--resume", action="store_true", help="continue from the run's last.pt")
    tt.set_defaults(func=cmd_train_teacher, config_flags=flags)
