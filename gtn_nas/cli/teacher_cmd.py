"""``gtn-nas train-teacher``: train a standard, SFTN or GTN teacher."""

from __future__ import annotations

import argparse

from gtn_nas.cli.common import key_values, out, val_accuracies


def refuse_untrusted_config_space(config_path: str | None, space_flag: str | None) -> None:
    """A ``--config`` file is data: if it names a plugin file, ``--space`` must name it too."""
    if config_path is None:
        return
    from gtn_nas.config import read_yaml
    from gtn_nas.space.students import space_spec_of_file

    space_spec_of_file(read_yaml(config_path, "config file"), config_path, trusted=space_flag)


def cmd_train_teacher(args: argparse.Namespace) -> int:
    from gtn_nas.config import load_config, to_plain
    from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

    refuse_untrusted_config_space(args.config, args.space)
    train = {k: getattr(args, k) for k in (
        "epochs", "batch_size", "lr", "schedule", "seed", "accelerator", "devices", "strategy",
        "precision", "max_steps_per_epoch", "num_workers", "val_every", "compile",
        "channels_last")}
    if args.sync_batchnorm:
        train["sync_batchnorm"] = True
    train["milestones"] = args.milestones
    train = {k: v for k, v in train.items() if v is not None}
    run = {k: getattr(args, k) for k in (
        "method", "teacher", "space", "width_mult",
        "student", "sampler", "alpha", "warmup_epochs", "teacher_weights",
        "cost_target_mflops", "arch_lr", "entropy_weight", "path_prior", "full_branch",
        "sandwich", "inplace_distill", "eval_paths", "eval_recalibration_batches",
        "eval_paths_every")}
    run["data"] = {"name": args.data, "root": args.data_root, "image_size": args.image_size,
                   "limit": args.limit}
    if args.pretrained:
        run["pretrained"] = True
    if args.download:
        run["data"]["download"] = True
    if args.teacher_option:
        run["teacher_options"] = key_values(args.teacher_option, "--teacher-option")
    if args.data_option:
        run["data"]["options"] = key_values(args.data_option, "--data-option")
    config = load_config(TeacherRunConfig, args.config, run)
    if args.on_bad_image:  # files read during training (imagefolder)
        config.data.options = {**config.data.options, "on_bad_image": args.on_bad_image}
    if train:
        config.train = load_config(type(config.train), None, {**to_plain(config.train), **train})
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


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """Lightning Fabric's device options (shared by every training command)."""
    parser.add_argument("--accelerator", help="cpu (default), gpu, auto")
    parser.add_argument("--devices", type=int, help="number of devices (processes)")
    parser.add_argument("--strategy", help="auto, ddp, ddp_spawn")
    parser.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed")
    parser.add_argument("--num-workers", type=int, help="data-loading processes")
    parser.add_argument("--channels-last", action="store_true", default=None,
                        help="NHWC memory format (faster convolutions on CPU; results differ "
                             "from the default in the last bits)")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile the training step (pays only on long runs: the "
                             "compile takes tens of seconds; not bit-identical)")


