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

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from torch import nn

from gtn_nas.config import DataConfig, to_plain, upgrade_data_keys
from gtn_nas.engine import FitResult, TrainConfig, fit, seed_everything
from gtn_nas.errors import ConfigError
from gtn_nas.fileio import atomic_torch_save, atomic_write_text
from gtn_nas.space.plugins import build_space
from gtn_nas.teacher.zoo import build_teacher, save_teacher

_log = logging.getLogger(__name__)

METHODS = ("standard", "sftn", "gtn")


BRANCHES_FORMAT = "gtn-nas-gtn-branches/1"
"""Format of a GTN run's ``branches.pt`` (the trained branches the search scores paths with)."""

@dataclass
class TeacherRunConfig:
    """Everything a teacher-training run depends on (``config.yaml`` of the run).

    GTN options (docs/gtn.md has the measurements behind the defaults):

    - ``sampler``: ``uniform`` | ``learned`` | ``adversarial``; ``arch_lr`` (Adam, 0.02),
      ``entropy_weight`` (0.1, bonus -KL(p || prior) per label), ``baseline_decay`` (0.9, the
      REINFORCE moving-average baseline), ``path_prior`` (``student``, default: each layer
      configuration equally likely; ``label``: uniform per label);
    - ``full_branch`` (None: on for ``learned``/``adversarial``, off for ``uniform``): a
      full-path branch from the input image, the only branch that runs layer 1 (its signal
      for the sampler); it does not touch the teacher and costs ~50% more time per epoch;
    - ``sandwich`` (False): also train the largest and smallest students each step;
    - ``inplace_distill`` (0): weight of KL(teacher || branch) for every branch path;
    - ``eval_paths`` (8): K fixed paths whose mean branch accuracies are logged each epoch;
    - ``eval_recalibration_batches`` (4): recent training batches that recalibrate each
      logged path's BN statistics (0: the shared statistics);
    - ``eval_paths_every`` (5): the logged paths are scored every this many epochs and after
      the last (the teacher's own accuracy every epoch).
    """

    method: Literal["standard", "sftn", "gtn"] = "gtn"
    teacher: str = "resnet32"
    teacher_options: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    pretrained: bool = False
    teacher_weights: str | None = None
    space: str = "resnet_supernet"
    width_mult: float = 0.25
    student: str | None = None
    sampler: str = "uniform"
    alpha: float | None = None
    temperature: float = 1.0
    warmup_epochs: int = 0
    arch_lr: float = 0.02
    entropy_weight: float = 0.1
    baseline_decay: float = 0.9
    path_prior: str = "student"
    full_branch: bool | None = None
    sandwich: bool = False
    inplace_distill: float = 0.0
    eval_paths: int = 8
    eval_recalibration_batches: int = 4
    eval_paths_every: int = 5
    cost_target_mflops: float | None = None
    cost_weight: float = 1.0
    train: TrainConfig = field(default_factory=TrainConfig)

    upgrade_keys = staticmethod(upgrade_data_keys)  # files before the data section

    def resolved(self) -> "TeacherRunConfig":
        """A copy with defaults that depend on other options filled in.

        ``full_branch``: on when the sampler learns (layer 1's signal), else off.
        ``alpha`` (the branch KL weight): the papers use 3 on CIFAR-100 and 1 on ImageNet-200;
        **[our reading]** 3 for ``cifar100`` and 1 for every other dataset (on small, short runs
        a weight of 3 ties the teacher to its still-random branches and stalls it).
        """
        alpha = self.alpha if self.alpha is not None else (
            3.0 if self.data.name == "cifar100" else 1.0)
        full = self.full_branch if self.full_branch is not None else self.sampler != "uniform"
        return dataclasses.replace(self, alpha=alpha, full_branch=full)

    def validate(self) -> None:
        self.train.validate()
        if self.method == "sftn" and not self.student:
            raise ConfigError("--method sftn needs --student (a preset name or a sample file)")
        if self.method != "sftn" and self.student:
            raise ConfigError(f"--student is for --method sftn, not {self.method}")
        if self.method != "gtn" and (self.sampler != "uniform" or self.cost_target_mflops):
            raise ConfigError(f"--sampler and the cost target are for --method gtn, not "
                              f"{self.method}")
        if self.method != "gtn" and (self.sandwich or self.inplace_distill):
            raise ConfigError(f"--sandwich and --inplace-distill are for --method gtn, not "
                              f"{self.method}")
        checks = [(self.eval_paths >= 1, f"eval_paths must be >= 1, got {self.eval_paths}"),
                  (self.eval_recalibration_batches >= 0, "eval_recalibration_batches must "
                   f"be >= 0, got {self.eval_recalibration_batches}"),
                  (self.eval_paths_every >= 1, "eval_paths_every must be >= 1, got "
                   f"{self.eval_paths_every}"),
                  (self.inplace_distill >= 0, "inplace_distill must be >= 0, got "
                   f"{self.inplace_distill}"),
                  (self.arch_lr > 0, f"arch_lr must be > 0, got {self.arch_lr}")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.train.epochs:
            raise ConfigError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if self.warmup_epochs and not (self.pretrained or self.teacher_weights):
            raise ConfigError("--warmup-epochs freezes a pretrained teacher while the branches "
                              "learn: give --pretrained or --teacher-weights")
        if self.method == "standard" and self.warmup_epochs:
            raise ConfigError("warm-up freezes the teacher while branches learn: it is for "
                              "sftn and gtn")


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
