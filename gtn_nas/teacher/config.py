"""What a teacher-training run depends on: :class:`TeacherRunConfig` (``gtn-nas
train-teacher``'s options, the run's ``config.yaml``).

Kept apart from :mod:`gtn_nas.teacher.train` (which imports torch) so that the command line
builds its flags from these fields without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from gtn_nas.config import DataConfig, option, upgrade_data_keys
from gtn_nas.errors import ConfigError
from gtn_nas.train_config import TrainConfig

METHODS = ("standard", "sftn", "gtn")


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

    method: Literal["standard", "sftn", "gtn"] = option("gtn", help="how the teacher trains "
                                                                   "(default: {default})")
    teacher: str = option("resnet32", help=(
        "teacher name (default: {default}; `gtn-nas list teachers` shows the installed ones)"))
    teacher_options: dict[str, Any] = option(factory=dict, flag="--teacher-option", help=(
        "teacher builder option (e.g. norm=none for tiny); repeatable"))
    data: DataConfig = field(default_factory=DataConfig)
    pretrained: bool = option(False, help="start from local ImageNet weights (efficientnet_b0)")
    teacher_weights: str | None = option(None, help="state_dict file to start the teacher from")
    space: str = option("resnet_supernet", help=(
        "search space for the branches (sftn, gtn; default: {default}; a plugin file to trust "
        "it)"))
    width_mult: float = option(0.25, help="width multiplier of the space (default: {default})")
    student: str | None = option(None, help="sftn: the student (a preset name or a sample file)")
    sampler: str = option("uniform", help="gtn: uniform, learned or adversarial (default: "
                                          "{default})")
    alpha: float | None = option(None, help="weight of the branch KL term (default: 3 on "
                                            "cifar100, else 1)")
    temperature: float = option(1.0, help="sftn, gtn: temperature of the branch KL term "
                                          "(default: {default})")
    warmup_epochs: int = option(0, help="epochs with the teacher frozen while the branches learn "
                                        "(default: {default})")
    arch_lr: float = option(0.02, help="gtn: Adam learning rate of the sampler (default "
                                       "{default})")
    entropy_weight: float = option(0.1, help="gtn: weight of the sampler's entropy bonus "
                                             "(default {default})")
    baseline_decay: float = option(0.9, help="gtn: decay of the sampler's moving-average loss "
                                             "baseline (default {default})")
    path_prior: str = option("student", help=(
        "gtn: student (each layer's configurations equally likely, default) or label (uniform "
        "per label)"))
    full_branch: bool | None = option(None, help=(
        "gtn: train a full-path branch from the input image (default: on for "
        "learned/adversarial samplers, off for uniform)"))
    sandwich: bool = option(False, negatable=True, help=(
        "gtn: also train the largest and smallest students each step"))
    inplace_distill: float = option(0.0, help="gtn: weight of KL(teacher || branch) for every "
                                              "branch path (default {default})")
    eval_paths: int = option(8, help="gtn: K fixed paths whose mean branch accuracy is logged "
                                     "(default {default})")
    eval_recalibration_batches: int = option(4, help=(
        "gtn: training batches recalibrating each logged path's BN statistics (default "
        "{default}; 0: shared statistics)"))
    eval_paths_every: int = option(5, help=(
        "gtn: score the logged paths every N epochs and after the last (the teacher's accuracy "
        "every epoch; default {default})"))
    cost_target_mflops: float | None = option(None, help="gtn: cost-aware sampler, expected "
                                                         "MFLOPs target")
    cost_weight: float = option(1.0, help="gtn: weight of the cost-aware sampler's cost term "
                                          "(default {default})")
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
