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

Weights are never downloaded: ``pretrained=True`` (EfficientNet-B0 only) reads torch hub's cache
file, and ``weights_path`` reads any ``torch.save``'d state_dict with ``weights_only=True``.

Example:
    >>> teacher = build_teacher("tiny", num_classes=10)
    >>> teacher.feature_shapes(32)
    [(8, 32, 32), (16, 16, 16), (32, 8, 8)]
    >>> logits, features = teacher.forward_with_features(torch.zeros(2, 3, 32, 32))
    >>> tuple(logits.shape), len(features)
    ((2, 10), 3)
"""

from __future__ import annotations

import inspect
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

import torch
from torch import nn

from gtn_nas.errors import ConfigError
from gtn_nas.registry import Registry

_log = logging.getLogger(__name__)

TeacherBuilder = Callable[..., "TeacherNet"]
"""``builder(num_classes, in_channels, **options) -> TeacherNet``; options are keyword-only."""

TEACHERS: Registry[TeacherBuilder] = Registry("teacher")
"""Teacher name -> builder. Use :func:`build_teacher` rather than calling builders directly."""


# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------


class TeacherNet(nn.Module):
    """A classifier made of exactly 4 consecutive blocks; block 4 ends with the logits.

    Args:
        name: The registry name of the teacher.
        blocks: The 4 blocks, in order.
        num_classes: Number of output logits.
        in_channels: Channels of the input images.

    Example:
        >>> net = TeacherNet("toy", [nn.Identity(), nn.Identity(), nn.Flatten(1),
        ...                          nn.Linear(3 * 4 * 4, 5)], num_classes=5, in_channels=3)
        >>> net.feature_shapes(4)
        [(3, 4, 4), (3, 4, 4), (48,)]
    """

    def __init__(self, name: str, blocks: Sequence[nn.Module], num_classes: int,
                 in_channels: int) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(f"a teacher has exactly 4 blocks, got {len(blocks)}")
        self.name = name
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch ``x`` of shape ``(N, in_channels, H, W)``."""
        for block in self.blocks:
            x = block(x)
        return x

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the outputs of blocks 1, 2 and 3 (the features at the three cuts)."""
        features: list[torch.Tensor] = []
        for block in self.blocks[:3]:
            x = block(x)
            features.append(x)
        return self.blocks[3](x), features

    def feature_shapes(self, input_size: int) -> list[tuple[int, ...]]:
        """Per-sample shapes (``(C, H, W)`` for conv teachers) at the 3 cuts for a square input.

        Found by a dry run without gradients in eval mode on one zero image; the training flag
        of every sub-module is restored afterwards.

        Args:
            input_size: Height (= width) of the input images.
        """
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
            raise ConfigError(f"input_size must be a positive integer, got {input_size!r}")
        reference = next(self.parameters(), None)
        device = reference.device if reference is not None else None
        dtype = reference.dtype if reference is not None else None
        x = torch.zeros(1, self.in_channels, input_size, input_size, device=device, dtype=dtype)
        modes = [(module, module.training) for module in self.modules()]
        try:
            self.eval()
            with torch.no_grad():
                _, features = self.forward_with_features(x)
        finally:
            for module, mode in modes:
                module.training = mode
        return [tuple(feature.shape[1:]) for feature in features]

    def load_weights(self, path: str | os.PathLike) -> None:
        """Loads a full state_dict of this teacher saved by ``torch.save`` (strict).

        The file may hold the state_dict itself or a dict with a ``"state_dict"`` or ``"model"``
        key; a ``module.`` prefix (DDP) on every key is removed. Missing, unexpected or
        mis-shaped keys raise :class:`ConfigError` naming the first few.

        Example:
            >>> import tempfile
            >>> net = build_teacher("tiny", num_classes=3)
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     torch.save(net.state_dict(), f"{tmp}/w.pt")
            ...     build_teacher("tiny", num_classes=3, weights_path=f"{tmp}/w.pt").num_classes
            3
        """
        state = self.adapt_state_dict(read_state_dict(path))
        _load_checked(self, state, Path(path))
        _log.info("teacher %s: loaded weights from %s", self.name, path)

    def load_pretrained(self, weights_path: str | os.PathLike | None = None) -> None:
        """Loads ImageNet weights (classifier dropped). Only some teachers have them."""
        raise ConfigError(
            f"teacher '{self.name}' has no pretrained weights; only "
            f"{', '.join(PRETRAINED_TEACHERS)} has ImageNet weights (or pass a trained state_dict "
            f"with weights_path / --teacher-weights)"
        )

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Renames foreign keys (e.g. torchvision's) to this teacher's; identity by default."""
        return state


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------

