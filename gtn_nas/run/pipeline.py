"""``gtn-nas run``: the whole job, stage by stage, each stage handing the next files in the run
directory.

1. ``teacher/``: the teacher (:func:`gtn_nas.teacher.train.train_teacher`): by default a
   resnet32 pre-trained the standard way until it is clearly better than its students will be
   alone (``teacher/pretrain/``), then fine-tuned as a GTN teacher, its branches warming up
   with the teacher frozen before the joint training (as the GTN paper fine-tunes pretrained
   teachers);
2. ``search/``: s/m/l students for this machine (``host_cpu``) and every other profile given,
   ranked by ``search.score`` (default ``auto``: FLOPs, the evidence study's choice among the
   scores that ranked distilled students best, docs/BENCHMARKS.md; ``branch`` scores paths
   through the GTN teacher and falls back to a proxy when its scores sit at chance), latency
   measured here or from tables;
3. ``distill/none/``, ``distill/ls/`` then ``distill/<method>/``: the picks trained without a
   teacher (plain CE, label smoothing: the baselines), then distilled from the teacher, each
   exported to ONNX (:mod:`gtn_nas.distill.jobs`); a teacher whose test top-1 is not above a
   student's alone is named in one line (the guard);
4. ``deploy/host_cpu/``: per tier the student to deploy, chosen on validation only among the
   distilled and the teacherless students (never worse than training alone), as
   ``<tier>.onnx`` + ``<tier>.pt`` and ``deploy.json``; dominated tiers flagged
   (:mod:`gtn_nas.distill.deploy`);
5. ``report.md``: teacher curves and its test top-1 beside the students', Pareto plots,
   distillation curves, the students' table with the gains over both baselines, what is
   deployed and why, and what ran (:mod:`gtn_nas.run.report`).

``run.json`` records the resolved configuration and which stages finished; ``resume=True``
continues a killed run from the first unfinished stage (a half-trained teacher or student
resumes from its last checkpoint).

Tier budgets: a profile's budgets are for its own input shape. When the data's images differ
from it (digits are 8x8, the profiles 32x32) the budgets are ``auto``: MFLOPs at the 25th,
50th and 90th percentiles of random students of the run's space, with each tier's pick costlier
than the one below, so s, m and l are three distinct students of increasing cost.

Example:
    >>> result = run_pipeline(RunConfig(), "runs/demo")       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gtn_nas.config import from_mapping, to_plain
from gtn_nas.engine import config_digest
from gtn_nas.errors import ConfigError
from gtn_nas.fileio import atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from gtn_nas.locks import LOCK_NAME, folder_lock
from gtn_nas.run.config import RunConfig

_log = logging.getLogger(__name__)

RUN_FORMAT = "gtn-nas-run/1"


@dataclass
class RunResult:
    """What :func:`run_pipeline` produced."""

    run_dir: Path
    report: Path
    files: dict[str, Any]
    summary_rows: list[dict[str, Any]]


# ----------------------------------------------------------------------------- state
class RunState:
    """``run.json``: the resolved configuration and the stages that finished."""

    def __init__(self, run_dir: Path, config: RunConfig, resume: bool) -> None:
        self.path = run_dir / "run.json"
        self.config = to_plain(config)
        self.digest = config_digest(self.config)
        self.data: dict[str, Any] = {"format": RUN_FORMAT, "digest": self.digest,
                                     "config": self.config, "stages": {}}
        if self.path.exists():
            try:
                previous = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{self.path}: unreadable run record ({exc}); choose another "
                                  f"--out") from exc
            if not resume:
                raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue "
                                  f"it or choose another --out")
            if previous.get("digest") != self.digest:
                raise ConfigError(f"{run_dir} was started with other settings; resume with the "
                                  f"same options or choose another --out")
            self.data = previous
        elif run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"{run_dir} is a file, not a run directory; choose another --out")
        elif run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir()) \
                and not resume:
            raise ConfigError(f"{run_dir} is not empty; choose another --out")

    def done(self, stage: str) -> dict[str, Any] | None:
        return self.data["stages"].get(stage)

    def finish(self, stage: str, record: dict[str, Any]) -> None:
        self.data["stages"][stage] = record
        atomic_write_text(self.path, json.dumps(self.data, indent=1, default=str) + "\n")

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1, default=str) + "\n")


# ----------------------------------------------------------------------------- stages
def teacher_stage(config: RunConfig, run_dir: Path, resume: bool,
                  on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Trains the teacher into ``run_dir/teacher`` (resuming a killed one)."""
    from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

    stage = config.teacher
    known = {f.name for f in dataclasses.fields(TeacherRunConfig)}
    for key in stage.options:
        if key not in known or key in ("data", "train", "warmup_epochs", "teacher_weights"):
            raise ConfigError(f"teacher.options: unknown teacher-training option '{key}'")
    common = {"teacher": stage.teacher, "teacher_options": stage.teacher_options,
              "data": config.data, "data_root": config.data_root,
              "data_options": config.data_options, "download": config.download,
              "image_size": config.image_size, "limit": config.limit, "space": stage.space,
              "width_mult": stage.width_mult}
    folder = run_dir / "teacher"
    record: dict[str, Any] = {"method": stage.method, "sampler": stage.sampler}
    weights = None
    if stage.pretrain and stage.method != "standard":
        pretrain = from_mapping(TeacherRunConfig, {
            **common, "method": "standard",
            "train": dataclasses.replace(stage.pretrain_train, seed=config.seed)}, "teacher")
        pre = train_teacher(pretrain, folder / "pretrain",
                            resume=resume,
                            on_epoch_end=on_epoch_end)
        weights = str(pre.teacher_path)
        final = pre.fit.history[-1] if pre.fit.history else {}
        record["pretrain"] = {
            "teacher": str(pre.teacher_path.relative_to(run_dir)),
            "curves": "teacher/pretrain/curves.png" if pre.curves_path else None,
            "epochs": stage.pretrain_train.epochs,
            "final": {k: v for k, v in final.items() if isinstance(v, (int, float))}}
    teacher_config = from_mapping(TeacherRunConfig, {
        **common, "method": stage.method, "sampler": stage.sampler,
        "alpha": stage.alpha if stage.alpha is not None or weights is None else 0.3,
        **stage.options, "teacher_weights": weights,
        "warmup_epochs": stage.resolved_warmup(),
        "train": dataclasses.replace(stage.train, seed=config.seed)}, "teacher")
    result = train_teacher(teacher_config, folder, resume=resume, on_epoch_end=on_epoch_end)
    final = result.fit.history[-1] if result.fit.history else {}
    record.update({"teacher": str(result.teacher_path.relative_to(run_dir)),
                   "curves": "teacher/curves.png" if result.curves_path else None,
                   "final": {k: v for k, v in final.items() if isinstance(v, (int, float))},
                   "warmup_epochs": stage.resolved_warmup()})
    return record


