"""Distillers: a frozen teacher and a student trained from it, on the engine's method contract.

Every distiller is an ``nn.Module`` whose ``forward(x, y)`` returns ``{"loss", "logits" (the
student's), "teacher_logits", <named terms>}`` (so the engine logs the student's and the
teacher's accuracy), whose ``student`` is the plain student being trained, and whose
:meth:`Distiller.export_student` gives the plain student to save and export. The loss
functions themselves are pure and live in :mod:`gtn_nas.distill.losses`.

============ ==================================================================================
method       loss (defaults: docs/methods.md section 5, from the methods' official code)
============ ==================================================================================
``kd``       ``0.1 * CE + 0.9 * T^2 * KL(teacher || student)`` at ``T = 4`` (Hinton)
``dkd``      ``CE + min(epoch / W, 1) * T^2 * (1 * TCKD + beta * NCKD)`` at ``T = 4`` (Zhao et al.);
             W = 1/12 of the epochs (the paper's 20 of 240) unless ``warmup_epochs`` is given
``fitnets``  ``CE + 100 * mean_cuts MSE(adapter(f_s), f_t)`` with learned 1x1 adapters (Romero et al.)
``at``       ``CE + 1000 * sum_cuts AT(f_s, f_t)``, attention maps with ``p = 2`` (Zagoruyko et al.)
``ls``       ``CE`` with label smoothing ``0.1``, no teacher: the control that separates "soft
             labels" from "this teacher" (Yuan et al. 2020)
``none``     ``CE`` only: the no-teacher baseline
``gpd``      GPD's dynamic teacher (:mod:`gtn_nas.distill.gpd.method`), with or without a static teacher
============ ==================================================================================

The teacher never receives gradient; it runs in eval mode (``teacher_mode="eval"``, the
default) or, with ``teacher_mode="train"``, with batch statistics during training steps. It sees
exactly the student's (augmented) batch. In eval mode a distiller runs the student alone
(``{"loss": CE, "ce", "logits"}``): validation scores the student, and the frozen teacher's own
accuracy is computed once per job by the caller, not every epoch. Student
features for FitNets and AT are taken at the same 3 cuts as the teacher's (after the space's
blocks 1, 2, 3); a student feature of another resolution is average-pooled (or bilinearly
resized) to the teacher's.

Example:
    >>> from gtn_nas.teacher.zoo import build_teacher
    >>> from gtn_nas.space.plugins import build_space
    >>> space = build_space("resnet_supernet", width_mult=0.25, num_classes=10, input_size=16)
    >>> student = space.freeze(space.preset("s_nas_s"), seed=0)
    >>> method = build_distiller("kd", student, build_teacher("tiny", num_classes=10),
    ...                          space.block_units)
    >>> out = method(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    >>> sorted(out)
    ['ce', 'kd', 'logits', 'loss', 'teacher_logits']
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.profiler import record_function

from gtn_nas.method import TrainingMethod
from gtn_nas.errors import ConfigError
from gtn_nas.distill.losses import (attention_transfer_loss, dkd_loss, dkd_warmup_factor, hint_loss,
                            kd_loss, labelled_cross_entropy)
from gtn_nas.registry import Registry

TeacherMode = Literal["eval", "train"]

ENTRY_POINT_GROUP = "gtn_nas.distillers"
"""Entry-point group of distiller plugins: each names a factory (usually a
:class:`Distiller` subclass) called as ``factory(student, teacher, block_units, teacher_mode,
**options)`` whose keyword-only parameters are its ``--option`` names
(:func:`gtn_nas.testing.check_distiller` checks one the way the built-ins are checked)."""

DISTILLERS: Registry[Callable[..., "Distiller"]] = Registry("distillation method",
                                                             ENTRY_POINT_GROUP)
"""Method name -> distiller class (``kd``, ``dkd``, ``fitnets``, ``at``, ``ls``, ``none``,
``gpd``; installed packages add theirs through :data:`ENTRY_POINT_GROUP`)."""

TEACHERLESS = ("none", "ls")
"""Methods that train a student without a teacher: the baselines a distilled student must beat."""

UNLABELLED_IMAGES = ("kd", "fitnets", "at")
"""Methods whose teacher terms need no label, so they can learn from unlabelled images too
(DKD splits the target class from the rest, GPD's dynamic teacher trains on labels)."""


def student_features(student: nn.Module, block_units: Sequence[Sequence[str]],
                     x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits of a frozen student and its features after blocks 1, 2, 3 (the teacher's cuts).

    Units a student dropped are absent from it; a block whose units were all dropped passes its
    input on, so its cut feature is the previous one.
    """
    modules = dict(student.named_children())
    features = []
    for index, group in enumerate(block_units):
        for name in group:
            if name in modules:
                x = modules[name](x)
        if index < len(block_units) - 1:
            features.append(x)
    return x, features


def match_resolution(feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``feature`` at spatial ``size``: average-pooled when larger, bilinear when smaller."""
    if tuple(feature.shape[-2:]) == tuple(size):
        return feature
    if feature.shape[-2] >= size[0] and feature.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(feature, size)
    return F.interpolate(feature, size=size, mode="bilinear", align_corners=False)


class Distiller(TrainingMethod):
    """Base of every distiller: holds the student and the frozen teacher.

    Args:
        student: The plain student (``space.freeze(sample)``); trained in place.
        teacher: A :class:`~gtn_nas.teacher.zoo.TeacherNet`, or None (``none``; ``gpd`` from
            scratch). Its parameters stop requiring gradients.
        block_units: The space's 4 groups of unit names (where the student's cuts are).
        teacher_mode: ``eval`` (default) or ``train`` (batch statistics in training steps).
    """

    needs_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None,
                 block_units: Sequence[Sequence[str]] = (), teacher_mode: TeacherMode = "eval"
                 ) -> None:
        super().__init__()
        if teacher_mode not in ("eval", "train"):
            raise ConfigError(f"teacher_mode must be eval or train, got {teacher_mode!r}")
        if self.needs_teacher and teacher is None:
            raise ConfigError(f"method {self.method_name} needs a teacher (--teacher CKPT)")
        self.student = student
        self.teacher = teacher
        self.block_units = tuple(tuple(group) for group in block_units)
        self.teacher_mode = teacher_mode
        self.epoch = 1  # 1-based, as DKD's warm-up counts
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.train()

    @property
    def method_name(self) -> str:
        # among the loaded entries only: asking a name never imports another plugin
        return DISTILLERS.name_of(type(self)) or type(self).__name__

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.train(mode and self.teacher_mode == "train")
        return self

    def param_groups(self) -> list[dict[str, Any]]:
        """The student's parameters (and any adapters): never the teacher's."""
        frozen = {id(p) for p in self.teacher.parameters()} if self.teacher is not None else set()
        return [{"params": [p for p in self.parameters()
                            if p.requires_grad and id(p) not in frozen]}]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch + 1

    def teacher_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The teacher's logits and cut features, without gradient."""
        with torch.no_grad(), record_function("distill/teacher_forward"):
            return self.teacher.forward_with_features(x)

    def export_student(self) -> nn.Module:
        """The plain student to save and export (its architecture is the frozen sample's)."""
        return self.student

    def student_only(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """The student's logits and plain CE (what validation needs; no teacher runs)."""
        logits = self.student(x)
        ce = F.cross_entropy(logits, y)
        return {"loss": ce, "ce": ce, "logits": logits}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        raise NotImplementedError


@DISTILLERS.register("none")
class NoTeacher(Distiller):
    """Plain cross-entropy: the baseline a distilled student must beat."""

    needs_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 block_units: Sequence[Sequence[str]] = (), teacher_mode: TeacherMode = "eval"
                 ) -> None:
        super().__init__(student, None, block_units, teacher_mode)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        return self.student_only(x, y)


@DISTILLERS.register("ls")
class LabelSmoothing(Distiller):
    """No teacher, smoothed targets: ``CE`` against ``(1 - eps) * one_hot + eps / K``.

    The control for KD (which acts partly as learned label smoothing): a distilled student that
    beats training alone but not this one gained soft labels, not this teacher's knowledge.
    Validation scores the plain CE.
    """

    needs_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 block_units: Sequence[Sequence[str]] = (), teacher_mode: TeacherMode = "eval",
                 *, smoothing: float = 0.1) -> None:
        super().__init__(student, None, block_units, teacher_mode)
        if not 0 <= smoothing < 1:
            raise ConfigError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if not self.training:
            return self.student_only(x, y)
        logits = self.student(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.smoothing)
        return {"loss": loss, "ls_ce": loss, "logits": logits}


@DISTILLERS.register("kd")
class KDDistiller(Distiller):
    """Hinton KD (:func:`gtn_nas.distill.losses.kd_loss`)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None,
                 block_units: Sequence[Sequence[str]] = (), teacher_mode: TeacherMode = "eval",
                 *, temperature: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9
                 ) -> None:
        super().__init__(student, teacher, block_units, teacher_mode)
        _check_positive("temperature", temperature)
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if not self.training:
            return self.student_only(x, y)
        t_logits = self.teacher_outputs(x)[0]
        logits = self.student(x)
        losses = kd_loss(logits, t_logits, y, self.temperature, self.ce_weight, self.kd_weight)
        return {**losses, "logits": logits, "teacher_logits": t_logits}


@DISTILLERS.register("dkd")
class DKDDistiller(Distiller):
    """Decoupled KD with its linear warm-up (:func:`gtn_nas.distill.losses.dkd_loss`).

    ``warmup_epochs`` None (the default) scales the paper's 20-of-240-epoch warm-up to the
    run: ``round(epochs * warmup_fraction)`` epochs (at least 1, i.e. no warm-up), counted
    from 1 as mdistiller does. A fixed count longer than the run would keep the distillation
    term below full weight to the end.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None,
                 block_units: Sequence[Sequence[str]] = (), teacher_mode: TeacherMode = "eval",
                 *, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 ce_weight: float = 1.0, warmup_epochs: int | None = None,
                 warmup_fraction: float = 20 / 240) -> None:
        super().__init__(student, teacher, block_units, teacher_mode)
        _check_positive("temperature", temperature)
        if warmup_epochs is not None and warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if not 0 <= warmup_fraction <= 1:
            raise ConfigError(f"warmup_fraction must be in [0, 1], got {warmup_fraction}")
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.ce_weight, self.warmup_epochs = ce_weight, warmup_epochs
        self.warmup_fraction = warmup_fraction
        self.run_warmup = warmup_epochs  # a fraction is resolved by on_epoch_start

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        super().on_epoch_start(epoch, epochs)
        self.run_warmup = self.warmup_epochs if self.warmup_epochs is not None else max(
            1, round(epochs * self.warmup_fraction))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if not self.training:
            return self.student_only(x, y)
        t_logits = self.teacher_outputs(x)[0]
        logits = self.student(x)
        if self.run_warmup is None:
            raise RuntimeError("dkd: call on_epoch_start(epoch, epochs) first (the warm-up is "
                               "a fraction of the run), or give warmup_epochs")
        factor = dkd_warmup_factor(self.epoch, self.run_warmup)
        losses = dkd_loss(logits, t_logits, y, self.alpha, self.beta, self.temperature,
                          self.ce_weight, factor)
        return {**losses, "logits": logits, "teacher_logits": t_logits}


