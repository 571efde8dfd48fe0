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
from typing import Any, Callable, Literal, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gtn_nas.config import read_yaml, to_plain
from gtn_nas.data import DataSplits, load_dataset
from gtn_nas.distill.distillers import (DISTILLERS, TEACHERLESS, UNLABELLED_IMAGES, build_distiller,
                             copy_student_state)
from gtn_nas.engine import TrainConfig, fit
from gtn_nas.errors import ConfigError
from gtn_nas.fileio import atomic_write_text, remove_stale_temporaries
from gtn_nas.space.supernet import Sample, SupernetSpace

_log = logging.getLogger(__name__)

RESULT_NAME = "result.json"
RESULT_FORMAT = "gtn-nas-distill-result/1"


def student_recipe() -> TrainConfig:
    """The GTN supplement's student recipe: SGD lr 0.05, momentum 0.9, wd 5e-4, batch 64,
    cosine annealing over 240 epochs."""
    return TrainConfig(epochs=240, lr=0.05, schedule="cosine")


@dataclass
class DistillRunConfig:
    """Everything a distillation run depends on (``config.yaml`` of the run directory)."""

    teacher: str | None = None
    students: tuple[str, ...] = ()
    method: str = "kd"
    method_options: dict[str, Any] = field(default_factory=dict)
    teacher_mode: Literal["eval", "train"] = "eval"
    data: str = "digits"
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    download: bool = False
    image_size: int | None = None
    limit: int | None = None
    labelled: int | None = None
    space: str | None = None
    width_mult: float = 0.25
    seeds: tuple[int, ...] = (0,)
    baseline: str | None = None
    export: bool = True
    opset: int = 17
    train: TrainConfig = field(default_factory=student_recipe)

    def validate(self) -> None:
        self.train.validate()
        DISTILLERS.get(self.method)  # unknown names: one line with close matches
        if not self.students:
            raise ConfigError("no students: give --students (preset names, sample files or a "
                              "search output directory)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct integers, got {list(self.seeds)}")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ConfigError(f"seeds must be non-negative integers, got {list(self.seeds)}")
        if self.labelled is not None:
            if isinstance(self.labelled, bool) or not isinstance(self.labelled, int) \
                    or self.labelled < 1:
                raise ConfigError(f"--labelled must be a positive number of images, got "
                                  f"{self.labelled!r}")
            if self.limit is not None and self.labelled >= self.limit:
                raise ConfigError(f"--labelled {self.labelled} must be below --limit "
                                  f"{self.limit} (the rest are the unlabelled images)")
            if self.method not in (*TEACHERLESS, *UNLABELLED_IMAGES):
                raise ConfigError(f"method {self.method} needs every image's label; with "
                                  f"--labelled use {', '.join(UNLABELLED_IMAGES)} (or "
                                  f"{' / '.join(TEACHERLESS)}, trained on the labelled images)")
        if self.teacher is None and self.method not in (*TEACHERLESS, "gpd"):
            raise ConfigError(f"method {self.method} needs --teacher (a teacher.pt); "
                              f"without a teacher use --method none, ls or gpd")


@dataclass
class StudentSpec:
    """One student to distil: its name, space, sample and what the search said about it."""

    name: str
    space: SupernetSpace
    sample: Sample
    source: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class DistillResult:
    """What :func:`distill` did."""

    out_dir: Path
    ran: list[Path]
    skipped: list[Path]
    summary: dict[str, Path]
    rows: list[dict[str, Any]]


# ----------------------------------------------------------------------------- students
def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "student"