PRETRAINED_TEACHERS = ("efficientnet_b0",)
"""Teachers whose :meth:`TeacherNet.load_pretrained` reads ImageNet weights."""


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


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a state_dict saved by ``torch.save`` safely (``weights_only=True``, on the CPU).

    Accepts the state_dict itself or a dict holding it under ``"state_dict"`` or ``"model"``,
    and strips a ``module.`` prefix shared by every key.

    Raises:
        ConfigError: The file is missing, unreadable or holds no state_dict.
    """
    from gtn_nas.fileio import safe_torch_load

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"teacher weights file not found: {path}")
    obj = safe_torch_load(path, "teacher weights")
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if (not isinstance(obj, Mapping) or not obj
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        raise ConfigError(f"teacher weights {path} hold no state_dict (expected a dict of "
                          f"tensors, or one under a 'state_dict' or 'model' key)")
    state = dict(obj)
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def efficientnet_b0_weights_file() -> Path:
    """Where torch hub caches torchvision's ``EfficientNet_B0_Weights.IMAGENET1K_V1``.

    Example:
        >>> efficientnet_b0_weights_file().name
        'efficientnet_b0_rwightman-7f5810bc.pth'
    """
    from torchvision.models import EfficientNet_B0_Weights

    url = EfficientNet_B0_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_size(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"teacher {what} must be an integer >= 1, got {value!r}")


def _first(items: list[str], limit: int = 3) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _load_checked(model: TeacherNet, state: dict[str, torch.Tensor], source: Path,
                  optional_prefixes: tuple[str, ...] = ()) -> None:
    """Loads ``state`` after checking its keys and shapes; keys under ``optional_prefixes``
    may be absent from ``state`` (they keep their fresh values)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith(optional_prefixes)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} in file vs {tuple(v.shape)} in model"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    if mismatched:
        problems.append(f"shape {_first(mismatched)}")
    if problems:
        raise ConfigError(f"weights {source} do not match teacher '{model.name}' "
                          f"({model.num_classes} classes, {model.in_channels} input channels): "
                          + "; ".join(problems))
    model.load_state_dict(state, strict=False)


def _init_weights(model: nn.Module, zero_linear_bias: bool = False) -> None:
    """Kaiming-normal (fan_out) convolutions, BN weight 1 / bias 0, as in the CIFAR KD repos."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and zero_linear_bias:
            nn.init.zeros_(module.bias)


class _PoolHead(nn.Module):
    """Optional pre-activation, global average pool, flatten, linear classifier."""

    def __init__(self, in_features: int, num_classes: int, pre: nn.Module | None = None) -> None:
        super().__init__()
        self.pre = pre
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        return self.fc(torch.flatten(self.pool(x), 1))


# --------------------------------------------------------------------------------------------
# CIFAR ResNets (resnet8x4, resnet32, resnet32x4)
# --------------------------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    """Post-activation basic block: conv-BN-ReLU-conv-BN + shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + residual)


def _cifar_resnet(name: str, depth: int, widths: tuple[int, int, int, int], num_classes: int,
                  in_channels: int) -> TeacherNet:
    """``widths`` = (stem, stage1, stage2, stage3); ``(depth - 2) / 6`` blocks per stage."""
    n = (depth - 2) // 6

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*[_BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                               for i in range(n)])

    stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, padding=1, bias=False),
                         nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
    blocks = [
        nn.Sequential(OrderedDict(stem=stem, stage1=stage(widths[0], widths[1], 1))),
        stage(widths[1], widths[2], 2),
        stage(widths[2], widths[3], 2),
        _PoolHead(widths[3], num_classes),
    ]
    model = TeacherNet(name, blocks, num_classes, in_channels)
    _init_weights(model)
    return model