class _FeatureDistiller(Distiller):
    """Shared by FitNets and AT: teacher and student features at the cuts ``cuts`` (1-based)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None,
                 block_units: Sequence[Sequence[str]], teacher_mode: TeacherMode,
                 cuts: Sequence[int], weight: float, input_size: int) -> None:
        super().__init__(student, teacher, block_units, teacher_mode)
        if len(self.block_units) != 4:
            raise ConfigError(f"method {self.method_name} needs the space's 4 blocks")
        cuts = tuple(int(c) for c in cuts)
        if not cuts or any(c not in (1, 2, 3) for c in cuts):
            raise ConfigError(f"cuts must be a non-empty subset of 1, 2, 3, got {list(cuts)}")
        self.cuts, self.weight = cuts, weight
        self.teacher_shapes = teacher.feature_shapes(input_size)
        with torch.no_grad():
            was = student.training
            student.eval()
            x = torch.zeros(1, teacher.in_channels, input_size, input_size)
            self.student_shapes = [tuple(f.shape[1:])
                                   for f in student_features(student, self.block_units, x)[1]]
            student.train(was)

    def cut_features(self, x: torch.Tensor):
        t_logits, t_feats = self.teacher_outputs(x)
        logits, s_feats = student_features(self.student, self.block_units, x)
        pairs = [(s_feats[c - 1], t_feats[c - 1]) for c in self.cuts]
        return logits, t_logits, pairs


@DISTILLERS.register("fitnets")
class FitNetsDistiller(_FeatureDistiller):
    """FitNets hints: ``CE + weight * mean over cuts of MSE(adapter(f_s), f_t)``.

    Each cut has its own learned 1x1 convolution + BN from the student's channels to the
    teacher's (RepDistiller's ``ConvReg`` for equal sizes).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None,
                 block_units: Sequence[Sequence[str]] = (), teacher_mode: TeacherMode = "eval",
                 *, cuts: Sequence[int] = (1, 2, 3), weight: float = 100.0,
                 ce_weight: float = 1.0, input_size: int = 32) -> None:
        super().__init__(student, teacher, block_units, teacher_mode, cuts, weight, input_size)
        self.ce_weight = ce_weight
        self.adapters = nn.ModuleList()
        for c in self.cuts:
            s_shape, t_shape = self.student_shapes[c - 1], self.teacher_shapes[c - 1]
            if len(s_shape) != 3 or len(t_shape) != 3:
                raise ConfigError(f"fitnets needs convolutional features at cut {c}; got "
                                  f"student {s_shape}, teacher {t_shape}")
            self.adapters.append(nn.Sequential(
                nn.Conv2d(s_shape[0], t_shape[0], 1, bias=False), nn.BatchNorm2d(t_shape[0])))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if not self.training:
            return self.student_only(x, y)
        logits, t_logits, pairs = self.cut_features(x)
        hints = [hint_loss(adapter(match_resolution(f_s, f_t.shape[-2:])), f_t)
                 for adapter, (f_s, f_t) in zip(self.adapters, pairs)]
        hint = torch.stack(hints).mean()
        ce = labelled_cross_entropy(logits, y)
        return {"loss": self.ce_weight * ce + self.weight * hint, "ce": ce, "hint": hint,
                "logits": logits, "teacher_logits": t_logits}


