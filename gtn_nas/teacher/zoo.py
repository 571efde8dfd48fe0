"""Teacher zoo: classification networks cut into 4 consecutive blocks at stage boundaries.

Every teacher is a :class:`TeacherNet` whose ``blocks`` run one after another; block 4 ends with
the logits. The outputs of blocks 1, 2 and 3 (the three *cuts*) are where student branches are
grafted onto the teacher (SFTN, GTN). Teachers are built by name from :data:`TEACHERS`:

=============== ============================================ ===========================
name            architecture                                 cuts after
=============== ============================================ ===========================
resnet8x4       CIFAR ResNet, depth 8, widths 32/64/128/256  stem+stage1, stage2, stage3
resnet32        CIFAR ResNet, depth 32, widths 16/16/32/64   stem+stage1, stage2, stage3
resnet32x4      CIFAR ResNet, depth 32, widths 32/64/128/256 stem+stage1, stage2, stage3
wrn16_2         WideResNet 16-2 (pre-activation)             stem+stage1, stage2, stage3
wrn40_2         WideResNet 40-2 (pre-activation)             stem+stage1, stage2, stage3
efficientnet_b0 torchvision EfficientNet-B0                  features[0:3], [3], [4:6]
tiny            three conv stages 8/16/32 (for tests)        each stage
=============== ============================================ ===========================

Installed packages add teachers through the entry-point group ``gtn_nas.teachers``
(:data:`ENTRY_POINT_GROUP`): each names a builder ``builder(num_classes, in_channels,
**keyword-only options) -> TeacherNet``, imported only when its name is asked for;
:func:`gtn_nas.testing.check_teacher` checks one the way the built-ins are checked.

Weights are never downloaded: ``pretrained=True`` (EfficientNet-B0 only) reads torch hub's cache
file, and ``weights_path`` reads any ``torch.save``'d state_dict with ``weights_only=True``.

Example:
    >>> import torch
    >>> teacher = build_teacher("tiny", num_classes=10)
    >>> teacher.feature_shapes(32)
    [(8, 32, 32), (16, 16, 16), (32, 8, 8)]
    >>> logits, features = teacher.forward_with_features(torch.zeros(2, 3, 32, 32))
    >>> tuple(logits.shape), len(features)
    ((2, 10), 3)
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from gtn_nas.errors import ConfigError
from gtn_nas.teacher import efficientnet, resnets  # noqa: F401  (register the families)
from gtn_nas.teacher.net import TEACHERS, TeacherNet, _check_size, _load_checked

ENTRY_POINT_GROUP = "gtn_nas.teachers"
"""Entry-point group of teacher plugins (the built-ins are declared in it too)."""

TEACHERS.use_entry_point_group(ENTRY_POINT_GROUP)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------



def teacher_names() -> list[str]:
    """All registered teacher names, sorted.

    Example:
        >>> "resnet32x4" in teacher_names()
        True
    """
    return TEACHERS.names()


def build_teacher(name: str, num_classes: int, in_channels: int = 3, *, pretrained: bool = False,
                  weights_path: str | os.PathLike | None = None, **options: object) -> TeacherNet:
    """Builds the teacher ``name`` with fresh (or loaded) weights.

    Args:
        name: A name from :func:`teacher_names`.
        num_classes: Number of output logits (>= 1).
        in_channels: Channels of the input images (>= 1).
        pretrained: Start from ImageNet weights read from a local file (``efficientnet_b0``
            only): torch hub's cache file, or ``weights_path`` if given. Never downloads.
        weights_path: With ``pretrained``, the ImageNet file to read; without it, a full
            state_dict of this teacher to load (e.g. a trained ``teacher.pt``).
        **options: Builder-specific options (``tiny`` takes ``norm="bn" | "none"``).

    Returns:
        The teacher, in training mode.

    Raises:
        ConfigError: Unknown name or option, bad sizes, missing or mismatching weights file.

    Example:
        >>> build_teacher("tiny", num_classes=4, in_channels=1, norm="none").in_channels
        1
        >>> build_teacher("tiny", num_classes=4, width=2)
        Traceback (most recent call last):
        ...
        gtn_nas.errors.ConfigError: teacher 'tiny' has no option 'width' (allowed: norm)
    """
    builder = TEACHERS.get(name)
    _check_size("num_classes", num_classes)
    _check_size("in_channels", in_channels)
    allowed = [p.name for p in inspect.signature(builder).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY]
    for option in options:
        if option not in allowed:
            raise ConfigError(f"teacher '{name}' has no option '{option}' "
                              f"(allowed: {', '.join(allowed) or 'none'})")
    model = builder(num_classes, in_channels, **options)
    model.options = dict(options)  # recorded so a saved teacher rebuilds the same way
    if pretrained:
        model.load_pretrained(weights_path)
    elif weights_path is not None:
        model.load_weights(weights_path)
    return model


TEACHER_FORMAT = "gtn-nas-teacher/1"


def save_teacher(path: str | os.PathLike, teacher: TeacherNet, **metadata: Any) -> Path:
    """Saves ``teacher`` as name + sizes + ``state_dict`` (+ ``metadata``), atomically.

    The file loads with :func:`load_teacher`, and as plain weights with ``weights_path``.
    """
    from gtn_nas.fileio import atomic_torch_save

    payload = {"format": TEACHER_FORMAT, "teacher": teacher.name,
               "num_classes": teacher.num_classes, "in_channels": teacher.in_channels,
               "options": dict(getattr(teacher, "options", {})),
               "state_dict": teacher.state_dict(), **metadata}
    return atomic_torch_save(payload, path)


def load_teacher(path: str | os.PathLike) -> tuple[TeacherNet, dict[str, Any]]:
    """Rebuilds a teacher saved by :func:`save_teacher`; returns it and the file's metadata.

    Raises:
        ConfigError: missing, corrupt or foreign file.
    """
    from gtn_nas.fileio import load_checkpoint

    path = Path(path)
    payload = load_checkpoint(path, TEACHER_FORMAT, "teacher checkpoint")
    teacher = build_teacher(payload["teacher"], num_classes=payload["num_classes"],
                            in_channels=payload["in_channels"], **payload.get("options", {}))
    _load_checked(teacher, payload["state_dict"], path)
    metadata = {k: v for k, v in payload.items()
                if k not in ("format", "teacher", "num_classes", "in_channels", "options",
                             "state_dict")}
    return teacher, metadata