@TEACHERS.register("resnet8x4")
def resnet8x4(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """CIFAR ResNet-8x4: 1 basic block per stage, widths 32 (stem) / 64 / 128 / 256."""
    return _cifar_resnet("resnet8x4", 8, (32, 64, 128, 256), num_classes, in_channels)


@TEACHERS.register("resnet32")
def resnet32(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """CIFAR ResNet-32: 5 basic blocks per stage, widths 16 (stem) / 16 / 32 / 64."""
    return _cifar_resnet("resnet32", 32, (16, 16, 32, 64), num_classes, in_channels)


@TEACHERS.register("resnet32x4")
def resnet32x4(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """CIFAR ResNet-32x4: 5 basic blocks per stage, widths 32 (stem) / 64 / 128 / 256."""
    return _cifar_resnet("resnet32x4", 32, (32, 64, 128, 256), num_classes, in_channels)


# --------------------------------------------------------------------------------------------
# Wide ResNets (wrn16_2, wrn40_2)
# --------------------------------------------------------------------------------------------


class _PreActBlock(nn.Module):
    """WideResNet block: BN-ReLU-conv-BN-ReLU-conv + shortcut (no dropout).

    When the shape changes, the 1x1 shortcut convolution takes the pre-activated input, as in
    the reference implementation.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))  # a new tensor: the input (a cut feature) is intact
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        residual = x if self.shortcut is None else self.shortcut(activated)
        return out + residual


def _wide_resnet(name: str, depth: int, widen: int, num_classes: int,
                 in_channels: int) -> TeacherNet:
    n = (depth - 4) // 6
    widths = (16, 16 * widen, 32 * widen, 64 * widen)

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*[_PreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                               for i in range(n)])

    stem = nn.Conv2d(in_channels, widths[0], 3, 1, padding=1, bias=False)
    head_pre = nn.Sequential(nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True))
    blocks = [
        nn.Sequential(OrderedDict(stem=stem, stage1=stage(widths[0], widths[1], 1))),
        stage(widths[1], widths[2], 2),
        stage(widths[2], widths[3], 2),
        _PoolHead(widths[3], num_classes, pre=head_pre),
    ]
    model = TeacherNet(name, blocks, num_classes, in_channels)
    _init_weights(model, zero_linear_bias=True)
    return model


@TEACHERS.register("wrn16_2")
def wrn16_2(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """WideResNet-16-2: 2 pre-activation blocks per stage, widths 32 / 64 / 128."""
    return _wide_resnet("wrn16_2", 16, 2, num_classes, in_channels)


@TEACHERS.register("wrn40_2")
def wrn40_2(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """WideResNet-40-2: 6 pre-activation blocks per stage, widths 32 / 64 / 128."""
    return _wide_resnet("wrn40_2", 40, 2, num_classes, in_channels)


# --------------------------------------------------------------------------------------------
# EfficientNet-B0 (torchvision)
# --------------------------------------------------------------------------------------------

_EFFNET_SPLIT = ((0, 3), (3, 4), (4, 6), (6, 9))
"""torchvision ``features`` index ranges of the 4 blocks. At 224x224 the cuts are 24x56x56
(stem + stages 1-2), 40x28x28 (stage 3) and 112x14x14 (stages 4-5); block 4 holds stages 6-7,
the 1x1 conv to 1280 channels, the average pool and the classifier."""

_EFFNET_CLASSIFIER = "blocks.3.classifier."


class _EfficientNetHead(nn.Module):
    """EfficientNet's last feature stages, average pool, flatten and classifier."""

    def __init__(self, features: nn.Sequential, avgpool: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class EfficientNetB0Teacher(TeacherNet):
    """torchvision's EfficientNet-B0 cut into 4 blocks (see ``_EFFNET_SPLIT``).

    Reads torchvision-format state_dicts (``features.*``, ``classifier.*`` keys) as well as its
    own, so a plain torchvision checkpoint can be passed as ``weights_path``.
    """

    def __init__(self, num_classes: int, in_channels: int) -> None:
        from torchvision.models import efficientnet_b0

        net = efficientnet_b0(weights=None, num_classes=num_classes)  # torchvision's own init
        if in_channels != 3:
            old = net.features[0][0]
            conv = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                             old.padding, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out")
            net.features[0][0] = conv
        parts = [nn.Sequential(*net.features[start:stop]) for start, stop in _EFFNET_SPLIT]
        blocks = parts[:3] + [_EfficientNetHead(parts[3], net.avgpool, net.classifier)]
        super().__init__("efficientnet_b0", blocks, num_classes, in_channels)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Maps torchvision keys (``features.4.0...``) to this teacher's (``blocks.2.0.0...``)."""
        if not any(key.startswith("features.") for key in state):
            return state
        prefixes: dict[str, str] = {}
        for block, (start, stop) in enumerate(_EFFNET_SPLIT):
            inner = "features." if block == 3 else ""
            for index in range(start, stop):
                prefixes[str(index)] = f"blocks.{block}.{inner}{index - start}"
        renamed: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            parts = key.split(".", 2)
            if parts[0] == "features" and len(parts) == 3 and parts[1] in prefixes:
                key = f"{prefixes[parts[1]]}.{parts[2]}"
            elif parts[0] == "classifier":
                key = "blocks.3." + key
            renamed[key] = value
        return renamed

    def load_pretrained(self, weights_path: str | os.PathLike | None = None) -> None:
        """Loads ImageNet weights from ``weights_path`` or torch hub's cache; never downloads.

        The 1000-class classifier is dropped (this teacher keeps its fresh one); every other
        key must match. With ``in_channels != 3`` the first convolution is adapted: summed over
        RGB for 1 channel, else RGB repeated cyclically and scaled by ``3 / in_channels``.
        """
        if weights_path is not None:
            path = Path(weights_path)
            if not path.is_file():
                raise ConfigError(f"efficientnet_b0 ImageNet weights file not found: {path}")
        else:
            path = efficientnet_b0_weights_file()
            if not path.is_file():
                from torchvision.models import EfficientNet_B0_Weights

                raise ConfigError(
                    f"efficientnet_b0 ImageNet weights not found at {path}; no download is "
                    f"attempted: download {EfficientNet_B0_Weights.IMAGENET1K_V1.url} elsewhere "
                    f"and place it there, or pass its path with --teacher-weights"
                )
        state = self.adapt_state_dict(read_state_dict(path))
        state = {k: v for k, v in state.items() if not k.startswith(_EFFNET_CLASSIFIER)}
        first_conv = "blocks.0.0.0.weight"
        weight = state.get(first_conv)
        if weight is not None and weight.dim() == 4 and weight.shape[1] == 3 \
                and self.in_channels != 3:
            if self.in_channels == 1:
                weight = weight.sum(dim=1, keepdim=True)
            else:
                repeats = [weight[:, i % 3] for i in range(self.in_channels)]
                weight = torch.stack(repeats, dim=1) * (3 / self.in_channels)
            state[first_conv] = weight
        _load_checked(self, state, path, optional_prefixes=(_EFFNET_CLASSIFIER,))
        _log.info("teacher efficientnet_b0: loaded ImageNet weights from %s (classifier kept "
                  "fresh for %d classes)", path, self.num_classes)


@TEACHERS.register("efficientnet_b0")
def efficientnet_b0(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """torchvision EfficientNet-B0 with a ``num_classes`` classifier, cut into 4 blocks."""
    return EfficientNetB0Teacher(num_classes, in_channels)


# --------------------------------------------------------------------------------------------
# Tiny teacher for tests
# --------------------------------------------------------------------------------------------

_NORMS = ("bn", "none")


@TEACHERS.register("tiny")
def tiny(num_classes: int, in_channels: int = 3, *, norm: str = "bn") -> TeacherNet:
    """Three 3x3 conv stages (widths 8/16/32, strides 1/2/2) + pool + linear, for tests.

    Args:
        num_classes: Number of logits.
        in_channels: Input channels.
        norm: ``"bn"`` (conv without bias + BatchNorm) or ``"none"`` (conv with bias, no norm
            layer at all, e.g. for exact multi-process equivalence checks).
    """
    if norm not in _NORMS:
        raise ConfigError(f"teacher 'tiny' option norm={norm!r} is not allowed "
                          f"(allowed: {', '.join(_NORMS)})")

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, padding=1,
                                             bias=norm == "none")]
        if norm == "bn":
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
        return nn.Sequential(*layers)

    blocks = [stage(in_channels, 8, 1), stage(8, 16, 2), stage(16, 32, 2),
              _PoolHead(32, num_classes)]
    model = TeacherNet("tiny", blocks, num_classes, in_channels)
    _init_weights(model)
    return model
