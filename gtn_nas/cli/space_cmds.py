"""``gtn-nas spaces`` and ``gtn-nas space show|sample``: inspect search spaces and students."""

from __future__ import annotations

import argparse
import json

import yaml

from gtn_nas.cli.common import add_space_arguments, build_space_from_args, log, out
from gtn_nas.errors import GtnNasError


def cmd_spaces(args: argparse.Namespace) -> int:
    from gtn_nas.space.plugins import SPACES, build_space
    from gtn_nas.report import text_table

    rows = []
    for name in SPACES.names():
        try:
            space = build_space(name, width_mult=0.25)  # the count does not depend on width
            rows.append([name, f"{space.size():,}", ", ".join(space.presets) or "-",
                         SPACES.origin(name)])
        except GtnNasError as exc:  # list the others; name the broken one
            rows.append([name, "-", "-", f"BROKEN: {exc}"])
    out(text_table(["space", "students", "presets", "origin"], rows))
    out("plugins from a file: --space path/to/file.py:factory")
    return 0


def defaults_from_sample_file(args: argparse.Namespace) -> None:
    """A sample file written by gtn-nas names its space and options: use them unless the
    command line says otherwise. A file naming a plugin *file* is data, and data never runs
    code: it is refused unless ``--space`` names that plugin (see
    :func:`gtn_nas.space.students.space_spec_of_file`)."""
    from gtn_nas.config import read_yaml
    from gtn_nas.space.students import space_spec_of_file

    data = read_yaml(args.sample, "sample file")
    if not isinstance(data, dict) or "sample" not in data:
        return
    if args.space is None:
        args.space = space_spec_of_file(data, args.sample, trusted=None)
    options = data.get("options") if isinstance(data.get("options"), dict) else {}
    for key in ("num_classes", "in_channels", "input_size", "width_mult"):
        if getattr(args, key) is None and key in options:
            setattr(args, key, options[key])


def cmd_space_show(args: argparse.Namespace) -> int:
    from gtn_nas.space.costs import count_flops, count_params, layer_costs
    from gtn_nas.report import text_table
    from gtn_nas.space.costs import LAYER_HEADERS, layer_table_json, layer_table_rows
    from gtn_nas.space.students import load_sample_file

    if args.sample is not None:
        defaults_from_sample_file(args)
    space = build_space_from_args(args)
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
        out(json.dumps({"space": space.spec, "options": space.options, "source": source,
                        "sample": sample, "params": params, "flops": flops,
                        "flops_convention": "fvcore (one multiply-add = one FLOP)",
                        "input": list(example.shape), "layers": layer_table_json(costs)},
                       indent=2, default=list))
        return 0
    out(f"{space.spec}: {source}  (input {tuple(example.shape[1:])}, "
        f"{space.num_classes} classes)")
    out(text_table(LAYER_HEADERS, layer_table_rows(costs)))
    out(f"total: {params:,} parameters, {flops / 1e6:.2f} MFLOPs "
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
        out(json.dumps(summary, indent=2, default=list))
        return 0
    out(f"{space.spec}: {summary['students']:,} distinct students  options: {space.options}")
    out(text_table(["label", "choices"],
                   [[label, ", ".join(map(str, values))] for label, values in choices.items()]))
    out("blocks for grafting: " + " | ".join(" + ".join(g) for g in space.block_units))
    out("presets: " + (", ".join(space.presets) or "none"))
    return 0


def cmd_space_sample(args: argparse.Namespace) -> int:
    from gtn_nas.space.students import save_sample_file

    space = build_space_from_args(args)
    sample = space.sample(args.seed)
    if args.out:
        path = save_sample_file(args.out, sample, space, seed=args.seed)
        log.info("wrote %s", path)
        out(f"wrote {path}")
    else:
        out(yaml.safe_dump({"space": space.spec, "seed": args.seed, "sample": sample},
                           sort_keys=False))
    return 0


def register(commands) -> None:
    spaces = commands.add_parser("spaces", help="list built-in and plugin search spaces")
    spaces.set_defaults(func=cmd_spaces)

    space = commands.add_parser("space", help="inspect a search space")
    space_commands = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
    space.set_defaults(func=lambda a: (space.print_help(), 2)[1])

    show = space_commands.add_parser("show", help="the space, or one student's layer table")
    add_space_arguments(show)
    which = show.add_mutually_exclusive_group()
    which.add_argument("--preset", help="a named preset (e.g. s_nas_m)")
    which.add_argument("--sample", help="a sample file (YAML or JSON)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_space_show)

    sample = space_commands.add_parser("sample", help="draw a random student (seeded)")
    add_space_arguments(sample)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", help="write the sample to this YAML file")
    sample.set_defaults(func=cmd_space_sample)
