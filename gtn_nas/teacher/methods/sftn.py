"""SFTN: a student-friendly teacher for one given student (Park et al., 2021; docs/methods.md sec. 3).

The student's blocks 2-4, 3-4 and 4 are grafted after teacher blocks 1, 2, 3 through transform
layers; the loss is teacher CE + ``kl_weight`` * mean branch KL(branch || teacher) at
temperature ``tau`` + mean branch CE. Gradients reach the teacher; the branches are dropped
after training.

Example:
    >>> method = SFTNMethod.build(teacher, space, space.preset("s_nas_s"), input_size=32)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from gtn_nas.teacher.losses import sftn_loss
from gtn_nas.teacher.methods.branched import BranchedTeacherMethod
from gtn_nas.teacher.methods.grafting import GraftedBranches
from gtn_nas.space.supernet import SupernetSpace


class SFTNMethod(BranchedTeacherMethod):
    """Teacher + one student's grafted branches, trained with the SFTN loss."""

    def __init__(self, teacher: nn.Module, branches: GraftedBranches, kl_weight: float = 3.0,
                 teacher_ce_weight: float = 1.0, branch_ce_weight: float = 1.0,
                 temperature: float = 1.0, warmup_epochs: int = 0) -> None:
        super().__init__(teacher, branches, warmup_epochs)
        self.kl_weight, self.temperature = kl_weight, temperature
        self.teacher_ce_weight, self.branch_ce_weight = teacher_ce_weight, branch_ce_weight

    @classmethod
    def build(cls, teacher: nn.Module, space: SupernetSpace, sample: Mapping[str, Any],
              input_size: int, **options: Any) -> "SFTNMethod":
        """Grafts the student ``sample`` of ``space`` onto ``teacher``."""
        return cls(teacher, GraftedBranches.for_student(teacher, space, sample, input_size),
                   **options)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        logits, features = self.teacher_forward(x)
        branch_logits = self.branches(features)
        losses = sftn_loss(logits, branch_logits, y, teacher_ce_weight=self.teacher_ce_weight,
                           kl_weight=self.kl_weight, branch_ce_weight=self.branch_ce_weight,
                           temperature=self.temperature)
        return self.outputs(losses, logits, branch_logits)
