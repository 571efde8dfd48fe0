"""A teacher-training run: resolve the config, build data, teacher and method, train on the
engine, and leave a run directory behind.

The run directory gets ``config.yaml`` (the resolved config), ``last.pt`` (the resumable
checkpoint), ``metrics.jsonl``/``metrics.csv``, ``teacher.pt`` (the plain teacher, branches
dropped, loadable by :func:`gtn_nas.teacher.zoo.load_teacher`), ``curves.png`` (teacher and branch
accuracies per epoch; for GTN also the path distribution), and for GTN ``branches.pt`` (the
grafted supernet branches, for scoring paths through the teacher in the search).

Example:
    >>> config = TeacherRunConfig(method="gtn", teacher="resnet32", data=DataConfig("digits"),
    ...                           train=TrainConfig(epochs=3))                 # doctest: +SKIP
    >>> result = train_teacher(config, "runs/gtn")                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from torch import nn

from gtn_nas.config import DataConfig, to_plain  # noqa: F401 - DataConfig: the example's
from gtn_nas.engine import FitResult, TrainConfig, fit, seed_everything
from gtn_nas.fileio import atomic_torch_save, atomic_write_text
from gtn_nas.space.plugins import build_space
from gtn_nas.teacher.config import METHODS, TeacherRunConfig  # noqa: F401 - their home before
from gtn_nas.teacher.zoo import build_teacher, save_teacher

_log = logging.getLogger(__name__)

BRANCHES_FORMAT = "gtn-nas-gtn-branches/1"
"""Format of a GTN run's ``branches.pt`` (the trained branches the search scores paths with)."""


@dataclass
class TeacherRunResult:
    """What :func:`train_teacher` produced."""

    fit: FitResult
    run_dir: Path
    teacher_path: Path | None
    curves_path: Path | None
    extra_paths: dict[str, Path]


def build_method(config: TeacherRunConfig, num_classes: int, in_channels: int,
                 image_size: int) -> nn.Module:
    """The training method of ``config`` around a freshly built teacher."""
    from gtn_nas.teacher.methods.gtn import GTNMethod
    from gtn_nas.teacher.methods.path_sampler import PathSampler
    from gtn_nas.teacher.methods.sftn import SFTNMethod
    from gtn_nas.teacher.methods.standard import StandardMethod

    teacher = build_teacher(config.teacher, num_classes=num_classes, in_channels=in_channels,
                            pretrained=config.pretrained, weights_path=config.teacher_weights,
                            **config.teacher_options)
    if config.method == "standard":
        return StandardMethod(teacher)
    space = build_space(config.space, num_classes=num_classes, in_channels=in_channels,
                        input_size=image_size, width_mult=config.width_mult)
    if config.method == "sftn":
        sample = _resolve_student(space, config.student)
        return SFTNMethod.build(teacher, space, sample, image_size, kl_weight=config.alpha,
                                temperature=config.temperature,
                                warmup_epochs=config.warmup_epochs)
    sampler = PathSampler(space, config.sampler, seed=config.train.seed, arch_lr=config.arch_lr,
                          entropy_weight=config.entropy_weight,
                          baseline_decay=config.baseline_decay, prior=config.path_prior,
                          cost_target_mflops=config.cost_target_mflops,
                          cost_weight=config.cost_weight)
    return GTNMethod(teacher, space, sampler, image_size, alpha=config.alpha,
                     temperature=config.temperature, warmup_epochs=config.warmup_epochs,
                     seed=config.train.seed, full_branch=config.full_branch,
                     sandwich=config.sandwich, inplace_distill=config.inplace_distill,
                     eval_paths=config.eval_paths,
                     eval_recalibration_batches=config.eval_recalibration_batches,
                     eval_paths_every=config.eval_paths_every)


def _schedule_comment(train: TrainConfig) -> str:
    """A YAML comment saying what unset milestones meant in this run (``milestones: null``
    stays in the file, so a copy used for another number of epochs scales them again)."""
    if train.schedule != "step" or train.milestones is not None:
        return ""
    steps = ", ".join(map(str, train.resolved_milestones()))
    return (f"# train.milestones null = x{train.gamma:g} after epochs {steps} of "
            f"{train.epochs} (the papers' 150/180/210 of 240, scaled)\n")


def _resolve_student(space, student: str) -> dict[str, Any]:
    from gtn_nas.space.students import load_sample_file

    if student in space.presets:
        return space.preset(student)
    if Path(student).suffix.lower() in (".yaml", ".yml", ".json") or Path(student).exists():
        return load_sample_file(student, space)
    return space.preset(student)  # unknown preset: the error lists the presets


def train_teacher(config: TeacherRunConfig, run_dir: str | os.PathLike, *, resume: bool = False,
                  on_epoch_end: Callable[[dict[str, Any]], None] | None = None
                  ) -> TeacherRunResult:
    """Runs ``config`` into ``run_dir`` (see the module docstring for what it writes).

    Raises:
        ConfigError, DataError: bad options, missing data, a teacher that cannot take the
            data's classes, an SFTN student that does not fit the teacher's cuts, a resume that
            does not match.
    """
    config = config.resolved()
    config.validate()
    run_dir = Path(run_dir)
    splits = config.data.load(seed=config.train.seed)
    seed_everything(config.train.seed)
    method = build_method(config, splits.num_classes, splits.in_channels, splits.image_size)
    identity = {"run": to_plain(config)}
    result = fit(method, splits.train, splits.val, config.train, run_dir, resume=resume,
                 identity=identity, on_epoch_end=on_epoch_end)
    teacher_path = curves_path = None
    extra: dict[str, Path] = {}
    if result.is_global_zero:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(
            identity["run"], sort_keys=False) + _schedule_comment(config.train))
        final = result.history[-1] if result.history else {}
        teacher_path = save_teacher(run_dir / "teacher.pt", method.teacher,
                                    method=config.method, data=config.data.name,
                                    image_size=splits.image_size, metrics=_scalars(final))
        if config.method == "gtn":
            space = method.branches.space[0]
            extra["branches"] = atomic_torch_save(
                {"format": BRANCHES_FORMAT, "space": space.spec,
                 "options": to_plain(space.options), "state_dict": method.branches.state_dict(),
                 "full_branch": method.branches.has_full,
                 "sampler": method.sampler.state_dict()}, run_dir / "branches.pt")
        try:
            from gtn_nas.report import plot_training_curves

            curves_path = plot_training_curves(result.history, run_dir / "curves.png",
                                               title=f"{config.method} teacher "
                                                     f"({config.teacher}, {config.data.name})")
        except ImportError as exc:  # matplotlib is a dependency; say so if it went missing
            _log.warning("no curves.png: %s", exc)
    return TeacherRunResult(result, run_dir, teacher_path, curves_path, extra)


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in record.items() if isinstance(v, (int, float))}
