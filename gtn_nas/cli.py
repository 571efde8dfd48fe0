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
    group.add_argument("--space", default="resnet_supernet",
                       help="registered name (see `gtn-nas spaces`) or path/to/file.py:factory "
                            "(default: %(default)s)")
    group.add_argument("--width-mult", type=float, help="channel width multiplier")
    group.add_argument("--num-classes", type=int, help="classifier outputs")
    group.add_argument("--input-size", type=int, help="input resolution (square)")
    group.add_argument("--in-channels", type=int, help="input image channels")


def _build_space(args: argparse.Namespace):
    from gtn_nas.plugins import build_space

    return build_space(args.space, **_space_options(args))


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


# ---------------------------------------------------------------------------- commands
def cmd_spaces(args: argparse.Namespace) -> int:
    from gtn_nas.plugins import SPACES, build_space
    from gtn_nas.report import text_table

    rows = []
    for name in SPACES.names():
        try:
            space = build_space(name)
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
    from gtn_nas.pipeline import run_demo
    from gtn_nas.report import LAYER_HEADERS, layer_table_rows, text_table

    result = run_demo(out_dir=args.out, seed=args.seed, data_root=args.data_root,
                      dataset=args.data, space=args.space, width_mult=args.width_mult)
    _out(f"search space {result.space_spec}: {result.space_size:,} distinct students")
    _out(f"sampled student (seed {args.seed}): {result.sample_summary}")
    _out(text_table(LAYER_HEADERS, layer_table_rows(result.layer_costs)))
    _out(f"total: {result.params:,} parameters, {result.flops / 1e6:.3f} MFLOPs at input "
         f"{result.input_shape}")
    _out(f"{result.dataset}: {result.num_train} train / {result.num_val} val / "
         f"{result.num_test} test images; forward of a test batch -> logits "
         f"{result.logits_shape}")
    _out(f"ONNX export {result.onnx_path}: max |ORT - PyTorch| = {result.parity:.2e}")
    _out(f"student saved to {result.student_path} (reload: gtn_nas.students.load_student)")
    return 0


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

    demo = commands.add_parser("demo", help="the main job on the embedded default data")
    demo.add_argument("--data", default="digits", help="dataset (default: %(default)s)")
    demo.add_argument("--data-root", help="dataset folder, where the dataset needs one")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="runs/demo", help="run directory (default: %(default)s)")
    demo.add_argument("--space", default="resnet_supernet",
                      help="search space name or path/to/file.py:factory (default: %(default)s)")
    demo.add_argument("--width-mult", type=float, default=0.25,
                      help="channel width multiplier (default: %(default)s)")
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
