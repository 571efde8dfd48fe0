"""The teacher contract: a classification network cut into 4 consecutive blocks.

:class:`TeacherNet` runs its ``blocks`` one after another (block 4 ends with the logits); the
outputs of blocks 1, 2 and 3 (the *cuts*) are where student branches are grafted (SFTN, GTN).
Families register builders in :data:`TEACHERS` (:mod:`.resnets`, :mod:`.efficientnet`);
:mod:`.zoo` builds, saves and loads them by name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from gtn_nas.errors import ConfigError
from gtn_nas.registry import Registry

_log = logging.getLogger(__name__)

TeacherBuilder = Callable[..., "TeacherNet"]
"""``builder(num_classes, in_channels, **options) -> TeacherNet``; options are keyword-only."""

PRETRAINED_TEACHERS = ("efficientnet_b0",)
"""Teachers whose :meth:`TeacherNet.load_pretrained` reads ImageNet weights."""

TEACHERS: Registry[TeacherBuilder] = Registry("teacher")
"""Teacher name -> builder. Use :func:`gtn_nas.teacher.zoo.build_teacher` rather than calling
builders directly."""


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
            >>> from gtn_nas.teacher.zoo import build_teacher
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
