"""What SFTN and GTN share: a teacher with grafted student branches, trained jointly, with an
optional warm-up in which the (pretrained) teacher is frozen and only the branches learn.

Example:
    >>> method = SFTNMethod(teacher, GraftedBranches.for_student(...))   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from gtn_nas.method import TrainingMethod
from gtn_nas.teacher.methods.grafting import GraftedBranches


class BranchedTeacherMethod(TrainingMethod):
    """Base of the methods that train a teacher together with grafted branches.

    Args:
        teacher: A :class:`~gtn_nas.teacher.zoo.TeacherNet` (4 blocks, 3 cuts).
        branches: The grafted branches.
        warmup_epochs: Epochs during which the teacher is frozen (eval mode, no gradient).
    """

    has_unused_parameters = True  # frozen teachers, unsampled candidates: DDP must allow them

    def __init__(self, teacher: nn.Module, branches: GraftedBranches,
                 warmup_epochs: int = 0) -> None:
        super().__init__()
        self.teacher = teacher
        self.branches = branches
        self.warmup_epochs = warmup_epochs
        self.teacher_frozen = False

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.teacher_frozen = epoch < self.warmup_epochs

    def teacher_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The teacher's logits and cut features (frozen and in eval mode during warm-up)."""
        if not (self.teacher_frozen and self.training):
            return self.teacher.forward_with_features(x)
        was_training = self.teacher.training
        self.teacher.eval()
        try:
            with torch.no_grad():
                return self.teacher.forward_with_features(x)
        finally:
            self.teacher.train(was_training)

    @staticmethod
    def outputs(losses: Mapping[str, torch.Tensor], logits: torch.Tensor,
                branch_logits: list[torch.Tensor]) -> dict[str, Any]:
        out: dict[str, Any] = dict(losses)
        out["logits"] = logits
        for k, bl in enumerate(branch_logits, start=1):
            out[f"branch{k}_logits"] = bl
        return out
