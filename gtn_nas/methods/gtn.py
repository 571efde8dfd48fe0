"""GTN: one generic teacher for a whole pool of students (METHODS.md section 4).

The last 3, 2 and 1 supernet blocks (own copies) are grafted after teacher blocks 1, 2, 3. Each
mini-batch draws one path from the trainable distribution (:mod:`.path_sampler`), shared by the
three branches; the conditioning loss (teacher CE + ``alpha`` * mean branch KL(branch ||
teacher) at temperature 1 + mean branch CE) trains teacher and branches, and the architecture
step (learned / adversarial samplers) moves the distribution after each weight step.
Evaluation draws paths from a generator seeded per epoch, so validation is reproducible.

Example:
    >>> sampler = PathSampler(space, "learned", seed=0)                           # doctest: +SKIP
    >>> method = GTNMethod(teacher, space, sampler, input_size=32, alpha=3.0)       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gtn_nas.engine import derive_seed
from gtn_nas.losses import conditioning_loss
from gtn_nas.methods.branched import BranchedTeacherMethod
from gtn_nas.methods.grafting import GraftedBranches
from gtn_nas.methods.path_sampler import PathSampler
from gtn_nas.space import SupernetSpace


class GTNMethod(BranchedTeacherMethod):
    """Teacher + grafted supernet branches + path distribution."""

    def __init__(self, teacher: nn.Module, space: SupernetSpace, sampler: PathSampler,
                 input_size: int, alpha: float = 3.0, temperature: float = 1.0,
                 warmup_epochs: int = 0, seed: int = 0) -> None:
        super().__init__(teacher, GraftedBranches.for_supernet(teacher, space, input_size),
                         warmup_epochs)
        self.sampler = sampler
        self.alpha, self.temperature, self.seed = alpha, temperature, seed
        self.eval_generator = torch.Generator()

    def param_groups(self) -> list[dict[str, Any]]:
        """Every trainable weight except the distribution's logits (they have their own Adam)."""
        arch = {id(p) for p in self.sampler.parameters()}
        return [{"params": [p for p in self.parameters()
                            if p.requires_grad and id(p) not in arch]}]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        super().on_epoch_start(epoch, epochs)
        self.sampler.set_epoch(epoch)
        self.eval_generator.manual_seed(derive_seed(self.seed, epoch, "eval-paths"))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        logits, features = self.teacher_forward(x)
        if self.training:
            sample, gates = self.sampler.draw()
        else:
            with torch.no_grad():
                sample, gates = self.sampler.draw(self.eval_generator)
            gates = None
        branch_logits = self.branches(features, sample, gates)
        losses = conditioning_loss(logits, branch_logits, y, alpha=self.alpha,
                                   temperature=self.temperature)
        if self.training and self.sampler.kind == "adversarial":
            self.sampler.stash_adversarial_gradient(losses["branch_kl"])
        return self.outputs(losses, logits, branch_logits)

    def after_optimizer_step(self, x: torch.Tensor, y: torch.Tensor,
                             outputs: dict[str, Any]) -> dict[str, float]:
        return self.sampler.step()

    def epoch_summary(self) -> dict[str, Any]:
        return self.sampler.summary()
