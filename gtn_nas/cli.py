"""The ``gtn-nas`` command line: parse arguments, call the library, print, choose the exit code.

Exit codes: 0 success, 2 bad input or an infeasible request (one line on stderr, ``--debug``
shows the traceback), 1 an unexpected failure.

Example:
    $ gtn-nas space show --preset s_nas_m
    $ gtn-nas space sample --seed 3 --out student.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence

import yaml

from gtn_nas import __version__
from gtn_nas.errors import GtnNasError

_log = logging.getLogger("gtn_nas")


def _space_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {"num_classes": args.num_classes, "in_channels": args.in_channels,
               "input_size": args.input_size, "width_mult": args.width_mult}
    return {k: v for k, v in options.items() if v is not None}


def _add_space_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("search space")
    group.add_argument("--space",
                       help="registered name (see `gtn-nas spaces`) or path/to/file.py:factory "
                            "(default: resnet_supernet, or the one a --sample file names)")
    group.add_argument("--width-mult", type=float, help="channel width multiplier")
    group.add_argument("--num-classes", type=int, help="classifier outputs")
    group.add_argument("--input-size", type=int, help="input resolution (square)")
    group.add_argument("--in-channels", type=int, help="input image channels")


def _build_space(args: argparse.Namespace):
    from gtn_nas.plugins import DEFAULT_SPACE, build_space

    return build_space(args.space or DEFAULT_SPACE, **_space_options(args))


def _defaults_from_sample_file(args: argparse.Namespace) -> None:
    """A sample file written by gtn-nas names its space and options: use them unless the
    command line says otherwise."""
    from gtn_nas.config import read_yaml

    data = read_yaml(args.sample, "sample file")
    if not isinstance(data, dict) or "sample" not in data:
        return
    if args.space is None and isinstance(data.get("space"), str):
        args.space = data["space"]
    options = data.get("options") if isinstance(data.get("options"), dict) else {}
    for key in ("num_classes", "in_channels", "input_size", "width_mult"):
        if getattr(args, key) is None and key in options:
            setattr(args, key, options[key])


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


# ---------------------------------------------------------------------------- commands
def cmd_spaces(args: argparse.Namespace) -> int:
    from gtn_nas.plugins import SPACES, build_space
    from gtn_nas.report import text_table

    rows = []
    for name in SPACES.names():
        try:
            space = build_space(name, width_mult=0.25)  # the count does not depend on width
            rows.append([name, f"{space.size():,}", ", ".join(space.presets) or "-",
                         SPACES.origin(name)])
        except GtnNasError as exc:  # list the others; name the broken one
            rows.append([name, "-", "-", f"BROKEN: {exc}"])
    _out(text_table(["space", "students", "presets", "origin"], rows))
    _out("plugins from a file: --space path/to/file.py:factory")
    return 0


def cmd_space_show(args: argparse.Namespace) -> int:
    from gtn_nas.costs import count_flops, count_params, layer_costs
    from gtn_nas.report import LAYER_HEADERS, layer_table_json, layer_table_rows, text_table
    from gtn_nas.students import load_sample_file

    if args.sample is not None:
        _defaults_from_sample_file(args)
    space = _build_space(args)
    if args.preset is None and args.sample is None:
        return _show_space_summary(space, args.json)
    if args.preset is not None:
        sample, source = space.preset(args.preset), f"preset {args.preset}"
    else:
        sample, source = load_sample_file(args.sample, space), f"sample file {args.sample}"
    student = space.freeze(sample, seed=0)
    example = space.example_input()
    costs = layer_costs(student, example)
    params, flops = count_params(student), count_flops(student, example)
    if args.json:
        _out(json.dumps({"space": space.spec, "options": space.options, "source": source,
                         "sample": sample, "params": params, "flops": flops,
                         "flops_convention": "fvcore (one multiply-add = one FLOP)",
                         "input": list(example.shape), "layers": layer_table_json(costs)},
                        indent=2, default=list))
        return 0
    _out(f"{space.spec}: {source}  (input {tuple(example.shape[1:])}, "
         f"{space.num_classes} classes)")
    _out(text_table(LAYER_HEADERS, layer_table_rows(costs)))
    _out(f"total: {params:,} parameters, {flops / 1e6:.2f} MFLOPs "
         f"(fvcore: one multiply-add = one FLOP)")
    return 0


def _show_space_summary(space, as_json: bool) -> int:
    from gtn_nas.report import text_table

    choices = space.choices()
    summary = {"space": space.spec, "options": space.options, "students": space.size(),
               "choices": {k: list(v) for k, v in choices.items()},
               "presets": list(space.presets),
               "blocks": [list(group) for group in space.block_units]}
    if as_json:
        _out(json.dumps(summary, indent=2, default=list))
        return 0
    _out(f"{space.spec}: {summary['students']:,} distinct students  options: {space.options}")
    _out(text_table(["label", "choices"],
                    [[label, ", ".join(map(str, values))] for label, values in choices.items()]))
    _out("blocks for grafting: " + " | ".join(" + ".join(g) for g in space.block_units))
    _out("presets: " + (", ".join(space.presets) or "none"))
    return 0


def cmd_space_sample(args: argparse.Namespace) -> int:
    from gtn_nas.students import save_sample_file

    space = _build_space(args)
    sample = space.sample(args.seed)
    if args.out:
        path = save_sample_file(args.out, sample, space, seed=args.seed)
        _log.info("wrote %s", path)
        _out(f"wrote {path}")
    else:
        _out(yaml.safe_dump({"space": space.spec, "seed": args.seed, "sample": sample},
                            sort_keys=False))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from gtn_nas.pipeline import run_demo

    out = args.out or time.strftime("runs/demo-%Y%m%d-%H%M%S")
    result = run_demo(out_dir=out, seed=args.seed, dataset=args.data, data_root=args.data_root,
                      epochs=args.epochs, budget_evals=args.budget_evals, download=args.download,
                      on_stage=_out)
    last = result.teacher_history[-1]
    accs = "  ".join(f"{k[4:]}={v:.3f}" for k, v in last.items()
                     if k.startswith("val/") and k.endswith("acc"))
    _out(f"teacher after {last['epoch']} epochs: {accs}  -> {result.files['teacher']}")
    val = result.table_validation
    _out(f"latency table: {result.table_entries} steps; validation on {val.get('students', 0)} "
         f"held-out students: MAPE {val.get('mape', float('nan')) * 100:.1f}%, within +-10% "
         f"{val.get('within_10pct', float('nan')) * 100:.0f}%  -> {result.files['table']}")
    for tier, pick in result.picks.items():
        measured = f", measured {pick.measured['median_ms']:.3f} ms" if pick.measured else ""
        _out(f"{tier}: {pick.params:,} params, {pick.mflops:.2f} MFLOPs, table "
             f"{pick.latency_ms:.3f} ms{measured}, branch accuracy {pick.score:.3f}; ONNX "
             f"{result.files['onnx'][tier]} (max |ORT - PyTorch| {result.parity[tier]:.1e})")
    _out(f"summary: {result.files['summary']}")
    return 0


def cmd_train_teacher(args: argparse.Namespace) -> int:
    from gtn_nas.config import load_config, to_plain
    from gtn_nas.train_teacher import TeacherRunConfig, train_teacher

    train = {k: getattr(args, k) for k in (
        "epochs", "batch_size", "lr", "schedule", "seed", "accelerator", "devices", "strategy",
        "precision", "max_steps_per_epoch", "num_workers")}
    if args.sync_batchnorm:
        train["sync_batchnorm"] = True
    train["milestones"] = args.milestones
    train = {k: v for k, v in train.items() if v is not None}
    run = {k: getattr(args, k) for k in (
        "method", "teacher", "data", "data_root", "image_size", "limit", "space", "width_mult",
        "student", "sampler", "alpha", "warmup_epochs", "teacher_weights",
        "cost_target_mflops")}
    if args.pretrained:
        run["pretrained"] = True
    if args.download:
        run["download"] = True
    if args.teacher_option:
        run["teacher_options"] = _key_values(args.teacher_option, "--teacher-option")
    if args.data_option:
        run["data_options"] = _key_values(args.data_option, "--data-option")
    config = load_config(TeacherRunConfig, args.config, run)
    if train:
        config.train = load_config(type(config.train), None, {**to_plain(config.train), **train})
    out = args.out or f"runs/{config.method}-{config.teacher}-{config.data}"

    def report(record: dict) -> None:
        accs = "  ".join(f"{k[4:]}={v:.3f}" for k, v in record.items()
                         if k.startswith("val/") and k.endswith("acc"))
        _out(f"epoch {record['epoch']}: loss={record.get('train/loss', float('nan')):.4f}  "
             f"{accs}  ({record['seconds']:.1f} s)")

    result = train_teacher(config, out, resume=args.resume, on_epoch_end=report)
    if result.teacher_path is not None:
        _out(f"teacher: {result.teacher_path}")
        _out(f"run directory: {result.run_dir} (config.yaml, metrics.jsonl, metrics.csv"
             f"{', curves.png' if result.curves_path else ''}"
             f"{', branches.pt' if 'branches' in result.extra_paths else ''}, last.pt)")
    return 0


def _progress_bar(description: str):
    """A tqdm bar driven by ``(done, total)`` callbacks; silent when stderr is not a terminal."""
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    def update(*args) -> None:
        phase, done, total = args if len(args) == 3 else (description, *args)
        bar = bars.get(phase)
        if bar is None:
            bar = bars[phase] = tqdm(total=total, desc=phase, leave=False, disable=None)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _search_space_for_profile(args: argparse.Namespace, profile):
    from gtn_nas.plugins import DEFAULT_SPACE, build_space

    channels, size, _ = profile.input.shape
    options = {"in_channels": channels, "input_size": size, **_space_options(args)}
    return build_space(args.space or DEFAULT_SPACE, **options)


def cmd_profile(args: argparse.Namespace) -> int:
    from gtn_nas.latency import build_latency_table
    from gtn_nas.profiles import load_profile

    profile = load_profile(args.hw)
    space = _search_space_for_profile(args, profile)
    out = args.out or profile.latency_table_path()
    if out is None:
        from gtn_nas.errors import ConfigError
        raise ConfigError(f"profile {profile.name} names no latency_table file; pass --out")
    if not profile.device.runs_here:
        _log.warning("building a table for %s: run this on that device itself", profile.name)
    table = build_latency_table(space, profile, seed=args.seed,
                                overhead_students=args.overhead_students,
                                validation_students=args.validation_students,
                                progress=_progress_bar("profile"))
    path = table.save(out)
    _out(f"latency table for {profile.name} / {space.spec} {space.options}: "
         f"{len(table.entries)} measured steps, overhead {table.overhead_ms:+.4f} ms -> {path}")
    val = table.validation
    if val:
        _out(f"validation on {val['students']} held-out random students: MAPE "
             f"{val['mape'] * 100:.1f}%, within +-10%: {val['within_10pct'] * 100:.0f}%")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from gtn_nas.profiles import load_profile
    from gtn_nas.scoring import load_branch_scorer
    from gtn_nas.report import save_search
    from gtn_nas.search import run_search

    profile = load_profile(args.hw)
    if args.teacher:
        space, scorer = load_branch_scorer(args.teacher, args.space)
        scored_by = f"GTN branch-1 validation accuracy ({args.teacher})"
    else:
        space, scorer, scored_by = _search_space_for_profile(args, profile), None, \
            "capacity proxy log10(params) + log10(FLOPs)"
    wanted = tuple(profile.input.shape)
    actual = (space.in_channels, space.input_size, space.input_size)
    if actual != wanted:
        _log.warning("profile %s declares input %s; the teacher's space takes %s: its budgets "
                     "may not fit these students", profile.name, wanted, actual)
    result = run_search(space, profile, strategy=args.strategy, budget_evals=args.budget_evals,
                        seed=args.seed, scorer=scorer, scored_by=scored_by,
                        latency_table=args.latency_table,
                        progress=_progress_bar("search"))
    out = args.out or f"runs/search-{profile.name}"
    paths = save_search(result, out, space, profile)
    _out(f"{len(result.candidates)} distinct candidates ({args.strategy}, seed {args.seed}); "
         f"latency: {result.latency_source}; score: {scored_by}")
    for tier, pick in result.picks.items():
        latency = "-" if pick.latency_ms is None else \
            f"{pick.latency_ms:.3f} ms ({pick.latency_source})"
        measured = f", measured {pick.measured['median_ms']:.3f} ms" if pick.measured else ""
        _out(f"  {tier}: {pick.params:,} params, {pick.mflops:.1f} MFLOPs, {latency}{measured}, "
             f"score {pick.score:.4f} -> {paths['students'][tier]}")
    from gtn_nas.report import confidence_lines

    for line in confidence_lines(result):
        _out(f"  {line[2:]}")
    for note in result.notes:
        _out(f"  note: {note}")
    _out(f"summary: {paths['summary']}  Pareto front: {paths['pareto_csv']}, "
         f"{paths['pareto_png']}")
    return 0


def _key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["a=1", "b=none"]`` -> ``{"a": 1, "b": "none"}`` (values parsed as YAML scalars)."""
    from gtn_nas.errors import ConfigError

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag}: expected KEY=VALUE, got '{item}'")
        parsed[key] = yaml.safe_load(value)
    return parsed


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtn-nas", description="Generic Teacher Network distillation into NAS-searched "
                                    "hardware-specific students.")
    parser.add_argument("--version", action="version", version=f"gtn-nas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    spaces = commands.add_parser("spaces", help="list built-in and plugin search spaces")
    spaces.set_defaults(func=cmd_spaces)

    space = commands.add_parser("space", help="inspect a search space")
    space_commands = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
    space.set_defaults(func=lambda a: (space.print_help(), 2)[1])

    show = space_commands.add_parser("show", help="the space, or one student's layer table")
    _add_space_arguments(show)
    which = show.add_mutually_exclusive_group()
    which.add_argument("--preset", help="a named preset (e.g. s_nas_m)")
    which.add_argument("--sample", help="a sample file (YAML or JSON)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_space_show)

    sample = space_commands.add_parser("sample", help="draw a random student (seeded)")
    _add_space_arguments(sample)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", help="write the sample to this YAML file")
    sample.set_defaults(func=cmd_space_sample)

    tt = commands.add_parser("train-teacher", help="train a teacher: standard, SFTN or GTN")
    tt.add_argument("--config", help="YAML file of options (command-line flags override it)")
    tt.add_argument("--method", help="standard, sftn or gtn (default: gtn)")
    tt.add_argument("--teacher", help="teacher name (resnet32, resnet32x4, wrn40_2, "
                                      "efficientnet_b0, ...)")
    tt.add_argument("--teacher-option", action="append", metavar="KEY=VALUE",
                    help="teacher builder option (e.g. norm=none for tiny); repeatable")
    tt.add_argument("--data", help="dataset (digits, fashion-mnist, cifar100, imagefolder)")
    tt.add_argument("--data-root", help="dataset folder")
    tt.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                    help="dataset option (e.g. num_classes=5 for synthetic); repeatable")
    tt.add_argument("--download", action="store_true",
                    help="let torchvision download the dataset (needs internet)")
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
    tt.add_argument("--alpha", type=float,
                    help="weight of the branch KL term (default: 3 on cifar100, else 1)")
    tt.add_argument("--warmup-epochs", type=int,
                    help="epochs with the teacher frozen while the branches learn")
    tt.add_argument("--epochs", type=int)
    tt.add_argument("--batch-size", type=int, help="global batch size")
    tt.add_argument("--lr", type=float)
    tt.add_argument("--schedule", help="step (default), cosine or constant")
    tt.add_argument("--milestones", type=int, nargs="+", help="epochs of the x0.1 steps")
    tt.add_argument("--seed", type=int)
    tt.add_argument("--max-steps-per-epoch", type=int, help="cap the steps of an epoch")
    tt.add_argument("--num-workers", type=int, help="data-loading processes")
    tt.add_argument("--accelerator", help="cpu (default), gpu, auto")
    tt.add_argument("--devices", type=int, help="number of devices (processes)")
    tt.add_argument("--strategy", help="auto, ddp, ddp_spawn")
    tt.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed")
    tt.add_argument("--sync-batchnorm", action="store_true",
                    help="DDP: batch-norm statistics over the global batch")
    tt.add_argument("--out", help="run directory (default: runs/<method>-<teacher>-<data>)")
    tt.add_argument("--resume", action="store_true", help="continue from the run's last.pt")
    tt.set_defaults(func=cmd_train_teacher)

    prof = commands.add_parser("profile", help="build a device's latency table (run it on "
                                               "the device)")
    prof.add_argument("--hw", required=True, help="hardware profile: a name or a YAML file")
    _add_space_arguments(prof)
    prof.add_argument("--out", help="table file (default: the profile's latency_table)")
    prof.add_argument("--seed", type=int, default=0)
    prof.add_argument("--overhead-students", type=int, default=8)
    prof.add_argument("--validation-students", type=int, default=20)
    prof.set_defaults(func=cmd_profile)

    search = commands.add_parser("search", help="pick the s/m/l students for a device")
    search.add_argument("--hw", required=True, help="hardware profile: a name or a YAML file")
    _add_space_arguments(search)
    search.add_argument("--teacher", help="teacher.pt of a GTN run: score paths through it")
    search.add_argument("--strategy", default="evolution", help="evolution (default) or random")
    search.add_argument("--latency-table", help="latency table file (default: the profile's)")
    search.add_argument("--budget-evals", type=int, default=600,
                        help="candidates to evaluate in total (default: %(default)s)")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--out", help="output folder (default: runs/search-<profile>)")
    search.set_defaults(func=cmd_search)

    demo = commands.add_parser("demo", help="the main job on the embedded default data: GTN "
                                             "teacher -> latency table -> search -> ONNX")
    demo.add_argument("--data", default="digits", help="dataset (default: %(default)s)")
    demo.add_argument("--data-root", help="dataset folder, where the dataset needs one")
    demo.add_argument("--download", action="store_true",
                      help="let torchvision download the dataset (needs internet)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--epochs", type=int, default=3, help="teacher epochs (default: 3)")
    demo.add_argument("--budget-evals", type=int, default=300,
                      help="search candidates (default: %(default)s)")
    demo.add_argument("--out", help="run directory (default: runs/demo-<date>-<time>)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except GtnNasError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"gtn-nas: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("gtn-nas: interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence, see --debug
        if args.debug:
            raise
        sys.stderr.write(f"gtn-nas: unexpected error: {type(exc).__name__}: {exc} "
                         f"(rerun with --debug for the traceback)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