def resolve_students(items: tuple[str, ...], *, num_classes: int, in_channels: int,
                     input_size: int, space_flag: str | None = None,
                     width_mult: float = 0.25) -> list[StudentSpec]:
    """Turns ``--students`` items into :class:`StudentSpec` s for data of the given shape.

    Items are a preset name of ``space_flag`` (default ``resnet_supernet``) at ``width_mult``,
    a sample file (its space and options; a plugin file only when ``space_flag`` names it), or
    a search output directory (``students/*.yaml``, one student per tier).

    Raises:
        ConfigError: a missing or empty students directory, a student of another class count,
            channel count or input size than the data, a duplicate name, an untrusted plugin.
    """
    from gtn_nas.space.plugins import DEFAULT_SPACE, build_space
    from gtn_nas.space.students import load_sample_file, space_spec_of_file

    data_options = {"num_classes": num_classes, "in_channels": in_channels,
                    "input_size": input_size}
    specs: list[StudentSpec] = []
    default_space = None
    for item in items:
        path = Path(item)
        if path.is_dir():
            folder = path / "students" if (path / "students").is_dir() else path
            files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
            if not files:
                raise ConfigError(f"students directory {path} holds no students/*.yaml "
                                  f"(expected a search output directory)")
            entries = [(f, f.stem) for f in files]
        elif path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
            entries = [(path, path.stem)]
        else:
            if default_space is None:
                default_space = build_space(space_flag or DEFAULT_SPACE,
                                            width_mult=width_mult, **data_options)
            sample = default_space.preset(item)
            specs.append(StudentSpec(_safe_name(item), default_space, sample,
                                     f"preset {item}"))
            continue
        for file, name in entries:
            data = read_yaml(file, "sample file")
            declared = space_spec_of_file(data, file, trusted=space_flag)
            options = dict(data.get("options") or {}) if isinstance(data, Mapping) else {}
            for key, wanted in data_options.items():
                if key in options and options[key] != wanted:
                    raise ConfigError(f"{file}: a student for {key} {options[key]}, but the "
                                      f"data has {wanted}")
            options.update(data_options)
            if "width_mult" not in options:
                options["width_mult"] = width_mult
            space = build_space(space_flag or declared or DEFAULT_SPACE, **options)
            sample = load_sample_file(file, space)
            info = {k: data[k] for k in ("tier", "profile", "score", "latency_ms",
                                         "latency_source", "measured")
                    if isinstance(data, Mapping) and k in data}
            specs.append(StudentSpec(_safe_name(name), space, sample, str(file), info))
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"two students are named {', '.join(duplicates)}; give each a "
                          f"distinct file name")
    return specs


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
class TrackedDistiller(nn.Module):
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
        return bool(getattr(self.method, "has_unused_parameters", True))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        return self.method(x, y)

    def param_groups(self) -> list[dict[str, Any]]:
        if hasattr(self.method, "param_groups"):
            return self.method.param_groups()
        return [{"params": [p for p in self.method.parameters() if p.requires_grad]}]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        if hasattr(self.method, "on_epoch_start"):
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
    return {"distill": plain, "student": {"name": spec.name, "space": spec.space.spec,
                                          "options": to_plain(spec.space.options),
                                          "sample": spec.sample},
            "seed": seed, "teacher_digest": teacher_digest}


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """A job's ``result.json`` if it is complete and readable, else None."""
    path = run_dir / RESULT_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RESULT_FORMAT else None