def auto_budgets(space, seed: int, students: int = 200) -> dict[str, Any]:
    """MFLOPs budgets at the 25th / 50th / 90th percentiles of random students of ``space``."""
    from gtn_nas.space.costs import UnitCosts
    from gtn_nas.hardware.profiles import TierBudget

    unit_costs = UnitCosts(space)
    mflops = sorted(unit_costs.flops(space.sample(seed * 1000 + i)) / 1e6 for i in range(students))
    return {tier: TierBudget(mflops=round(float(np.percentile(mflops, q)), 4))
            for tier, q in (("s", 25), ("m", 50), ("l", 90))}


def distinct_picks(result) -> list[str]:
    """Makes each tier's pick costlier (MFLOPs) than the tier below, taking the best-scored
    feasible candidate above it; returns notes on what changed."""
    notes = []
    previous = None
    for tier, pick in list(result.picks.items()):
        if previous is not None and pick.mflops <= previous.mflops:
            limits = result.budgets[tier]
            better = sorted((c for c in result.candidates
                             if c.violation(limits) == 0 and c.mflops > previous.mflops),
                            key=lambda c: (-c.score, c.mflops))
            if better:
                notes.append(f"tier {tier}: its best-scored student was no larger than tier "
                             f"below it; took the best-scored one above it instead")
                result.picks[tier] = pick = better[0]
        previous = pick
    return notes


