"""``gtn-nas profile`` (a device's latency predictor) and ``gtn-nas search`` (s/m/l students
for one or several devices)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gtn_nas.fileio import remove_stale_temporaries
from gtn_nas.locks import folder_lock
from gtn_nas.cli.common import (add_space_arguments, log, out, prepare_output_dir, progress_bar,
                               space_for_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from gtn_nas.errors import ConfigError
    from gtn_nas.hardware.profiles import load_profile

    profile = load_profile(args.hw)
    space = space_for_profile(args, profile)
    path = args.out or profile.latency_table_path()
    if path is None:
        raise ConfigError(f"profile {profile.name} names no latency_table file; pass --out")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; --out names the table file to write")
    if not profile.device.runs_here:
        log.warning("building a table for %s: run this on that device itself", profile.name)
    # one writer per table (a lock file beside it); a killed build's temporaries removed; a
    # killed build starts over (its measurements are timings, not worth resuming) and never
    # leaves a table: the file is written once, atomically, at the end
    prepare_output_dir(str(path.parent))
    with folder_lock(path.parent, "gtn-nas profile", name=f".{path.name}.lock", target=path):
        for stale in remove_stale_temporaries(path.parent, name=path.name):
            log.info("removed %s, left by a killed build", stale.name)
        return _build_table(args, profile, space, path)


def _build_table(args: argparse.Namespace, profile, space, path: Path) -> int:
    from gtn_nas.hardware.latency_build import build_latency_table, describe_metrics, plot_validation

    table = build_latency_table(space, profile, seed=args.seed,
                                fit_students=args.fit_students,
                                adaptive_rounds=args.adaptive_rounds,
                                adaptive_students=args.adaptive_students,
                                validation_students=args.validation_students,
                                noise_rounds=args.noise_rounds,
                                progress=progress_bar("profile"))
    plot = plot_validation(table, path.with_suffix(".png"))
    path = table.save(path)  # last: a table on disk is a finished build
    machine = table.machine
    out(f"latency table for {profile.name} / {space.spec} {space.options}: "
        f"{len(table.steps)} unit steps, {len(table.kernels)} fused kernels, fitted on "
        f"{table.fit['students']} measured students ({table.fit['adaptive_rounds']} adaptive "
        f"rounds) in {table.build_seconds:.0f} s -> {path}")
    out(f"  machine: {machine.get('cpu_model')}, {machine.get('cores')} cores, "
        f"{machine.get('threads')} threads, ONNX Runtime {machine.get('onnxruntime')}, "
        f"{' '.join(machine.get('isa', [])) or 'no ISA flags read'}")
    noise = table.noise
    out(f"  protocol: {table.protocol['warmup']} warm-up + {table.protocol['repeats']} timed "
        f"runs, {table.protocol['statistic']}; noise floor: {noise['spread'] * 100:.1f}% "
        f"(spread of {len(noise['rounds_ms'])} measurements of one {noise['median_ms']:.3f} ms "
        f"model)")
    val = table.validation
    if val.get("students"):
        out(f"  held-out validation: {describe_metrics(val)}")
        for part, label in (("under_1ms", "under 1 ms"), ("over_1ms", "1 ms and over")):
            if val.get(part, {}).get("students"):
                out(f"    {label}: {describe_metrics(val[part])}")
        if val.get("retest", {}).get("students"):
            out(f"  the device's own repeat (the same students measured again): "
                f"{describe_metrics(val['retest'])}")
            out(f"  predicted vs the mean of both measurements: "
                f"{describe_metrics(val['vs_both_passes'])}")
    out(f"  predicted vs measured: {plot}")
    return 0


def _search_space(args: argparse.Namespace, profile):
    """The space, its scorer (``--score``, with the at-chance rule) and what it is called."""
    from gtn_nas.search.scoring import search_scorer, teacher_run_space_and_data

    data = None
    if args.teacher:
        space, data = teacher_run_space_and_data(args.teacher, args.space)
    else:
        space = space_for_profile(args, profile)
        if args.data:
            from gtn_nas.data import load_dataset

            data = load_dataset(args.data, root=args.data_root, image_size=space.input_size,
                                augment=False, seed=args.seed)
    if args.score == "branch" and not args.teacher:
        from gtn_nas.errors import ConfigError

        raise ConfigError("--score branch scores paths through a GTN teacher: give --teacher")
    scorer, notes = search_scorer(args.score, space, teacher_path=args.teacher,
                                  space_override=args.space, data=data, seed=args.seed)
    for note in notes:
        log.warning("%s", note)
    return space, scorer, scorer.description, notes


def _print_picks(result, paths, prefix: str = "  ") -> None:
    from gtn_nas.search.report import confidence_lines

    for tier, pick in result.picks.items():
        latency = "-" if pick.latency_ms is None else \
            f"{pick.latency_ms:.3f} ms ({pick.latency_source})"
        measured = f", measured {pick.measured['median_ms']:.3f} ms" if pick.measured else ""
        out(f"{prefix}{tier}: {pick.params:,} params, {pick.mflops:.1f} MFLOPs, {latency}"
            f"{measured}, score {pick.score:.4f} -> {paths['students'][tier]}")
    for line in confidence_lines(result):
        out(f"{prefix}{line[2:]}")
    for note in result.notes:
        out(f"{prefix}note: {note}")


def cmd_search(args: argparse.Namespace) -> int:
    from gtn_nas.errors import ConfigError
    from gtn_nas.hardware.profiles import load_profile

    profiles = [load_profile(hw) for hw in args.hw]
    if args.latency_table and len(profiles) > 1:
        raise ConfigError("--latency-table names one device's table; with several --hw, set "
                          "each profile's latency_table instead")
    names = "+".join(p.name for p in profiles)
    path = args.out or f"runs/search-{names}"
    prepare_output_dir(path)  # a bad --out fails now, not after the search
    # one writer per folder; a search killed before its summary starts over (it is seeded,
    # so the rerun writes the same files) and its temporaries are removed
    with folder_lock(path, "gtn-nas search"):
        for stale in remove_stale_temporaries(path):
            log.info("removed %s, left by a killed search", stale.name)
        return _search(args, profiles, path)


def _search(args: argparse.Namespace, profiles, path: str) -> int:
    from gtn_nas.search.strategy import run_multi_search
    from gtn_nas.search.report import save_multi_search, save_search

    space, scorer, scored_by, score_notes = _search_space(args, profiles[0])
    actual = (space.in_channels, space.input_size, space.input_size)
    for profile in profiles:
        if tuple(profile.input.shape) != actual:
            log.warning("profile %s declares input %s; the space takes %s: its budgets may "
                        "not fit these students", profile.name, tuple(profile.input.shape),
                        actual)
    tables = {profiles[0].name: args.latency_table} if args.latency_table else None
    results = run_multi_search(space, profiles, latency_tables=tables,
                               strategy=args.strategy, budget_evals=args.budget_evals,
                               seed=args.seed, scorer=scorer, scored_by=scored_by,
                               latency_mode=args.latency_mode,
                               progress=progress_bar("search"))
    for result in results.values():
        result.notes[:0] = score_notes
    if len(profiles) == 1:
        result = results[profiles[0].name]
        paths = save_search(result, path, space, profiles[0])
        out(f"{len(result.candidates)} distinct candidates ({args.strategy}, seed {args.seed}); "
            f"latency: {result.latency_source}; score: {scored_by}")
        _print_picks(result, paths)
        out(f"summary: {paths['summary']}  Pareto front: {paths['pareto_csv']}, "
            f"{paths['pareto_png']}")
        return 0
    paths = save_multi_search(results, path, space, profiles)
    out(f"{len(profiles)} devices ({args.strategy}, seed {args.seed}); score: {scored_by}")
    for name, result in results.items():
        out(f"{name}: {len(result.candidates)} distinct candidates; latency: "
            f"{result.latency_source}"
            + (" (ESTIMATED)" if result.latency_source == "estimated" else ""))
        _print_picks(result, paths["devices"][name], prefix="  ")
    out(f"summary across devices: {paths['summary']}")
    return 0


def register(commands) -> None:
    prof = commands.add_parser("profile", help="build a device's latency predictor (run it "
                                               "on the device)")
    prof.add_argument("--hw", required=True, help="hardware profile: a name or a YAML file")
    add_space_arguments(prof)
    prof.add_argument("--out", help="table file (default: the profile's latency_table); the "
                                    "predicted-vs-measured plot goes beside it (.png)")
    prof.add_argument("--seed", type=int, default=0)
    prof.add_argument("--fit-students", type=int, default=48,
                      help="measured students before adaptive sampling (default: "
                           "%(default)s, at least enough to cover every unit step)")
    prof.add_argument("--adaptive-rounds", type=int, default=2,
                      help="rounds of adaptive sampling (default: %(default)s)")
    prof.add_argument("--adaptive-students", type=int, default=12,
                      help="students added per adaptive round (default: %(default)s)")
    prof.add_argument("--validation-students", type=int, default=30,
                      help="held-out students for the validation (default: %(default)s)")
    prof.add_argument("--noise-rounds", type=int, default=8,
                      help="repeated measurements of one model for the noise floor "
                           "(default: %(default)s)")
    prof.set_defaults(func=cmd_profile)

    search = commands.add_parser("search", help="pick the s/m/l students for one or several "
                                                "devices")
    search.add_argument("--hw", required=True, action="append",
                        help="hardware profile: a name or a YAML file; repeat for several "
                             "devices (each gets <out>/<profile name>/)")
    add_space_arguments(search)
    search.add_argument("--teacher", help="teacher.pt of a GTN run: its space and data (and "
                                          "its branches for --score branch)")
    search.add_argument("--score", default="auto",
                        choices=("auto", "branch", "params", "flops", "synflow", "naswot",
                                 "short"),
                        help="how candidates are ranked; auto (default): params, the best "
                             "ranking score of the evidence study; naswot and short (validation "
                             "accuracy after 16 SGD steps) use the teacher run's images, or "
                             "--data; branch: the GTN teacher's branch accuracy, replaced by "
                             "params when at chance")
    search.add_argument("--data", help="dataset whose images feed naswot and short "
                                       "(without --teacher)")
    search.add_argument("--data-root", help="dataset folder")
    search.add_argument("--strategy", default="evolution", help="evolution (default) or random")
    search.add_argument("--latency-table", help="latency table file (default: the profile's)")
    search.add_argument("--latency-mode", default="auto",
                        choices=("auto", "table", "measure", "estimate"),
                        help="auto (default): a matching table, else measure here when the "
                             "profile runs here, else estimate")
    search.add_argument("--budget-evals", type=int, default=600,
                        help="candidates to evaluate in total (default: %(default)s)")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--out", help="output folder (default: runs/search-<profiles>)")
    search.set_defaults(func=cmd_search)
