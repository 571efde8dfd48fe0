"""``gtn-nas profile`` (a device's latency predictor) and ``gtn-nas search`` (s/m/l students
for one or several devices)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gtn_nas.cli.common import (add_space_arguments, log, out, prepare_output_dir, progress_bar,
                               space_for_profile, space_options)
from gtn_nas.cli.flags import add_config_flags, given
from gtn_nas.config import DataConfig
from gtn_nas.locks import folder_lock


def cmd_profile(args: argparse.Namespace) -> int:
    from gtn_nas.errors import ConfigError
    from gtn_nas.hardware.profiles import load_profile

    profile = load_profile(args.hw)
    space = space_for_profile(args, profile)
    path = args.out or profile.latency_table_path(writable=True)
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
        from gtn_nas.fileio import remove_stale_temporaries  # torch: only when it runs

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
    """The space, its scorer (``--score``, with the at-chance rule), what it is called, and the
    students' data when there is some (``--data``, or the ``--teacher`` run's)."""
    from gtn_nas.search.scoring import search_scorer, teacher_run_space_and_data

    data = None
    if args.teacher:
        space, data = teacher_run_space_and_data(args.teacher, args.space)
    elif args.data:
        from gtn_nas.space.plugins import DEFAULT_SPACE, build_space

        data = _data(args).load(seed=args.seed, augment=False)
        options = {"num_classes": data.num_classes, "in_channels": data.in_channels,
                   "input_size": data.image_size, "width_mult": 0.25, **space_options(args)}
        space = build_space(args.space or DEFAULT_SPACE, **options)
    else:
        space = space_for_profile(args, profile)
    if args.score == "branch" and not args.teacher:
        from gtn_nas.errors import ConfigError

        raise ConfigError("--score branch scores paths through a GTN teacher: give --teacher")
    scorer, notes = search_scorer(args.score, space, teacher_path=args.teacher,
                                  space_override=args.space, data=data, seed=args.seed)
    for note in notes:
        log.warning("%s", note)
    return space, scorer, scorer.description, notes, data


def _recipe(args: argparse.Namespace):
    """The students' training without a teacher that the trials run: ``--data`` (or the
    ``--teacher`` run's data) at ``--epochs`` of ``gtn-nas run``'s student recipe."""
    from gtn_nas.distill.jobs import DistillRunConfig
    from gtn_nas.engine import TrainConfig

    if args.teacher:
        from gtn_nas.config import load_config
        from gtn_nas.teacher.config import TeacherRunConfig

        data = load_config(TeacherRunConfig, Path(args.teacher).parent / "config.yaml").data
    else:
        data = _data(args)
    return DistillRunConfig(method="none", students=("search",), seeds=(args.seed,),
                            train=TrainConfig(epochs=args.epochs, schedule="cosine",
                                              progress=False), data=data)


def _data(args: argparse.Namespace) -> DataConfig:
    """The students' data of ``--data`` and the flags beside it."""
    from gtn_nas.config import from_mapping

    return from_mapping(DataConfig, given(args, args.data_flags)["data"], "search data")


def _print_picks(result, paths, prefix: str = "  ") -> None:
    from gtn_nas.search.report import confidence_lines, selection_lines

    for tier, pick in result.picks.items():
        latency = "-" if pick.latency_ms is None else \
            f"{pick.latency_ms:.3f} ms ({pick.latency_source})"
        measured = f", measured {pick.measured['median_ms']:.3f} ms" if pick.measured else ""
        budget = result.budgets[tier].get("latency_ms")
        accuracy = "" if pick.val_acc is None else f", validation {pick.val_acc * 100:.1f}%"
        out(f"{prefix}{tier}: {pick.params:,} params, {pick.mflops:.1f} MFLOPs, {latency}"
            f"{measured}{'' if budget is None else f' (budget {budget:.4g} ms)'}{accuracy}, "
            f"score {pick.score:.4f} -> {paths['students'][tier]}")
    for line in selection_lines(result) + confidence_lines(result):
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
    # and reads back the latencies it measured, so the rerun writes the same files) and its
    # temporaries are removed
    with folder_lock(path, "gtn-nas search"):
        from gtn_nas.fileio import remove_stale_temporaries  # torch: only when it runs

        for stale in remove_stale_temporaries(path):
            log.info("removed %s, left by a killed search", stale.name)
        return _search(args, profiles, path)


