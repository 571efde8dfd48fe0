"""The distillation stage: every (student, seed) trained from one teacher, each in its own run
directory, resumable, exported to ONNX, then summarised.

``distill(config, out)`` turns the students (preset names, sample files, or search output
directories whose ``students/*.yaml`` it reads) into jobs, one per (student, seed), and runs
those of its shard. Each job's directory ``<out>/<student>/seed<k>/`` receives the engine's
resumable ``last.pt`` and metrics, ``curves.png``, ``student_last.pt`` and ``student_best.pt``
(student only: space + sample + weights, loadable with ``weights_only=True``), ``student.onnx``
(checked against PyTorch) and ``result.json``, written last: a job with a valid ``result.json``
is finished and a re-run skips it, so a long study completes in pieces (``shard=(K, N)`` runs
every N-th job, e.g. one SLURM array task each). The summary (``summary.md``, ``.csv``,
``.json``) is rebuilt from every ``result.json`` under ``out`` by :func:`write_summary`.

Example:
    >>> config = DistillRunConfig(teacher="runs/t/teacher.pt", students=("s_nas_s",),
    ...                           train=TrainConfig(epochs=5))              # doctest: +SKIP
    >>> result = distill(config, "runs/distill")                            # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gtn_nas.method import TrainingMethod
from gtn_nas.config import to_plain
from gtn_nas.data import DataSplits
from gtn_nas.distill.config import DistillRunConfig, student_recipe  # noqa: F401 - exported
from gtn_nas.distill.distillers import TEACHERLESS, build_distiller, copy_student_state
from gtn_nas.engine import fit
from gtn_nas.errors import ConfigError
from gtn_nas.distill.specs import StudentSpec, resolve_students
from gtn_nas.distill.summary import (RESULT_FORMAT, RESULT_NAME, collect_results,  # noqa: F401
                                     guard_against_baseline, read_result, write_summary)
from gtn_nas.fileio import atomic_write_text, remove_stale_temporaries
from gtn_nas.locks import release, try_lock

_log = logging.getLogger(__name__)


@dataclass
class DistillResult:
    """What :func:`distill` did."""

    out_dir: Path
    ran: list[Path]
    skipped: list[Path]
    summary: dict[str, Path]
    rows: list[dict[str, Any]]
    busy: list[Path] = field(default_factory=list)
    """Jobs another process was running (a second copy of the command shares the jobs)."""
    follower: bool = False
    """A rank launched by a multi-process strategy: it trained its launcher's job beside it and
    wrote nothing; rank 0 reports."""


# ----------------------------------------------------------------------------- teacher
def file_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def load_checked_teacher(path: str | os.PathLike, splits: DataSplits):
    """The teacher of ``path``, refused when its classes, channels or input size do not match
    the data. Returns ``(teacher, metadata)``."""
    from gtn_nas.teacher.zoo import load_teacher

    teacher, meta = load_teacher(path)
    if teacher.num_classes != splits.num_classes:
        raise ConfigError(f"teacher {path} has {teacher.num_classes} classes, the data "
                          f"({splits.name}) {splits.num_classes}")
    if teacher.in_channels != splits.in_channels:
        raise ConfigError(f"teacher {path} takes {teacher.in_channels} input channels, the "
                          f"data ({splits.name}) has {splits.in_channels}")
    size = meta.get("image_size")
    if isinstance(size, int) and size != splits.image_size:
        raise ConfigError(f"teacher {path} was trained on {size}x{size} images, the data "
                          f"({splits.name}) is {splits.image_size}x{splits.image_size}; pass "
                          f"--image-size {size}")
    teacher.eval()
    return teacher, meta


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``dataset``."""
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            correct += int((model(x).argmax(1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    return correct / max(total, 1)


def first_batch(dataset: Dataset, size: int = 16) -> torch.Tensor:
    """The first ``size`` images of ``dataset`` as one tensor (a real batch for parity)."""
    return torch.stack([dataset[i][0] for i in range(min(size, len(dataset)))])


# ----------------------------------------------------------------------------- one job
class TrackedDistiller(TrainingMethod):
    """Wraps a distiller and keeps its best-on-validation student weights in the checkpoint.

    The engine calls :meth:`after_validation` before writing each epoch's checkpoint, so the
    best weights are saved with the epoch that produced them and a resumed run has them too.
    """

    def __init__(self, distiller: nn.Module) -> None:
        super().__init__()
        self.method = distiller
        self.best_acc: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    @property
    def has_unused_parameters(self) -> bool:
        return self.method.has_unused_parameters

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        return self.method(x, y)

    def param_groups(self) -> list[dict[str, Any]]:
        return self.method.param_groups()

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.method.on_epoch_start(epoch, epochs)

    def export_student(self) -> nn.Module:
        return self.method.export_student()

    def after_validation(self, record: dict[str, Any]) -> None:
        acc = record.get("val/acc")
        if acc is not None and (self.best_acc is None or acc > self.best_acc):
            self.best_acc, self.best_epoch = float(acc), int(record["epoch"])
            self.best_state = copy_student_state(self.method)
        record["best_epoch"] = self.best_epoch

    def get_extra_state(self) -> dict[str, Any]:
        return {"best_acc": self.best_acc, "best_epoch": self.best_epoch,
                "best_state": self.best_state}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.best_acc = state.get("best_acc")
        self.best_epoch = int(state.get("best_epoch") or 0)
        self.best_state = state.get("best_state")


def _job_identity(config: DistillRunConfig, spec: StudentSpec, seed: int,
                  teacher_digest: str | None) -> dict[str, Any]:
    plain = to_plain(config)
    for key in ("students", "seeds", "export", "opset", "baseline"):
        plain.pop(key, None)
    plain["train"]["seed"] = seed
    # the student is its space and sample, not its name: a search's trial of a student is the
    # same run as the ``none`` job of the tier it became (gtn_nas.search.selection reuses it)
    return {"distill": plain, "student": {"space": spec.space.spec,
                                          "options": to_plain(spec.space.options),
                                          "sample": spec.sample},
            "seed": seed, "teacher_digest": teacher_digest}


def train_job(config: DistillRunConfig, spec: StudentSpec, seed: int, splits: DataSplits,
              teacher: nn.Module | None, teacher_digest: str | None, run_dir: Path, *,
              on_epoch_end: Callable[[dict[str, Any]], None] | None = None
              ) -> tuple[TrackedDistiller, Any]:
    """Trains one (student, seed) into ``run_dir`` (resuming its ``last.pt``): the training
    half of :func:`run_job`, which a search's trials run alone (an exception raised by
    ``on_epoch_end`` stops it after that epoch's checkpoint). Returns the method and the
    engine's :class:`~gtn_nas.engine.FitResult`."""
    from gtn_nas.engine import seed_everything

    identity = _job_identity(config, spec, seed, teacher_digest)
    train = copy.deepcopy(config.train)
    train.seed = seed
    seed_everything(seed)
    student = spec.space.freeze(spec.sample, seed=seed)
    job_teacher = copy.deepcopy(teacher) if teacher is not None else None
    options = dict(config.method_options)
    if config.method in ("fitnets", "at"):
        options.setdefault("input_size", splits.image_size)
    distiller = build_distiller(config.method, student, job_teacher, spec.space.block_units,
                                teacher_mode=config.teacher_mode, options=options)
    if train.grad_clip is None and getattr(distiller, "grad_clip", None):
        train.grad_clip = float(distiller.grad_clip)
    method = TrackedDistiller(distiller)
    resume = (run_dir / "last.pt").exists()
    result = fit(method, splits.train, splits.val, train, run_dir, resume=resume,
                 identity=identity, on_epoch_end=on_epoch_end)
    return method, result


def run_job(config: DistillRunConfig, spec: StudentSpec, seed: int, splits: DataSplits,
            teacher: nn.Module | None, teacher_digest: str | None, run_dir: Path, *,
            on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Trains (:func:`train_job`), evaluates, saves and exports one (student, seed); returns
    its result record."""
    from gtn_nas.space.costs import count_flops, count_params
    from gtn_nas.space.export import export_and_check
    from gtn_nas.space.students import save_student

    method, result = train_job(config, spec, seed, splits, teacher, teacher_digest, run_dir,
                               on_epoch_end=on_epoch_end)
    if not result.is_global_zero:
        return {}
    last = method.export_student()
    best = spec.space.freeze(spec.sample)
    best.load_state_dict(method.best_state if method.best_state is not None
                         else last.state_dict())
    data_info = {"name": config.data.name, "root": config.data.root,
                 "image_size": splits.image_size, "seed": seed, "limit": config.data.limit,
                 "labelled": config.labelled, "options": dict(config.data.options)}
    test_last = accuracy(last, splits.test)
    # the best epoch's weights are the last ones when the last epoch validated best
    same = method.best_state is None or method.best_epoch == len(result.history)
    test_best = test_last if same else accuracy(best, splits.test)
    example = spec.space.example_input()
    record: dict[str, Any] = {
        "format": RESULT_FORMAT, "student": spec.name, "seed": seed, "method": config.method,
        "source": spec.source, "space": spec.space.spec, "sample": spec.sample,
        "params": count_params(last), "mflops": round(count_flops(last, example) / 1e6, 4),
        "epochs": len(result.history), "test_acc": test_last, "test_acc_best": test_best,
        "best_epoch": method.best_epoch, "val_acc_best": method.best_acc,
        "val_acc_last": result.history[-1].get("val/acc"), "info": spec.info,
        "seconds": round(sum(r.get("seconds", 0.0) for r in result.history), 2)}
    extra = {"method": config.method, "data": data_info, "test_acc": test_last}
    save_student(run_dir / "student_last.pt", last, spec.space, spec.sample, **extra)
    save_student(run_dir / "student_best.pt", best, spec.space, spec.sample,
                 **{**extra, "test_acc": test_best, "epoch": method.best_epoch})
    if config.export:
        report = export_and_check(last.eval(), run_dir / "student.onnx",
                                  first_batch(splits.test), opset=config.opset,
                                  parity_inputs=f"{config.data.name} test images")
        record["export"] = report.to_json()
        record["export"]["onnx"] = "student.onnx"
    try:
        from gtn_nas.report import plot_training_curves

        plot_training_curves(result.history, run_dir / "curves.png",
                             title=f"{spec.name} ({config.method}, seed {seed})")
    except ImportError as exc:
        _log.warning("no curves.png: %s", exc)
    atomic_write_text(run_dir / RESULT_NAME, json.dumps(record, indent=1) + "\n")
    return record


# ----------------------------------------------------------------------------- the stage
def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``; None -> ``(1, 1)``."""
    if text is None:
        return 1, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ConfigError(f"--shard must be K/N with 1 <= K <= N (e.g. 2/8), got '{text}'")
    return int(match.group(1)), int(match.group(2))


def load_splits(config: DistillRunConfig, seed: int = 0) -> DataSplits:
    """The run's splits. With ``labelled``, a teacherless method trains on the labelled images
    alone (the data of a ``limit=labelled`` run); a distiller on every training image, the
    unlabelled ones without a target (:mod:`gtn_nas.distill.partial_labels`)."""
    import dataclasses

    def load(limit: int | None) -> DataSplits:
        return dataclasses.replace(config.data, limit=limit).load(seed=seed)

    if config.labelled is None:
        return load(config.data.limit)
    if config.method in TEACHERLESS:
        return load(config.labelled)
    from gtn_nas.distill.partial_labels import partially_labelled

    splits = load(config.data.limit)
    return dataclasses.replace(splits, train=partially_labelled(splits.train,
                                                                load(config.labelled).train))


def distill(config: DistillRunConfig, out_dir: str | os.PathLike, *,
            shard: tuple[int, int] = (1, 1),
            on_job: Callable[[str], None] | None = None,
            on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> DistillResult:
    """Runs the jobs of ``shard`` (see the module docstring) and rewrites the summary.

    Raises:
        ConfigError, DataError: bad options, missing data, a teacher or student that does not
            match the data, an output path that is a file.
    """
    config.validate()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a run directory; choose another --out")
    # Under a multi-process strategy (``--devices 2 --strategy ddp``) Lightning starts the
    # other ranks by running this command again; such a rank trains the one job its launcher
    # (rank 0) is training, named in the environment it inherits, and writes nothing else.
    follow = os.environ.get(DDP_JOB_ENV)
    if follow is None:
        for stale in remove_stale_temporaries(out):  # a killed run's summaries, results, exports
            _log.info("removed %s, left by a killed run", stale)
    say = on_job or (lambda text: _log.info(text))
    # The splits are a function of the data seed; every job uses the data split of seed 0 so
    # that students of different seeds are compared on the same test images.
    splits = load_splits(config, seed=0)
    teacher = digest = None
    teacher_acc = None
    if config.teacher is not None and config.method not in TEACHERLESS:
        teacher, _ = load_checked_teacher(config.teacher, splits)
        digest = file_digest(config.teacher)
    specs = resolve_students(tuple(config.students), num_classes=splits.num_classes,
                             in_channels=splits.in_channels, input_size=splits.image_size,
                             space_flag=config.space, width_mult=config.width_mult)
    if config.baseline is not None and not Path(config.baseline).is_dir():
        raise ConfigError(f"--baseline {config.baseline}: not a directory (give the --out of a "
                          f"distill run with --method none or ls)")
    if teacher is not None and follow is None:
        teacher_acc = _teacher_accuracy(out, teacher, digest, splits, _data_key(config))[
            "test_acc"]
        for line in guard_against_baseline(out, config.baseline, teacher_acc,
                                           [spec.name for spec in specs]):
            say(line)
    jobs = [(spec, seed) for spec in specs for seed in config.seeds]
    if follow is not None:
        return _follow_launcher(follow, jobs, config, splits, teacher, digest, out,
                                on_epoch_end)
    atomic_write_text(out / "config.yaml", _yaml(to_plain(config)))
    k, n = shard
    mine = [job for index, job in enumerate(jobs) if index % n == k - 1]
    todo = [job for job in mine
            if (read_result(out / job[0].name / f"seed{job[1]}") or {}).get("method")
            != config.method] if config.train.devices > 1 else []
    if len(todo) > 1:
        raise ConfigError(
            f"--devices {config.train.devices} trains one job per command (Lightning starts its "
            f"processes once per command) and this one has {len(todo)} to train: give one "
            f"student and one seed, or split the jobs with --shard k/{len(jobs)}")
    ran, skipped, busy = [], [], []
    for number, (spec, seed) in enumerate(mine, start=1):
        run_dir = out / spec.name / f"seed{seed}"
        done = read_result(run_dir)
        if done is not None and done.get("method") == config.method:
            skipped.append(run_dir)
            say(f"[{number}/{len(mine)}] {spec.name} seed {seed}: finished earlier, skipped")
            continue
        if not try_lock(run_dir, f"distill job {spec.name} seed {seed}"):
            # N copies of one command share its jobs like a work queue
            busy.append(run_dir)
            say(f"[{number}/{len(mine)}] {spec.name} seed {seed}: running in another "
                f"process, skipped")
            continue
        try:
            if (read_result(run_dir) or {}).get("method") == config.method:
                # finished by another process meanwhile (the same test as before the lock)
                skipped.append(run_dir)
                continue
            say(f"[{number}/{len(mine)}] {spec.name} seed {seed}: {config.method}, "
                f"{config.train.epochs} epochs -> {run_dir}")
            os.environ[DDP_JOB_ENV] = str(run_dir.resolve())  # the ranks it launches follow
            try:
                run_job(config, spec, seed, splits, teacher, digest, run_dir,
                        on_epoch_end=on_epoch_end)
            finally:
                os.environ.pop(DDP_JOB_ENV, None)
            ran.append(run_dir)
        finally:
            release(run_dir)
    summary, rows = write_summary(out, teacher_acc=teacher_acc)
    return DistillResult(out, ran, skipped, summary, rows, busy)


DDP_JOB_ENV = "GTN_NAS_DISTILL_JOB"
"""The run directory of the job rank 0 trains, for the ranks a multi-process strategy
launches (they inherit rank 0's environment)."""


def _follow_launcher(job_dir: str, jobs, config: DistillRunConfig, splits, teacher, digest,
                     out: Path, on_epoch_end) -> DistillResult:
    """A launched rank: trains the job whose run directory is ``job_dir`` beside rank 0 (which
    holds its lock and writes its files) and returns; nothing else is written."""
    for spec, seed in jobs:
        run_dir = out / spec.name / f"seed{seed}"
        if str(run_dir.resolve()) == job_dir:
            run_job(config, spec, seed, splits, teacher, digest, run_dir,
                    on_epoch_end=on_epoch_end)
            return DistillResult(out, [run_dir], [], {"md": out / "summary.md"}, [], [],
                                 follower=True)
    raise ConfigError(f"{DDP_JOB_ENV}={job_dir} names no job of this command (a launched rank "
                      f"must run its launcher's command)")


def _data_key(config: DistillRunConfig) -> dict[str, Any]:
    """What decides the splits and their normalisation (the teacher's cached accuracy and the
    guard's comparison hold for these only)."""
    data = config.data
    return {"data": data.name, "root": data.root, "image_size": data.image_size,
            "limit": data.limit, "labelled": config.labelled, "options": to_plain(data.options)}


def _teacher_accuracy(out: Path, teacher: nn.Module, digest: str | None,
                      splits: DataSplits, data_key: dict[str, Any]) -> dict[str, Any]:
    """The frozen teacher's test and validation top-1, computed once per teacher file and data
    (``teacher.json``), not once per epoch of every job."""
    path = out / "teacher.json"
    try:
        data = json.loads(path.read_text())
        if data.get("digest") == digest and data.get("data_key") == data_key \
                and "val_acc" in data:
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    data = {"digest": digest, "data": splits.name, "data_key": data_key,
            "test_acc": accuracy(teacher, splits.test), "val_acc": accuracy(teacher, splits.val)}
    atomic_write_text(path, json.dumps(data) + "\n")
    return data


def _yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