def remeasure_measured_picks(space, profile, result) -> str:
    """Measures each pick a second time (fresh export and session) and records it, so the
    report states how far a measured latency repeats on this machine; returns a note."""
    from gtn_nas.hardware.latency import measure_module, student_input_shape

    shape = student_input_shape(space, profile)
    errors = []
    for pick in result.picks.values():
        stats = measure_module(space.freeze(pick.sample, seed=0).eval(), shape, profile)
        value = stats.value(profile.measurement.statistic)
        pick.measured = {**pick.measured, "median_ms": round(value, 5)}
        if pick.latency_ms:
            errors.append(abs(pick.latency_ms / value - 1))
    worst = max(errors) * 100 if errors else float("nan")
    return (f"latencies were measured directly on this machine (a table cannot resolve students "
            f"this small); measured again for the picks, they repeat within {worst:.0f}%")


def search_stage(config: RunConfig, run_dir: Path, teacher_path: Path) -> dict[str, Any]:
    """Scores paths (``search.score``) and picks s/m/l for every profile in ``search.hw``."""
    from gtn_nas.data import load_dataset
    from gtn_nas.space.plugins import build_space
    from gtn_nas.hardware.profiles import load_profile
    from gtn_nas.search.scoring import search_scorer
    from gtn_nas.search.strategy import run_search
    from gtn_nas.search.report import save_search

    splits = load_dataset(config.data, root=config.data_root, image_size=config.image_size,
                          seed=config.seed, limit=config.limit, augment=False,
                          download=config.download, **config.data_options)
    space = build_space(config.teacher.space, num_classes=splits.num_classes,
                        in_channels=splits.in_channels, input_size=splits.image_size,
                        width_mult=config.teacher.width_mult)
    scorer, score_notes = search_scorer(
        config.search.score, space, teacher_path=teacher_path if config.search.score == "branch"
        else None, space_override=config.teacher.space, data=splits, seed=config.seed)
    scored_by = scorer.description
    profiles = [load_profile(name) for name in config.search.hw]
    record: dict[str, Any] = {"space": space.spec, "scored_by": scored_by,
                              "score_notes": score_notes, "devices": {}}
    for profile in profiles:
        wanted = (space.in_channels, space.input_size, space.input_size)
        budgets = profile.budgets
        if config.search.budgets == "auto" and tuple(profile.input.shape) != wanted:
            budgets = auto_budgets(space, config.seed)
        profile = dataclasses.replace(profile, budgets=budgets)
        mode = config.search.latency
        if mode == "auto":  # every pick gets a latency: measured here, else table or estimate
            mode = "measure" if profile.device.runs_here else (
                "auto" if profile.latency_table_path() and profile.latency_table_path().is_file()
                else "estimate")
        result = run_search(space, profile, strategy=config.search.strategy,
                            budget_evals=config.search.budget_evals, seed=config.seed,
                            scorer=scorer, scored_by=scored_by, latency_mode=mode)
        result.notes.extend(score_notes + distinct_picks(result))
        if result.latency_source == "measured":
            result.notes.append(remeasure_measured_picks(space, profile, result))
        folder = run_dir / "search" / profile.name
        paths = save_search(result, folder, space, profile)
        record["devices"][profile.name] = {
            "folder": str(folder.relative_to(run_dir)),
            "latency_source": result.latency_source, "notes": result.notes,
            "budgets": result.budgets, "runs_here": profile.device.runs_here,
            "picks": {tier: pick.to_json() for tier, pick in result.picks.items()},
            "pareto_png": str(Path(paths["pareto_png"]).relative_to(run_dir)),
            "summary": str(Path(paths["summary"]).relative_to(run_dir))}
    return record


