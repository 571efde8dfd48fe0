"""What a distillation run depends on: :class:`DistillRunConfig` (``gtn-nas distill``'s
options, the run's ``config.yaml``) and the students' recipe.

Kept apart from :mod:`gtn_nas.distill.jobs` (which imports torch) so that the command line
builds its flags from these fields without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gtn_nas.config import DataConfig, option, upgrade_data_keys
from gtn_nas.errors import ConfigError
from gtn_nas.train_config import TrainConfig


def student_recipe() -> TrainConfig:
    """The GTN supplement's student recipe: SGD lr 0.05, momentum 0.9, wd 5e-4, batch 64,
    cosine annealing over 240 epochs."""
    return TrainConfig(epochs=240, lr=0.05, schedule="cosine")


@dataclass
class DistillRunConfig:
    """Everything a distillation run depends on (``config.yaml`` of the run directory)."""

    teacher: str | None = option(None, help="teacher.pt (from train-teacher or gtn-nas run)")
    students: tuple[str, ...] = option((), help="preset names, sample files and/or search "
                                                "output directories")
    method: str = option("kd", help=(
        "kd (default), dkd, fitnets, at, gpd; without a teacher: none (plain CE) or ls (label "
        "smoothing); `gtn-nas list distillers` shows the installed ones"))
    method_options: dict[str, Any] = option(factory=dict, flag="--option", help=(
        "method option (e.g. temperature=2, warmup_epochs=5); repeatable"))
    teacher_mode: Literal["eval", "train"] = option("eval", help=(
        "the teacher's mode while it teaches (default: {default})"))
    data: DataConfig = field(default_factory=DataConfig)
    labelled: int | None = option(None, null="all", metavar="N|all", help=(
        "only this many training images keep their labels (the images a --limit of it would "
        "train on); kd, fitnets and at also learn from the rest through the teacher, none and "
        "ls train on the labelled (default: all)"))
    space: str | None = option(None, help="space of preset names; names a plugin file to trust "
                                          "it")
    width_mult: float = option(0.25, help="width of preset students (default {default})")
    seeds: tuple[int, ...] = option((0,), comma=True, help="comma-separated seeds (default: "
                                                           "{default})")
    baseline: str | None = option(None, help=(
        "the --out of a run of the same students with --method none or ls: says which students "
        "the teacher cannot help (its test top-1 not above theirs alone)"))
    export: bool = option(True, help="skip the ONNX export (by default each student is exported "
                                     "and checked against PyTorch)")
    opset: int = option(17, help="ONNX opset of the export (default: {default})")
    train: TrainConfig = field(default_factory=student_recipe)

    upgrade_keys = staticmethod(upgrade_data_keys)  # files before the data section

    def validate(self) -> None:
        from gtn_nas.distill.distillers import DISTILLERS, TEACHERLESS, UNLABELLED_IMAGES

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
            if self.data.limit is not None and self.labelled >= self.data.limit:
                raise ConfigError(f"--labelled {self.labelled} must be below --limit "
                                  f"{self.data.limit} (the rest are the unlabelled images)")
            if self.method not in (*TEACHERLESS, *UNLABELLED_IMAGES):
                raise ConfigError(f"method {self.method} needs every image's label; with "
                                  f"--labelled use {', '.join(UNLABELLED_IMAGES)} (or "
                                  f"{' / '.join(TEACHERLESS)}, trained on the labelled images)")
        if self.teacher is None and self.method not in (*TEACHERLESS, "gpd"):
            raise ConfigError(f"method {self.method} needs --teacher (a teacher.pt); "
                              f"without a teacher use --method none, ls or gpd")
