"""``gtn-nas run``: the whole job, stage by stage, each stage handing the next files in the run
directory.

1. ``teacher/``: the teacher (:func:`gtn_nas.teacher.train.train_teacher`): by default a
   resnet32 pre-trained the standard way until it is clearly better than its students will be
   alone (``teacher/pretrain/``), then fine-tuned as a GTN teacher, its branches warming up
   with the teacher frozen before the joint training (as the GTN paper fine-tunes pretrained
   teachers);
2. ``search/``: s/m/l students for this machine (``host_cpu``) and every other profile given
   (:mod:`gtn_nas.search.devices`): budgets from each device (latency on it), proposals
   ranked by ``search.score`` (default FLOPs), picks chosen by validation accuracy after
   training the best proposals by successive halving on the distill stage's recipe, each
   pick re-measured here against its budget;
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
from it (digits are 8x8, the profiles 32x32) each tier's budget is a latency on that device:
the 25th, 50th and 90th percentiles of random students timed by the device's latency model
(:mod:`gtn_nas.search.budgets`), so every device gets budgets, and picks, of its own.

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
              "data": dataclasses.replace(config.data), "space": stage.space,
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


def search_stage(config: RunConfig, run_dir: Path, teacher_path: Path,
                 say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Picks s/m/l for every profile in ``search.hw`` (:func:`gtn_nas.search.devices.search_devices`):
    budgets from each device, proposals ranked by ``search.score``, picks chosen by trained
    accuracy (``search.select``; the trials are the distill stage's ``none`` jobs, so the
    picks' finished trials are reused there), each pick re-measured here against its budget."""
    from gtn_nas.hardware.profiles import load_profile
    from gtn_nas.search.devices import search_devices, selection_summary
    from gtn_nas.search.report import save_search
    from gtn_nas.search.scoring import search_scorer
    from gtn_nas.space.plugins import build_space

    splits = config.data.load(seed=config.seed, augment=False)
    space = build_space(config.teacher.space, num_classes=splits.num_classes,
                        in_channels=splits.in_channels, input_size=splits.image_size,
                        width_mult=config.teacher.width_mult)
    scorer, score_notes = search_scorer(
        config.search.score, space, teacher_path=teacher_path if config.search.score == "branch"
        else None, space_override=config.teacher.space, data=splits, seed=config.seed)
    stage = config.search
    folder = run_dir / "search"
    # by the device's name (what the results are keyed by), not the file's: --hw jetson
    # loads jetson_orin_nano
    profiles = {p.name: p for p in map(load_profile, stage.hw)}
    results = search_devices(
        space, list(profiles.values()), scorer=scorer,
        scored_by=scorer.description, strategy=stage.strategy,
        budget_evals=stage.budget_evals, seed=config.seed, latency_mode=stage.latency,
        budget_rule=stage.budgets, budget_students=stage.budget_students, select=stage.select,
        recipe=distill_config(config, "none", None, folder), halving=stage.halving,
        train_seed=config.distill.seeds[0], folder=folder, say=say)
    record: dict[str, Any] = {"space": space.spec, "scored_by": scorer.description,
                              "score_notes": score_notes, "select": stage.select,
                              "devices": {}}
    for name, result in results.items():
        result.notes[:0] = score_notes
        profile = dataclasses.replace(profiles[name], budgets=result.budgets)
        paths = save_search(result, folder / name, space, profile)
        record["devices"][name] = {
            "folder": str((folder / name).relative_to(run_dir)),
            "latency_source": result.latency_source, "notes": result.notes,
            "budgets": result.budgets, "budget_rule": result.budget_rule,
            "runs_here": profile.device.runs_here,
            "picks": {tier: pick.to_json() for tier, pick in result.picks.items()},
            "selection": selection_summary(result),
            "pareto_png": str(Path(paths["pareto_png"]).relative_to(run_dir)),
            **({"halving_png": str(Path(paths["halving_png"]).relative_to(run_dir))}
               if paths.get("halving_png") else {}),
            "summary": str(Path(paths["summary"]).relative_to(run_dir))}
    return record


def distill_config(config: RunConfig, method: str, teacher_path: Path | None,
                   students: Path):
    """The :class:`~gtn_nas.distill.jobs.DistillRunConfig` of one distill-stage method (a
    teacherless baseline or the distiller); the search trains its candidates with the
    ``none`` one, so a pick's trial is exactly its ``none`` job."""
    from gtn_nas.distill.jobs import DistillRunConfig

    stage = config.distill
    teacherless = method in stage.baselines or method == "none"
    return DistillRunConfig(
        teacher=None if teacherless else str(teacher_path),
        students=(str(students),), method=method,
        method_options=dict(stage.baseline_options.get(method, {}) if teacherless
                            else {**stage.recipes.get(method, {}), **stage.options}),
        data=dataclasses.replace(config.data), labelled=stage.labelled,
        seeds=tuple(stage.seeds), train=dataclasses.replace(stage.train))


def reuse_search_trials(config: RunConfig, run_dir: Path, search: dict[str, Any],
                        device: str = "host_cpu") -> list[str]:
    """Copies each pick's search trial (seed ``distill.seeds[0]``) into its ``none`` job
    folder, where the job continues it exactly (same identity) instead of training again;
    returns the tiers reused. Jobs that already hold a checkpoint are left alone."""
    from gtn_nas.engine import CHECKPOINT_NAME
    from gtn_nas.search.selection import reusable_run

    if search.get("select") != "trained":
        return []
    seed = config.distill.seeds[0]
    reused = []
    for tier, pick in search["devices"][device]["picks"].items():
        source = reusable_run(run_dir / "search", pick["sample"], seed)
        target = run_dir / "distill" / "none" / tier / f"seed{seed}"
        if source is None or (target / CHECKPOINT_NAME).exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "metrics.csv", CHECKPOINT_NAME):  # the checkpoint last
            if (source / name).is_file():
                atomic_write_bytes(target / name, (source / name).read_bytes())
        reused.append(tier)
    return reused


def distill_stage(config: RunConfig, run_dir: Path, teacher_path: Path, students_dir: Path,
                  search: dict[str, Any] | None = None,
                  on_job: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Trains the host's s/m/l without a teacher (the baselines, first; a pick's finished
    search trial is its ``none`` job and is reused), then distils them from the teacher, the
    guard checking the teacher against the plain baseline."""
    from gtn_nas.distill.jobs import distill

    stage = config.distill
    methods = [*stage.baselines, stage.method]
    record: dict[str, Any] = {"methods": {}, "main": stage.method}
    if search is not None and "none" in stage.baselines:
        record["reused_trials"] = reuse_search_trials(config, run_dir, search)
    for method in methods:
        run = distill_config(config, method, teacher_path, students_dir)
        if method not in stage.baselines and "none" in stage.baselines:
            run = dataclasses.replace(run, baseline=str(run_dir / "distill" / "none"))
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
        say(f"1/5 teacher: {stage.teacher} on {config.data.name}, {pre}{stage.method} "
            f"{stage.train.epochs} epochs"
            f"{f' (the first {warm} with the teacher frozen)' if warm else ''}")
        state.finish("teacher", teacher_stage(config, run_dir, resume, on_epoch_end))
    else:
        say("1/5 teacher: finished earlier")
    teacher_path = run_dir / state.done("teacher")["teacher"]

    if state.done("search") is None:
        say(f"2/5 search: {config.search.budget_evals} candidates per device on "
            f"{', '.join(config.search.hw)}")
        state.finish("search", search_stage(config, run_dir, teacher_path, say=say))
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
                                              search=search, on_job=say))
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