def distill_stage(config: RunConfig, run_dir: Path, teacher_path: Path, students_dir: Path,
                  on_job: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Trains the host's s/m/l without a teacher (the baselines, first), then distils them
    from the teacher, the guard checking the teacher against the plain baseline."""
    from gtn_nas.distill.jobs import DistillRunConfig, distill

    stage = config.distill
    methods = [*stage.baselines, stage.method]
    record: dict[str, Any] = {"methods": {}, "main": stage.method}
    for method in methods:
        teacherless = method in stage.baselines
        run = DistillRunConfig(
            teacher=None if teacherless else str(teacher_path),
            students=(str(students_dir),), method=method,
            method_options=dict(stage.baseline_options.get(method, {}) if teacherless
                                else {**stage.recipes.get(method, {}), **stage.options}),
            data=config.data, data_root=config.data_root, data_options=config.data_options,
            download=config.download, image_size=config.image_size, limit=config.limit,
            seeds=tuple(stage.seeds), train=dataclasses.replace(stage.train),
            baseline=None if teacherless or "none" not in stage.baselines
            else str(run_dir / "distill" / "none"))
        result = distill(run, run_dir / "distill" / method, on_job=on_job)
        record["methods"][method] = {"folder": f"distill/{method}", "rows": result.rows}
    return record


def deploy_stage(run_dir: Path, search: dict[str, Any], distill_record: dict[str, Any],
                 device: str = "host_cpu") -> dict[str, Any]:
    """Per tier of ``device``, the student to deploy (:func:`gtn_nas.distill.deploy.choose_deployment`,
    validation only), exported to ``deploy/<device>/<tier>.onnx`` (checked against PyTorch)
    beside its checkpoint ``<tier>.pt``; dominated tiers flagged; ``deploy.json``."""
    from gtn_nas.distill.deploy import choose_deployment, flag_dominated
    from gtn_nas.distill.jobs import collect_results
    from gtn_nas.space.export import export_student_checkpoint

    picks = search["devices"][device]["picks"]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for method, info in distill_record["methods"].items():
        for result in collect_results(run_dir / info["folder"]):
            result["run_dir"] = f"{info['folder']}/{result['run_dir']}"
            results.setdefault(result["student"], {}).setdefault(method, []).append(result)
    folder = run_dir / "deploy" / device
    folder.mkdir(parents=True, exist_ok=True)
    chosen = []
    for tier in picks:
        if tier not in results:
            continue
        choice = choose_deployment(tier, results[tier])
        pick = picks[tier]
        measured = (pick.get("measured") or {}).get("median_ms")
        choice.cost = {"params": pick.get("params"), "mflops": pick.get("mflops"),
                       "latency_ms": measured if measured is not None else pick.get("latency_ms")}
        chosen.append(choice)
    notes = flag_dominated(chosen)
    tiers = {}
    for choice in chosen:
        source = run_dir / choice.run_dir / "student_best.pt"
        checkpoint = folder / f"{choice.student}.pt"
        atomic_write_bytes(checkpoint, source.read_bytes())  # a full disk keeps no half copy
        report = export_student_checkpoint(checkpoint, folder / f"{choice.student}.onnx")
        tiers[choice.student] = {**choice.to_json(), "checkpoint": str(
            checkpoint.relative_to(run_dir)), "onnx": str(
            (folder / f"{choice.student}.onnx").relative_to(run_dir)),
            "export": report.to_json()}
    record = {"device": device, "tiers": tiers, "notes": notes,
              "rule": "per tier the method with the best mean validation top-1 (best-on-"
                      "validation weights), then its best seed on validation; ties go to "
                      "training alone; test accuracy is reported, never used to choose"}
    atomic_write_text(folder / "deploy.json", json.dumps(record, indent=1, default=str) + "\n")
    return {"folder": str(folder.relative_to(run_dir)), **record}


# ----------------------------------------------------------------------------- the run
def run_pipeline(config: RunConfig, out_dir: str | os.PathLike, *, resume: bool = False,
                 on_stage: Callable[[str], None] | None = None,
                 on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Runs (or, with ``resume``, continues) every stage into ``out_dir``, the only writer of
    it (a second ``run`` on the same folder is refused in one line naming the first;
    :mod:`gtn_nas.locks`).

    Raises:
        ConfigError, DataError, InfeasibleBudgetError: bad options, missing data, an output
            directory holding another run.
    """
    with folder_lock(out_dir, "gtn-nas run"):
        return _run_pipeline(config, out_dir, resume=resume, on_stage=on_stage,
                             on_epoch_end=on_epoch_end)


def _run_pipeline(config: RunConfig, out_dir: str | os.PathLike, *, resume: bool,
                  on_stage: Callable[[str], None] | None,
                  on_epoch_end: Callable[[dict[str, Any]], None] | None) -> RunResult:
    from gtn_nas.hardware.profiles import load_profile
    from gtn_nas.run.report import write_report

    config.validate()
    for name in dict.fromkeys(("host_cpu", *config.search.hw)):
        load_profile(name)  # a bad profile fails now, not after the teacher has trained
    say = on_stage or (lambda text: _log.info(text))
    run_dir = Path(out_dir)
    state = RunState(run_dir, config, resume)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a path under a file, or a read-only folder
        raise ConfigError(f"cannot create the run directory {run_dir}: "
                          f"{exc.strerror or exc}; choose another --out") from exc
    for stale in remove_stale_temporaries(run_dir):  # left by a killed run's atomic writes
        _log.info("removed %s, left by a killed run", stale)
    state.save()
    host = "host_cpu"
    if host not in config.search.hw:
        config = dataclasses.replace(config, search=dataclasses.replace(
            config.search, hw=(host, *config.search.hw)))

    if state.done("teacher") is None:
        stage = config.teacher
        pre = (f"{stage.pretrain_train.epochs} epochs standard pre-training, then "
               if stage.pretrain and stage.method != "standard" else "")
        warm = stage.resolved_warmup()
        say(f"1/5 teacher: {stage.teacher} on {config.data}, {pre}{stage.method} "
            f"{stage.train.epochs} epochs"
            f"{f' (the first {warm} with the teacher frozen)' if warm else ''}")
        state.finish("teacher", teacher_stage(config, run_dir, resume, on_epoch_end))
    else:
        say("1/5 teacher: finished earlier")
    teacher_path = run_dir / state.done("teacher")["teacher"]

    if state.done("search") is None:
        say(f"2/5 search: {config.search.budget_evals} candidates per device on "
            f"{', '.join(config.search.hw)}")
        state.finish("search", search_stage(config, run_dir, teacher_path))
    else:
        say("2/5 search: finished earlier")
    search = state.done("search")
    students_dir = run_dir / search["devices"][host]["folder"] / "students"

    if state.done("distill") is None:
        baselines = ", ".join(config.distill.baselines)
        say(f"3/5 distill: s/m/l "
            f"{f'without a teacher ({baselines}), then ' if baselines else ''}"
            f"with {config.distill.method}, {config.distill.train.epochs} epochs, seeds "
            f"{list(config.distill.seeds)}, exported to ONNX")
        state.finish("distill", distill_stage(config, run_dir, teacher_path, students_dir,
                                              on_job=say))
    else:
        say("3/5 distill: finished earlier")

    if state.done("deploy") is None:
        say(f"4/5 deploy: per tier the better student on validation -> "
            f"{run_dir / 'deploy' / host}")
        record = deploy_stage(run_dir, search, state.done("distill"), host)
        for tier, info in record["tiers"].items():
            say(f"  {tier}: {info['method']} (seed {info['seed']}), validation "
                f"{info['val_acc'] * 100:.1f}%, test {info['test_acc'] * 100:.1f}% -> "
                f"{info['onnx']}")
        for note in record["notes"]:
            say(f"  {note}")
        state.finish("deploy", record)
    else:
        say("4/5 deploy: finished earlier")

    say("5/5 report")
    report, rows = write_report(run_dir, state.data)
    state.finish("report", {"report": "report.md"})
    return RunResult(run_dir, report, {"teacher": teacher_path, "students": students_dir},
                     rows)


def rebuild_report(run_dir: str | os.PathLike) -> Path:
    """Rewrites ``report.md`` of a run directory from its files (``gtn-nas report DIR``)."""
    from gtn_nas.run.report import write_report

    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{run_dir}/run.json: unreadable run record ({exc})") from exc
    return write_report(run_dir, data)[0]
