"""GTN: one generic teacher for a whole pool of students (docs/methods.md section 4; docs/gtn.md).

The last 3, 2 and 1 supernet blocks (own copies) are grafted after teacher blocks 1, 2, 3, and
optionally a full-path branch (a copy of the whole supernet) runs the path from the input image.
Each mini-batch draws one path from the trainable distribution (:mod:`.path_sampler`), shared by
all branches. Losses per step:

- the conditioning loss on the drawn path: teacher CE + ``alpha`` * mean branch KL(branch ||
  teacher) at ``temperature`` + mean branch CE (gradients reach the teacher: the paper's loss);
- the full-path branch: CE + ``alpha`` * KL(full || teacher), the teacher detached (it trains
  the one-shot supernet that scores whole students; it does not condition the teacher);
- ``sandwich``: the same branch losses for the largest and smallest students too, the teacher
  detached (BigNAS's sandwich rule, for the supernet's convergence);
- ``inplace_distill`` (weight): KL(teacher || branch) at ``temperature``, teacher detached,
  for every branch path run in the step (in-place distillation from the teacher).

After the weight step the sampler takes a REINFORCE step on the drawn path's per-branch losses.
Validation (:meth:`GTNMethod.validate`) scores the teacher and averages branch accuracies over
a fixed set of ``eval_paths`` paths on the whole validation split, each path after per-path BN
recalibration on recent training batches, in one pass (the teacher runs once per batch).

Example:
    >>> sampler = PathSampler(space, "learned", seed=0)                           # doctest: +SKIP
    >>> method = GTNMethod(teacher, space, sampler, input_size=32, alpha=3.0)       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gtn_nas.engine import derive_seed
from gtn_nas.teacher.losses import conditioning_loss, soft_kl
from gtn_nas.teacher.methods.branched import BranchedTeacherMethod
from gtn_nas.teacher.methods.grafting import GraftedBranches
from gtn_nas.teacher.methods.path_sampler import PathSampler, all_reduce_mean, extreme_paths
from gtn_nas.space.supernet import Sample, SupernetSpace


class GTNMethod(BranchedTeacherMethod):
    """Teacher + grafted supernet branches (+ full-path branch) + path distribution.

    Args:
        teacher: A 4-block teacher.
        space: The student space grafted as branches.
        sampler: The path distribution.
        input_size: Image size (the branches' nominal shapes).
        alpha: Weight of the branch KL terms.
        temperature: Temperature of the KL terms.
        warmup_epochs: Epochs with a (pretrained) teacher frozen.
        seed: Seeds the validation paths.
        full_branch: Train a full-path branch (layer 1's only signal).
        sandwich: Also train the largest and smallest students each step.
        inplace_distill: Weight of in-place distillation from the teacher (0: off).
        eval_paths: K, the fixed paths whose mean branch accuracy is logged.
        eval_paths_every: Score the logged paths every this many epochs and after the last
            (the teacher's accuracy is validated every epoch): each path costs a pass of its
            branches over the validation split after recalibrating their statistics.
        eval_recalibration_batches: Recent training batches used to recalibrate each path's
            BN statistics before it is evaluated (0: shared statistics).
    """

    def __init__(self, teacher: nn.Module, space: SupernetSpace, sampler: PathSampler,
                 input_size: int, alpha: float = 3.0, temperature: float = 1.0,
                 warmup_epochs: int = 0, seed: int = 0, *, full_branch: bool = True,
                 sandwich: bool = False, inplace_distill: float = 0.0, eval_paths: int = 8,
                 eval_recalibration_batches: int = 4, eval_paths_every: int = 5) -> None:
        super().__init__(teacher, GraftedBranches.for_supernet(teacher, space, input_size,
                                                               full_branch=full_branch),
                         warmup_epochs)
        self.sampler = sampler
        sampler.set_branches(self.branches.branch_units())
        self.alpha, self.temperature, self.seed = alpha, temperature, seed
        self.sandwich, self.inplace_distill = sandwich, inplace_distill
        self.eval_paths, self.eval_recalibration_batches = eval_paths, eval_recalibration_batches
        self.eval_paths_every = eval_paths_every
        self._epoch: int | None = None
        self._epochs: int | None = None
        self.extremes = list(extreme_paths(space)) if sandwich else []
        self._recent: list[torch.Tensor] = []
        self._last: tuple[Sample, dict[str, float]] | None = None

    def param_groups(self) -> list[dict[str, Any]]:
        """Every trainable weight except the distribution's logits (they have their own Adam)."""
        arch = {id(p) for p in self.sampler.parameters()}
        return [{"params": [p for p in self.parameters()
                            if p.requires_grad and id(p) not in arch]}]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        super().on_epoch_start(epoch, epochs)
        self._epoch, self._epochs = epoch, epochs
        self.sampler.set_epoch(epoch)
        # The recalibration batches of validate() come from this epoch only, so a run
        # resumed from the last checkpoint logs what the uninterrupted run logged.
        self._recent.clear()

    def paths_due(self) -> bool:
        """Whether this epoch's validation scores the logged paths: every
        ``eval_paths_every``-th epoch and the last (the teacher's own accuracy every epoch);
        always outside a run's epochs."""
        if self._epoch is None or self._epochs is None:
            return True
        done = self._epoch + 1
        return done % self.eval_paths_every == 0 or done == self._epochs

    def validation_paths(self) -> list[Sample]:
        """The K fixed paths of the logged branch accuracies (drawn from the sampler's prior
        with a generator seeded from ``seed``; distinct where the space allows)."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "eval-paths"))
        paths: list[Sample] = []
        for _ in range(50 * self.eval_paths):
            path = self.sampler.draw(generator, prior=True)
            if path not in paths:
                paths.append(path)
            if len(paths) == self.eval_paths:
                break
        return paths

    # ------------------------------------------------------------------ training
    def _branch_terms(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
                      features: list[torch.Tensor], sample: Sample) -> tuple[
                          torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]:
        """Loss of the branches on ``sample`` with the teacher detached, per-branch losses."""
        target = logits.detach()
        branch_logits = self.branches([f.detach() for f in features], sample)
        per: dict[str, torch.Tensor] = {}
        for k, z in enumerate(branch_logits, start=1):
            per[f"branch{k}"] = F.cross_entropy(z, y) + self.alpha * soft_kl(
                z, target, self.temperature)
        if self.branches.has_full:
            branch_logits = branch_logits + [self.branches.full_path(x, sample)]
            per["full"] = F.cross_entropy(branch_logits[-1], y) + self.alpha * soft_kl(
                branch_logits[-1], target, self.temperature)
        return torch.stack(list(per.values())).mean(), per, branch_logits

    def _distill(self, logits: torch.Tensor, branch_logits: list[torch.Tensor]) -> torch.Tensor:
        target = logits.detach()
        return self.inplace_distill * torch.stack(
            [soft_kl(target, z, self.temperature) for z in branch_logits]).mean()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        logits, features = self.teacher_forward(x)
        if not self.training:  # the teacher alone; validate() scores the branches too
            ce = F.cross_entropy(logits, y)
            return {"loss": ce, "teacher_ce": ce, "logits": logits}
        self._remember(x)
        sample = self.sampler.draw()
        branch_logits = self.branches(features, sample)
        losses = conditioning_loss(logits, branch_logits, y, alpha=self.alpha,
                                   temperature=self.temperature)
        loss = losses["loss"]
        path_losses = {f"branch{k}": float((losses[f"branch{k}_ce"] + self.alpha *
                                            losses[f"branch{k}_kl"]).detach())
                       for k in range(1, len(branch_logits) + 1)}
        run = list(branch_logits)
        if self.branches.has_full:
            full = self.branches.full_path(x, sample)
            full_ce = F.cross_entropy(full, y)
            full_kl = soft_kl(full, logits.detach(), self.temperature)
            loss = loss + full_ce + self.alpha * full_kl
            losses.update(full_ce=full_ce, full_kl=full_kl)
            path_losses["full"] = float((full_ce + self.alpha * full_kl).detach())
            run.append(full)
        for extra in self.extremes:
            extra_loss, _, extra_logits = self._branch_terms(x, y, logits, features, extra)
            loss = loss + extra_loss
            run += extra_logits
        if self.inplace_distill:
            distill = self._distill(logits, run)
            loss = loss + distill
            losses["inplace_distill"] = distill
        losses["loss"] = loss
        self._last = (sample, path_losses)
        out = self.outputs(losses, logits, branch_logits)
        if self.branches.has_full:
            out["full_logits"] = full
        return out

    def after_optimizer_step(self, x: torch.Tensor, y: torch.Tensor,
                             outputs: dict[str, Any]) -> dict[str, float]:
        if not self.sampler.learns or self._last is None:
            return self.sampler.step()
        sample, losses = self._last
        self._last = None
        return self.sampler.step(sample, all_reduce_mean(losses))

    def _remember(self, x: torch.Tensor) -> None:
        if self.eval_recalibration_batches:
            self._recent.append(x.detach())
            del self._recent[:-self.eval_recalibration_batches]

    # ------------------------------------------------------------------ validation
    def _branch_outputs(self, x: torch.Tensor, features: list[torch.Tensor],
                        sample: Sample) -> dict[str, torch.Tensor]:
        out = {f"branch{k}": z for k, z in enumerate(self.branches(features, sample), start=1)}
        if self.branches.has_full:
            out["full"] = self.branches.full_path(x, sample)
        return out

    def branch_logits(self, x: torch.Tensor, sample: Sample) -> dict[str, torch.Tensor]:
        """Branch name -> logits of every branch on ``sample`` (current modes, no grad)."""
        with torch.no_grad():
            _, features = self.teacher.forward_with_features(x)
            return self._branch_outputs(x, features, sample)

    @torch.no_grad()
    def validate(self, val_loader, fabric: Any = None) -> dict[str, float]:
        """The teacher's loss and accuracy and the branch accuracies averaged over the K fixed
        paths, on the whole validation split, in one pass (the engine's validation).

        Each path's BN statistics are first recalibrated on the last
        ``eval_recalibration_batches`` training batches (training images, the teacher's
        features of them computed once for every path); the pass then runs the teacher once
        per batch and each path's branches with its statistics swapped in, and the shared
        statistics are restored afterwards. The numbers are those of one pass per path.
        Returns ``{loss, teacher_ce, acc, branch1_acc, .., full_acc, <name>_acc_min,
        <name>_acc_max, paths}``.
        """
        from gtn_nas.metrics import RunningMeans
        from gtn_nas.teacher.recalibration import (load_statistics, recalibrated_statistics,
                                           statistics_of)

        paths = self.validation_paths() if self.paths_due() else []
        flags = [(m, m.training) for m in self.modules()]
        self.eval()
        teacher = RunningMeans()
        correct: list[dict[str, int]] = [{} for _ in paths]
        seen = 0
        shared = statistics_of(self.branches) if self._recent else None
        try:
            recent = [(x, self.teacher.forward_with_features(x)[1]) for x in self._recent]
            per_path = [recalibrated_statistics(
                self.branches, lambda sample=sample: [self._branch_outputs(x, f, sample)
                                                      for x, f in recent])
                        for sample in paths] if recent else None
            for x, y in val_loader:
                if fabric is not None:
                    x, y = fabric.to_device((x, y))
                logits, features = self.teacher.forward_with_features(x)
                ce = F.cross_entropy(logits, y)
                teacher.update({"loss": ce, "teacher_ce": ce, "logits": logits}, y)
                for counts, sample, statistics in zip(correct, paths,
                                                      per_path or [None] * len(paths)):
                    if statistics is not None:
                        load_statistics(self.branches, statistics)
                    for name, z in self._branch_outputs(x, features, sample).items():
                        counts[name] = counts.get(name, 0) + int((z.argmax(1) == y).sum())
                seen += int(y.shape[0])
        finally:
            if shared is not None:
                load_statistics(self.branches, shared)
            for m, flag in flags:
                m.training = flag
        out = teacher.means()
        names = list(correct[0]) if correct else []
        for name in names:
            accs = [counts[name] / max(seen, 1) for counts in correct]
            out[f"{name}_acc"] = sum(accs) / len(accs)
            out[f"{name}_acc_min"] = min(accs)
            out[f"{name}_acc_max"] = max(accs)
        out["paths"] = float(len(paths) if names else 0)
        return out

    def epoch_summary(self) -> dict[str, Any]:
        return self.sampler.summary()