@DISTILLERS.register("at")
class ATDistiller(_FeatureDistiller):
    """Attention transfer: ``CE + weight * sum over cuts of AT(f_s, f_t)`` (p = 2)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None,
                 block_units: Sequence[Sequence[str]] = (), teacher_mode: TeacherMode = "eval",
                 *, cuts: Sequence[int] = (1, 2, 3), weight: float = 1000.0, p: int = 2,
                 ce_weight: float = 1.0, input_size: int = 32) -> None:
        super().__init__(student, teacher, block_units, teacher_mode, cuts, weight, input_size)
        self.p, self.ce_weight = p, ce_weight
        for c in self.cuts:
            if len(self.student_shapes[c - 1]) != 3 or len(self.teacher_shapes[c - 1]) != 3:
                raise ConfigError(f"at needs convolutional features at cut {c}")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if not self.training:
            return self.student_only(x, y)
        logits, t_logits, pairs = self.cut_features(x)
        terms = [attention_transfer_loss(match_resolution(f_s, f_t.shape[-2:]), f_t, self.p)
                 for f_s, f_t in pairs]
        at = torch.stack(terms).sum()
        ce = labelled_cross_entropy(logits, y)
        return {"loss": self.ce_weight * ce + self.weight * at, "ce": ce, "at": at,
                "logits": logits, "teacher_logits": t_logits}


def _gpd_factory(student: nn.Module, teacher: nn.Module | None,
                 block_units: Sequence[Sequence[str]] = (), teacher_mode: TeacherMode = "eval",
                 **options: Any) -> nn.Module:
    """GPD (:class:`gtn_nas.distill.gpd.method.GPDDistiller`); works with or without a teacher."""
    from gtn_nas.distill.gpd.method import GPDDistiller

    if teacher is not None and teacher_mode == "eval":
        teacher.eval()
    return GPDDistiller(student, teacher, **options)


DISTILLERS.add("gpd", _gpd_factory)


def method_options(method: str) -> list[str]:
    """The keyword options a method takes (for messages and config validation)."""
    factory = DISTILLERS.get(method)
    if method == "gpd":
        from gtn_nas.distill.gpd.method import GPDDistiller

        factory = GPDDistiller
    target = factory.__init__ if inspect.isclass(factory) else factory
    return [p.name for p in inspect.signature(target).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY]


def build_distiller(method: str, student: nn.Module, teacher: nn.Module | None,
                    block_units: Sequence[Sequence[str]] = (), *,
                    teacher_mode: TeacherMode = "eval",
                    options: Mapping[str, Any] | None = None) -> nn.Module:
    """The distiller ``method`` around ``student`` and ``teacher``.

    Args:
        method: A name of :data:`DISTILLERS`.
        student: The plain student.
        teacher: The teacher (None for ``none`` and for ``gpd`` from scratch).
        block_units: The space's 4 groups of unit names (FitNets and AT cut the student there).
        teacher_mode: ``eval`` or ``train``.
        options: The method's keyword options (unknown ones are an error naming the allowed).

    Raises:
        ConfigError: unknown method or option, a method that needs a teacher without one.
    """
    factory = DISTILLERS.get(method)
    options = dict(options or {})
    allowed = method_options(method)
    for key in options:
        if key not in allowed:
            raise ConfigError(f"method {method} has no option '{key}' (options: "
                              f"{', '.join(allowed) or 'none'})")
    if method in TEACHERLESS and teacher is not None:
        teacher = None
    try:
        return factory(student, teacher, block_units, teacher_mode, **options)
    except TypeError as exc:
        raise ConfigError(f"method {method}: {exc}") from exc


def copy_student_state(distiller: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the exported student's ``state_dict`` (for the best-on-validation
    weights kept inside the training checkpoint)."""
    return {k: v.detach().clone() for k, v in distiller.export_student().state_dict().items()}


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
