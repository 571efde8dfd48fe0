"""What ``gtn-nas run`` depends on: the stages' settings (:class:`TeacherStage`,
:class:`SearchStage`, :class:`DistillStage`) in one :class:`RunConfig`, read from YAML by
:func:`load_run_config` (the run's ``config.yaml``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from gtn_nas.config import (DataConfig, check_finite, from_mapping, merge_overrides, option,
                            read_yaml, upgrade_data_keys)
from gtn_nas.errors import ConfigError
from gtn_nas.search.selection import HalvingConfig
from gtn_nas.train_config import TrainConfig

STAGES = ("teacher", "search", "distill", "deploy", "report")
"""The run's stages, in order (``--stages``)."""


def _teacher_train() -> TrainConfig:
    # GTN fine-tuning of the pre-trained teacher: a tenth of the pre-training's learning rate
    # (0.05 cost the digits teacher 1.1 points of test top-1, docs/BENCHMARKS.md)
    return TrainConfig(epochs=6, lr=0.01, schedule="cosine", progress=False)


def _pretrain() -> TrainConfig:
    return TrainConfig(epochs=30, schedule="cosine", progress=False)


def _student_train() -> TrainConfig:
    return TrainConfig(epochs=10, schedule="cosine", progress=False)


@dataclass
class TeacherStage:
    """The teacher stage's settings (see ``gtn-nas train-teacher``)."""

    method: Literal["standard", "sftn", "gtn"] = "gtn"
    teacher: str = "resnet32"
    teacher_options: dict[str, Any] = field(default_factory=dict)
    space: str = option("resnet_supernet", help="the teacher's branch space (default: "
                                                "{default}; a plugin file to trust it)")
    width_mult: float = 0.25
    sampler: str = option("uniform", help="GTN sampler: uniform, learned or adversarial "
                                          "(default: {default})")
    alpha: float | None = None   # branch KL weight; None: 0.3 when fine-tuning a pre-trained
                                 # teacher (keeps its accuracy), else the dataset's default
    # 2 logged paths per epoch: diagnostics only, 8 cost ~2x the fine-tuning's time
    options: dict[str, Any] = field(default_factory=lambda: {"eval_paths": 2})
    train: TrainConfig = field(default_factory=_teacher_train)
    pretrain: bool = True
    pretrain_train: TrainConfig = field(default_factory=_pretrain)
    warmup_epochs: int | None = None

    def resolved_warmup(self) -> int:
        """Epochs of ``train`` whose branches learn with the pretrained teacher frozen:
        ``warmup_epochs``, else half of them (SFTN's rule for pretrained teachers); none
        without pre-training or for a standard teacher."""
        if not self.pretrain or self.method == "standard":
            return 0
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return self.train.epochs // 2


@dataclass
class SearchStage:
    """The search stage's settings (see ``gtn-nas search``).

    ``budgets``: ``auto`` uses a profile's own budgets where its input is the data's, else
    each device's latency percentiles of ``budget_students`` random students
    (:mod:`gtn_nas.search.budgets`). ``select``: ``trained`` (the default) picks each tier's
    student by validation accuracy after training its best proposals by successive halving
    on the distill stage's recipe (``halving``); ``proxy`` takes the best-scored one.
    ``score`` ranks the proposals (auto: FLOPs).
    """

    hw: tuple[str, ...] = option(("host_cpu",), repeat=True, help=(
        "extra hardware profile to search for (host_cpu always runs); repeatable"))
    budget_evals: int = option(200, help="search candidates per device (default: {default})")
    strategy: str = "evolution"
    budgets: Literal["auto", "profile", "latency"] = "auto"
    budget_students: int = 100
    latency: Literal["auto", "table", "measure", "estimate"] = "auto"
    score: str = "auto"          # auto (flops), branch, flops, params, synflow, naswot, short
    select: Literal["trained", "proxy"] = "trained"
    halving: HalvingConfig = field(default_factory=HalvingConfig)


@dataclass
class DistillStage:
    """The distillation stage's settings (see ``gtn-nas distill``)."""

    method: str = option("kd", help="distiller: kd (default), dkd, fitnets, at, gpd")
    options: dict[str, Any] = field(default_factory=dict)
    # per-method recipes for short schedules, from bench/kd_regime.py's sweep (chosen on
    # validation; docs/BENCHMARKS.md, "Where distillation helps"); ``options`` override them
    recipes: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "kd": {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5},
        "dkd": {"beta": 2.0}})
    baselines: tuple[str, ...] = ("none", "ls")
    baseline_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: tuple[int, ...] = option((0,), comma=True, help="comma-separated student seeds "
                                                           "(default: {default})")
    train: TrainConfig = field(default_factory=_student_train)
    labelled: int | None = option(250, null="all", metavar="N|all", help=(
        "labelled images the students learn from (default: {default}; through the teacher "
        "they also learn from the other training images); all: every label, what dkd and gpd "
        "need"))
    """Labelled training images the students learn from (the first of the teacher's,
    stratified); through the teacher (``kd``, ``fitnets``, ``at``) they also learn from every
    other training image, unlabelled: the setting where a teacher has most to give (its own
    labels are all of them). None: every label (what DKD and GPD need)."""