def run_job(config: DistillRunConfig, spec: StudentSpec, seed: int, splits: DataSplits,
            teacher: nn.Module | None, teacher_digest: str | None, run_dir: Path, *,
            on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Trains, evaluates, saves and exports one (student, seed); returns its result record."""
    from gtn_nas.space.costs import count_flops, count_params
    from gtn_nas.engine import seed_everything
    from gtn_nas.space.export import export_and_check
    from gtn_nas.space.students import save_student

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
    if not result.is_global_zero:
        return {}
    last = method.export_student()
    best = spec.space.freeze(spec.sample)
    best.load_state_dict(method.best_state if method.best_state is not None
                         else last.state_dict())
    data_info = {"name": config.data, "root": config.data_root, "image_size": splits.image_size,
                 "seed": seed, "limit": config.limit, "labelled": config.labelled,
                 "options": dict(config.data_options)}
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
                                  parity_inputs=f"{config.data} test images")
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
        return load_dataset(config.data, root=config.data_root, image_size=config.image_size,
                            seed=seed, limit=limit, download=config.download,
                            **config.data_options)

    if config.labelled is None:
        return load(config.limit)
    if config.method in TEACHERLESS:
        return load(config.labelled)
    from gtn_nas.distill.partial_labels import partially_labelled

    splits = load(config.limit)
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
    if teacher is not None:
        teacher_acc = _teacher_accuracy(out, teacher, digest, splits, _data_key(config))[
            "test_acc"]
        for line in guard_against_baseline(out, config.baseline, teacher_acc,
                                           [spec.name for spec in specs]):
            say(line)
    atomic_write_text(out / "config.yaml", _yaml(to_plain(config)))
    jobs = [(spec, seed) for spec in specs for seed in config.seeds]
    k, n = shard
    mine = [job for index, job in enumerate(jobs) if index % n == k - 1]
    ran, skipped = [], []
    for number, (spec, seed) in enumerate(mine, start=1):
        run_dir = out / spec.name / f"seed{seed}"
        done = read_result(run_dir)
        if done is not None and done.get("method") == config.method:
            skipped.append(run_dir)
            say(f"[{number}/{len(mine)}] {spec.name} seed {seed}: finished earlier, skipped")
            continue
        say(f"[{number}/{len(mine)}] {spec.name} seed {seed}: {config.method}, "
            f"{config.train.epochs} epochs -> {run_dir}")
        run_job(config, spec, seed, splits, teacher, digest, run_dir, on_epoch_end=on_epoch_end)
        ran.append(run_dir)
    summary, rows = write_summary(out, teacher_acc=teacher_acc)
    return DistillResult(out, ran, skipped, summary, rows)


def _data_key(config: DistillRunConfig) -> dict[str, Any]:
    """What decides the splits and their normalisation (the teacher's cached accuracy and the
    guard's comparison hold for these only)."""
    return {"data": config.data, "root": config.data_root, "image_size": config.image_size,
            "limit": config.limit, "labelled": config.labelled,
            "options": to_plain(config.data_options)}


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


GUARD_NAME = "guard.json"


def guard_against_baseline(out: Path, baseline: str | None, teacher_acc: float,
                           students: list[str]) -> list[str]:
    """The teacher guard (:func:`gtn_nas.distill.deploy.teacher_guard`) for every student with finished
    runs in the teacherless ``baseline`` directory; the lines are also kept in ``guard.json``
    for the summary. Accuracy alone: the mean test top-1 of its best-on-validation weights."""
    from gtn_nas.distill.deploy import teacher_guard

    if baseline is None:  # no stale lines from an earlier run with a baseline
        if (out / GUARD_NAME).exists():
            atomic_write_text(out / GUARD_NAME, json.dumps({"baseline": None,
                                                            "lines": []}) + "\n")
        return []
    folder = Path(baseline)
    by_student: dict[str, list[dict[str, Any]]] = {}
    for record in collect_results(folder):
        if record.get("method") in TEACHERLESS:
            by_student.setdefault(record["student"], []).append(record)
    lines = []
    for name in students:
        records = by_student.get(name)
        if not records:
            continue
        alone = sum(r["test_acc_best"] for r in records) / len(records)
        line = teacher_guard(name, teacher_acc, alone, records[0]["method"])
        if line:
            lines.append(line)
    atomic_write_text(out / GUARD_NAME, json.dumps({"baseline": str(folder),
                                                    "lines": lines}) + "\n")
    return lines


def _yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


# ----------------------------------------------------------------------------- summary
def collect_results(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished job's ``result.json`` under ``out_dir``."""
    out = Path(out_dir)
    results = []
    for path in sorted(out.rglob(RESULT_NAME)):
        record = read_result(path.parent)
        if record is not None:
            record["run_dir"] = str(path.parent.relative_to(out))
            results.append(record)
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    import statistics

    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (student, method): costs, latency and test top-1 mean +- std over seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in results:
        groups.setdefault((record["student"], record["method"]), []).append(record)
    rows = []
    for (student, method), records in groups.items():
        records.sort(key=lambda r: r["seed"])
        first = records[0]
        last_mean, last_std = _mean_std([r["test_acc"] for r in records])
        best_mean, best_std = _mean_std([r["test_acc_best"] for r in records])
        latency, source = _latency_of(first)
        rows.append({"student": student, "method": method, "params": first["params"],
                     "mflops": first["mflops"], "latency_ms": latency,
                     "latency_source": source, "seeds": [r["seed"] for r in records],
                     "test_acc_mean": last_mean, "test_acc_std": last_std,
                     "test_acc_best_mean": best_mean, "test_acc_best_std": best_std,
                     "epochs": first["epochs"], "tier": first.get("info", {}).get("tier")})
    rows.sort(key=lambda r: (r["method"], r["params"], r["student"]))
    return rows


def _latency_of(record: Mapping[str, Any]) -> tuple[float | None, str]:
    info = record.get("info") or {}
    measured = info.get("measured") or {}
    if measured.get("median_ms") is not None:
        return float(measured["median_ms"]), f"measured ({info.get('profile', 'search')})"
    if info.get("latency_ms") is not None:
        return float(info["latency_ms"]), f"{info.get('latency_source')} " \
                                          f"({info.get('profile', 'search')})"
    export = record.get("export") or {}
    if export.get("ort_ms_batch1") is not None:
        return float(export["ort_ms_batch1"]), "measured here (ORT, batch 1)"
    return None, "-"


def write_summary(out_dir: str | os.PathLike, teacher_acc: float | None = None
                  ) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """Writes ``summary.md``, ``summary.csv`` and ``summary.json`` from the run directories
    under ``out_dir`` (what ``gtn-nas report DIR`` does after sharded runs)."""
    import csv
    import io

    from gtn_nas.report import markdown_table

    out = Path(out_dir)
    if teacher_acc is None:
        try:
            teacher_acc = float(json.loads((out / "teacher.json").read_text())["test_acc"])
        except (OSError, ValueError, KeyError, TypeError):
            teacher_acc = None
    results = collect_results(out)
    rows = summarise(results)
    try:
        guard = list(json.loads((out / GUARD_NAME).read_text())["lines"])
    except (OSError, ValueError, KeyError, TypeError):
        guard = []
    paths = {"json": atomic_write_text(out / "summary.json", json.dumps(
        {"teacher_test_acc": teacher_acc, "guard": guard, "rows": rows, "runs": results},
        indent=1) + "\n")}
    buffer = io.StringIO()
    columns = ["student", "method", "params", "mflops", "latency_ms", "latency_source",
               "test_acc_mean", "test_acc_std", "test_acc_best_mean", "test_acc_best_std",
               "seeds", "epochs", "teacher_test_acc"]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "seeds": " ".join(map(str, row["seeds"])),
                         "teacher_test_acc": teacher_acc})
    paths["csv"] = atomic_write_text(out / "summary.csv", buffer.getvalue())
    table = [[r["student"], r["method"], f"{r['params']:,}", f"{r['mflops']:.2f}",
              "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f} ({r['latency_source']})",
              f"{r['test_acc_mean']:.4f} ± {r['test_acc_std']:.4f}",
              f"{r['test_acc_best_mean']:.4f} ± {r['test_acc_best_std']:.4f}",
              len(r["seeds"]), r["epochs"]] for r in rows]
    lines = ["# Distillation summary", "",
             f"Teacher test top-1: {'-' if teacher_acc is None else f'{teacher_acc:.4f}'}; "
             f"{len(results)} finished runs.", "",
             markdown_table(["student", "method", "params", "MFLOPs", "latency ms (source)",
                             "test top-1 (last epoch)", "test top-1 (best on val)", "seeds",
                             "epochs"], table), "",
             "Top-1 is mean ± standard deviation over seeds, on the test split; 'best on val' "
             "takes each seed's epoch with the best validation accuracy."]
    lines += [""] + [f"**Guard:** {line}." for line in guard] if guard else []
    paths["md"] = atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return paths, rows
