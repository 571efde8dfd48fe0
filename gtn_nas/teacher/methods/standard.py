"""The standard teacher: plain cross-entropy training.

Example:
    >>> from gtn_nas.teacher.zoo import build_teacher
    >>> method = StandardMethod(build_teacher("tiny", num_classes=10))
    >>> out = method(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    >>> sorted(out)
    ['ce', 'logits', 'loss']
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gtn_nas.method import TrainingMethod


class StandardMethod(TrainingMethod):
    """Cross-entropy on the teacher's logits."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.teacher(x)
        ce = F.cross_entropy(logits, y)
        return {"loss": ce, "ce": ce, "logits": logits}
