"""The training-method contract: what the one training loop (:mod:`gtn_nas.engine`) trains.

A method is an ``nn.Module`` subclassing :class:`TrainingMethod`. Its ``forward(x, y)``
returns a dict with ``"loss"`` and any named terms (entries ending in ``logits`` are scored as
accuracies, other scalars averaged); the hooks below have defaults that do nothing, so a
method overrides only what it uses, and the engine calls every hook of every method (no
``hasattr`` probing: a misspelt hook is a method the engine never calls, which the base class
makes visible as an unused override rather than a silently skipped one).

Example:
    >>> import torch
    >>> class Plain(TrainingMethod):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.net = torch.nn.Linear(4, 3)
    ...     def forward(self, x, y):
    ...         logits = self.net(x)
    ...         return {"loss": torch.nn.functional.cross_entropy(logits, y), "logits": logits}
    >>> method = Plain()
    >>> len(method.param_groups()[0]["params"]), method.epoch_summary()
    (2, {})
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gtn_nas.metrics import RunningMeans


class TrainingMethod(nn.Module):
    """Base class of every method the engine trains (teachers' and distillers')."""

    has_unused_parameters: bool = False
    """Under DDP: some parameters get no gradient in a step (a sampled path)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:  # noqa: D102
        raise NotImplementedError(f"{type(self).__name__} must define forward(x, y)")

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (default: every trainable parameter)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (0-based), e.g. to freeze a pretrained teacher."""

    def after_optimizer_step(self, x: torch.Tensor, y: torch.Tensor,
                             outputs: dict[str, Any]) -> dict[str, Any] | None:
        """Called after each optimizer step, e.g. for an architecture step; values returned
        are averaged into the epoch's training record."""
        return None

    def validate(self, val_loader, fabric: Any = None) -> dict[str, float]:
        """The epoch's validation (logged as ``val/*``): by default :func:`evaluate`."""
        return evaluate(self, val_loader, fabric)

    def epoch_summary(self) -> dict[str, Any]:
        """Extra values for the epoch's record (e.g. a sampler's distribution)."""
        return {}

    def after_validation(self, record: dict[str, Any]) -> None:
        """Sees the epoch's record before its checkpoint is written (state kept here, such as
        the best-on-validation weights, is saved with the epoch)."""


@torch.no_grad()
def evaluate(method: nn.Module, loader, fabric: Any = None) -> dict[str, float]:
    """Averages ``method``'s outputs over ``loader`` in eval mode (restoring the mode after)."""
    was_training = method.training
    method.eval()
    meter = RunningMeans()
    try:
        for x, y in loader:
            if fabric is not None:
                x, y = fabric.to_device((x, y))
            meter.update(method(x, y), y)
    finally:
        method.train(was_training)
    return meter.means()