@dataclass
class RunConfig:
    """Every stage's settings: what ``--config FILE.yaml`` holds (``examples/configs/``)."""

    data: DataConfig = field(default_factory=DataConfig)
    seed: int = option(0, help="seeds every stage (default: {default})")
    teacher: TeacherStage = field(default_factory=TeacherStage)
    search: SearchStage = field(default_factory=SearchStage)
    distill: DistillStage = field(default_factory=DistillStage)

    upgrade_keys = staticmethod(upgrade_data_keys)  # files before the data section

    def validate(self) -> None:
        if not self.search.hw:
            raise ConfigError("search.hw: name at least one hardware profile")
        for name, train in (("teacher.train", self.teacher.train),
                            ("teacher.pretrain_train", self.teacher.pretrain_train),
                            ("distill.train", self.distill.train)):
            if train.devices > 1:  # Lightning starts its processes once per command
                raise ConfigError(f"{name}.devices {train.devices}: gtn-nas run trains in one "
                                  f"process; for several devices run its stages as commands "
                                  f"(train-teacher, then distill with one job per command)")
        self.search.halving.validate()
        if self.search.budget_students < 4:
            raise ConfigError(f"search.budget_students must be >= 4, got "
                              f"{self.search.budget_students}")
        if self.search.budget_evals < 6:
            raise ConfigError(f"search.budget_evals must be >= 6 (3 tiers), got "
                              f"{self.search.budget_evals}")
        self.teacher.train.validate()
        self.teacher.pretrain_train.validate()
        self.distill.train.validate()
        from gtn_nas.distill.distillers import TEACHERLESS, UNLABELLED_IMAGES, method_options

        if self.distill.method in TEACHERLESS:
            raise ConfigError(f"distill.method {self.distill.method} is a baseline; choose a "
                              f"distiller (kd, dkd, fitnets, at, gpd)")
        labelled = self.distill.labelled
        if labelled is not None:
            if isinstance(labelled, bool) or not isinstance(labelled, int) or labelled < 1:
                raise ConfigError(f"distill.labelled must be a positive number of images or "
                                  f"null (every label), got {labelled!r}")
            if self.distill.method not in UNLABELLED_IMAGES:
                raise ConfigError(f"distill.labelled {labelled}: method {self.distill.method} "
                                  f"needs every image's label; set distill.labelled: null "
                                  f"(--labelled all) or use {', '.join(UNLABELLED_IMAGES)}")
            if self.data.limit is not None and labelled >= self.data.limit:
                raise ConfigError(f"distill.labelled {labelled} must be below data.limit "
                                  f"{self.data.limit} (the rest are the students' unlabelled "
                                  f"images)")
        for name in self.distill.baselines:
            if name not in TEACHERLESS:
                raise ConfigError(f"distill.baselines: '{name}' is not a teacherless method "
                                  f"(choose from {', '.join(TEACHERLESS)})")
        merged = {**self.distill.recipes.get(self.distill.method, {}), **self.distill.options}
        for key in merged:
            if key not in method_options(self.distill.method):
                raise ConfigError(f"distill: method {self.distill.method} has no option "
                                  f"'{key}' (options: "
                                  f"{', '.join(method_options(self.distill.method))})")
        if self.teacher.warmup_epochs and (not self.teacher.pretrain
                                           or self.teacher.method == "standard"):
            raise ConfigError("teacher.warmup_epochs freezes a pre-trained teacher while its "
                              "branches learn: it needs teacher.pretrain and method sftn or gtn")
        if self.distill.baselines and "none" not in self.distill.baselines:
            raise ConfigError("distill.baselines must include none (training alone: the "
                              "student every distilled one is compared with)")
        if len(set(self.distill.baselines)) != len(self.distill.baselines):
            raise ConfigError(f"distill.baselines repeats a method: "
                              f"{list(self.distill.baselines)}")
        for name, options in self.distill.baseline_options.items():
            if name not in self.distill.baselines:
                raise ConfigError(f"distill.baseline_options: '{name}' is not in "
                                  f"distill.baselines")
            for key in options:
                if key not in method_options(name):
                    raise ConfigError(f"distill.baseline_options.{name}: method {name} has "
                                      f"no option '{key}' (options: "
                                      f"{', '.join(method_options(name)) or 'none'})")
        warmup = self.teacher.resolved_warmup()
        if warmup < 0 or (warmup and warmup >= self.teacher.train.epochs):
            raise ConfigError(f"teacher.warmup_epochs must be in [0, teacher.train.epochs), "
                              f"got {warmup}")


def load_run_config(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None
                    ) -> RunConfig:
    """A :class:`RunConfig` from a YAML file (sections ``data``, ``teacher``, ``search``,
    ``distill``; the flat data keys of older files are read into ``data``) with ``overrides``
    (dotted keys such as ``"teacher.train.epochs"`` or ``"data.limit"``; None values skipped,
    :data:`gtn_nas.config.NULL` sets null) applied on top."""
    data: dict[str, Any] = {}
    where = "run config"
    if path is not None:
        loaded = read_yaml(path, "config file")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of options")
        data = dict(loaded or {})
        where = str(path)
    nested: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        node = nested
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"overrides: {key} is given both as a value and as a section")
        node[last] = value
    data = merge_overrides(RunConfig, data, nested, where)
    config = from_mapping(RunConfig, data, where)
    check_finite(config, where)
    config.validate()
    return config