def _search(args: argparse.Namespace, profiles, path: str) -> int:
    from gtn_nas.errors import ConfigError
    from gtn_nas.search.devices import search_devices
    from gtn_nas.search.report import save_multi_search, save_search
    from gtn_nas.search.selection import HalvingConfig

    space, scorer, scored_by, score_notes, data = _search_space(args, profiles[0])
    select = args.select
    if select == "auto":
        select = "trained" if data is not None else "proxy"
    if select == "trained" and data is None:
        raise ConfigError("--select trained trains the candidates: give the students' data "
                          "(--data NAME, or --teacher T.pt of a run on it)")
    if select == "proxy":
        log.warning("picks are chosen by the score %s alone, a zero-training proxy; give "
                    "--data to choose them by trained accuracy", scored_by)
    tables = {profiles[0].name: args.latency_table} if args.latency_table else None
    halving = HalvingConfig(candidates=args.candidates, workers=args.workers,
                            storage=args.storage, tiers=args.tiers)
    results = search_devices(
        space, profiles, scorer=scorer, scored_by=scored_by, strategy=args.strategy,
        budget_evals=args.budget_evals, seed=args.seed, latency_mode=args.latency_mode,
        latency_tables=tables, budget_rule=args.budgets,
        budget_students=args.budget_students, select=select,
        recipe=_recipe(args) if select == "trained" else None, halving=halving,
        train_seed=args.seed, folder=path, say=out, progress=progress_bar("search"))
    for result in results.values():
        result.notes[:0] = score_notes
    if len(profiles) == 1:
        result = results[profiles[0].name]
        paths = save_search(result, path, space, _with_budgets(profiles[0], result))
        out(f"{len(result.candidates)} distinct candidates ({args.strategy}, seed {args.seed}); "
            f"latency: {result.latency_source}; proposals ranked by {scored_by}; picks by "
            f"{'trained accuracy' if select == 'trained' else 'the score (a proxy)'}")
        _print_picks(result, paths)
        out(f"summary: {paths['summary']}  Pareto front: {paths['pareto_csv']}, "
            f"{paths['pareto_png']}" + (f"  halving: {paths['halving_png']}"
                                        if paths.get("halving_png") else ""))
        return 0
    paths = save_multi_search(results, path, space,
                              [_with_budgets(p, results[p.name]) for p in profiles])
    out(f"{len(profiles)} devices ({args.strategy}, seed {args.seed}); proposals ranked by "
        f"{scored_by}; picks by "
        f"{'trained accuracy' if select == 'trained' else 'the score (a proxy)'}")
    for name, result in results.items():
        out(f"{name}: {len(result.candidates)} distinct candidates; latency: "
            f"{result.latency_source}"
            + (" (ESTIMATED)" if result.latency_source == "estimated" else "")
            + f"; budgets: {result.budget_rule}")
        _print_picks(result, paths["devices"][name], prefix="  ")
    out(f"summary across devices: {paths['summary']}")
    return 0


def _with_budgets(profile, result):
    import dataclasses

    from gtn_nas.hardware.profiles import TierBudget

    return dataclasses.replace(profile, budgets={t: TierBudget(**limits)
                                                 for t, limits in result.budgets.items()})


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
                        help="zero-training score that ranks the proposals (and, with "
                             "--select proxy, picks); auto (default): FLOPs; naswot and short "
                             "use the students' images; branch: the GTN teacher's branch "
                             "accuracy, replaced by FLOPs when at chance")
    search.add_argument("--select", default="auto", choices=("auto", "trained", "proxy"),
                        help="how each tier's student is picked: trained (each tier's "
                             "--candidates best proposals trained on the students' recipe by "
                             "successive halving, the most accurate on validation picked), "
                             "proxy (the best score: fast, but a proxy); auto (default): "
                             "trained when the students' data is known (--data or --teacher)")
    data_flags = add_config_flags(search, DataConfig(), prefix="data", helps={
        "data.name": "the students' dataset: their images feed naswot and short, and --select "
                     "trained trains on it",
        "data.limit": "training images the students learn from (default: all)"})
    search.add_argument("--epochs", type=int, default=10,
                        help="epochs of the students' recipe the trials train (default: "
                             "%(default)s, gtn-nas run's; gtn-nas distill's own default is "
                             "the papers' 240)")
    search.add_argument("--candidates", type=int, default=9,
                        help="proposals per tier entering successive halving (default: "
                             "%(default)s)")
    search.add_argument("--workers", type=int, default=1,
                        help="local processes training trials (default: %(default)s: "
                             "deterministic; more run asynchronous halving)")
    search.add_argument("--storage",
                        help="Optuna storage URL of the trials (default: sqlite file in "
                             "--out); a database several machines reach lets each run "
                             "workers on one search")
    search.add_argument("--tiers", choices=("distinct", "best"), default="distinct",
                        help="with --select trained: distinct (default): each tier's pick "
                             "costs more than the tier below's; best: each tier takes the "
                             "most accurate student within its budget, and tiers coincide "
                             "where a larger budget buys no accuracy")
    search.add_argument("--strategy", default="evolution", help="evolution (default) or random")
    search.add_argument("--budgets", default="auto", choices=("auto", "profile", "latency"),
                        help="auto (default): the profile's budgets where its input is the "
                             "students', else latency percentiles 25/50/90 of random students "
                             "on each device; profile or latency: always that")
    search.add_argument("--budget-students", type=int, default=100,
                        help="random students timed for latency budgets (default: %(default)s)")
    search.add_argument("--latency-table", help="latency table file (default: the profile's)")
    search.add_argument("--latency-mode", default="auto",
                        choices=("auto", "table", "measure", "estimate"),
                        help="auto (default): a matching table, else measure here when the "
                             "profile runs here, else estimate")
    search.add_argument("--budget-evals", type=int, default=600,
                        help="candidates the evolution evaluates per device (default: "
                             "%(default)s; gtn-nas run's: 200)")
    search.add_argument("--seed", type=int, default=0,
                        help="seeds the evolution, the random students and the trials' "
                             "training (default: %(default)s)")
    search.add_argument("--out", help="output folder (default: runs/search-<profiles>)")
    search.set_defaults(func=cmd_search, data_flags=data_flags)