def register(commands) -> None:
    tt = commands.add_parser("train-teacher", help="train a teacher: standard, SFTN or GTN")
    tt.add_argument("--config", help="YAML file of options (command-line flags override it)")
    tt.add_argument("--method", help="standard, sftn or gtn (default: gtn)")
    tt.add_argument("--teacher", help="teacher name (default: resnet32; `gtn-nas list "
                                      "teachers` shows the installed ones)")
    tt.add_argument("--teacher-option", action="append", metavar="KEY=VALUE",
                    help="teacher builder option (e.g. norm=none for tiny); repeatable")
    tt.add_argument("--data", help="dataset (default: digits; also fashion-mnist, cifar100, "
                                   "imagefolder, synthetic: `gtn-nas list datasets`)")
    tt.add_argument("--data-root", help="dataset folder (default: Debian's package for "
                                        "fashion-mnist, else $XDG_CACHE_HOME/gtn-nas/data)")
    tt.add_argument("--on-bad-image", choices=("stop", "skip"),
                    help="imagefolder: an unreadable or empty image stops the run with one "
                         "line naming it (stop, the default) or is skipped (skip)")
    tt.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                    help="dataset option (e.g. num_classes=5 for synthetic); repeatable")
    tt.add_argument("--download", action="store_true",
                    help="fetch a missing fashion-mnist or cifar100 with torchvision into "
                         "--data-root or $XDG_CACHE_HOME/gtn-nas/data (needs internet)")
    tt.add_argument("--image-size", type=int, help="resize images to this size")
    tt.add_argument("--limit", type=int, help="use at most this many training images")
    tt.add_argument("--pretrained", action="store_true",
                    help="start from local ImageNet weights (efficientnet_b0)")
    tt.add_argument("--teacher-weights", help="state_dict file to start the teacher from")
    tt.add_argument("--space", help="search space for the branches (sftn, gtn)")
    tt.add_argument("--width-mult", type=float, help="width multiplier of the space")
    tt.add_argument("--student", help="sftn: the student (a preset name or a sample file)")
    tt.add_argument("--sampler", help="gtn: uniform, learned or adversarial")
    tt.add_argument("--cost-target-mflops", type=float,
                    help="gtn: cost-aware sampler, expected MFLOPs target")
    tt.add_argument("--arch-lr", type=float, help="gtn: Adam learning rate of the sampler "
                                                  "(default 0.02)")
    tt.add_argument("--entropy-weight", type=float,
                    help="gtn: weight of the sampler's entropy bonus (default 0.1)")
    tt.add_argument("--path-prior", help="gtn: student (each layer's configurations equally "
                                         "likely, default) or label (uniform per label)")
    tt.add_argument("--full-branch", action=argparse.BooleanOptionalAction, default=None,
                    help="gtn: train a full-path branch from the input image (default: on for "
                         "learned/adversarial samplers, off for uniform)")
    tt.add_argument("--sandwich", action=argparse.BooleanOptionalAction, default=None,
                    help="gtn: also train the largest and smallest students each step")
    tt.add_argument("--inplace-distill", type=float,
                    help="gtn: weight of KL(teacher || branch) for every branch path (default 0)")
    tt.add_argument("--eval-paths", type=int,
                    help="gtn: K fixed paths whose mean branch accuracy is logged (default 8)")
    tt.add_argument("--eval-paths-every", type=int,
                    help="gtn: score the logged paths every N epochs and after the last (the "
                         "teacher's accuracy every epoch; default 5)")
    tt.add_argument("--eval-recalibration-batches", type=int,
                    help="gtn: training batches recalibrating each logged path's BN "
                         "statistics (default 4; 0: shared statistics)")
    tt.add_argument("--alpha", type=float,
                    help="weight of the branch KL term (default: 3 on cifar100, else 1)")
    tt.add_argument("--warmup-epochs", type=int,
                    help="epochs with the teacher frozen while the branches learn")
    tt.add_argument("--epochs", type=int,
                    help="training epochs (default: 240, the papers' recipe; `gtn-nas run` "
                         "pre-trains its teacher 30 epochs, then fine-tunes it 6)")
    tt.add_argument("--batch-size", type=int, help="global batch size (default: 64)")
    tt.add_argument("--lr", type=float, help="SGD learning rate (default: 0.05; `gtn-nas run` "
                                             "fine-tunes at 0.01)")
    tt.add_argument("--schedule", help="step (default), cosine or constant (`gtn-nas run` "
                                       "uses cosine)")
    tt.add_argument("--milestones", type=int, nargs="+", metavar="EPOCH",
                    help="step schedule: multiply the learning rate by 0.1 after these epochs "
                         "(default: the papers' 150 180 210 of 240 scaled to --epochs, e.g. "
                         "9 11 13 for 15; each must be below --epochs)")
    tt.add_argument("--seed", type=int, help="seeds data splits, weights and order "
                                             "(default: 0)")
    tt.add_argument("--max-steps-per-epoch", type=int, help="cap the steps of an epoch")
    tt.add_argument("--val-every", type=int, metavar="K",
                    help="validate every K epochs and after the last (default 1)")
    add_device_arguments(tt)
    tt.add_argument("--sync-batchnorm", action="store_true",
                    help="DDP: batch-norm statistics over the global batch")
    tt.add_argument("--out", help="run directory (default: runs/<method>-<teacher>-<data>)")
    tt.add_argument("--resume", action="store_true", help="continue from the run's last.pt")
    tt.set_defaults(func=cmd_train_teacher)
