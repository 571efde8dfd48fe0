"""The settings of any training run (common floor): :class:`TrainConfig`, optimisation and
device options, the ``train`` section of every run configuration.

Kept apart from :mod:`gtn_nas.engine` (the loop, which imports torch) so that the command line
can build its flags from these fields without importing torch.

Example:
    >>> TrainConfig(epochs=15).resolved_milestones()
    (9, 11, 13)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from gtn_nas.config import option
from gtn_nas.errors import ConfigError

PAPER_EPOCHS, PAPER_MILESTONES = 240, (150, 180, 210)  # the papers' x0.1 steps


def scaled_milestones(epochs: int) -> tuple[int, ...]:
    """The papers' milestones at the same fractions of ``epochs`` (rounded down, >= 1).

    Example:
        >>> scaled_milestones(240), scaled_milestones(15), scaled_milestones(100)
        ((150, 180, 210), (9, 11, 13), (62, 75, 87))
    """
    return tuple(max(1, epochs * m // PAPER_EPOCHS) for m in PAPER_MILESTONES)


@dataclass
class TrainConfig:
    """Optimisation and device settings (defaults: the papers' CIFAR recipe, on CPU).

    ``batch_size`` is the global batch, split evenly across ``devices``. ``val_every = k``
    validates after every k-th epoch and after the last (the records of the other epochs have
    no ``val/*`` values; best-on-validation is chosen among the validated epochs).
    ``channels_last`` and ``compile`` are opt-in CPU speed-ups (docs/BENCHMARKS.md, "Training
    speed"): each changes the numbers in the last bits, so a seeded run is reproduced only
    with the same settings (and the same thread count).

    ``milestones`` (step schedule, x ``gamma`` after each): None places the papers' 150/180/210
    of 240 at the same fractions of the run (:func:`scaled_milestones`); explicit ones are kept.
    """

    epochs: int = option(240, help="training epochs (default: {default})")
    batch_size: int = option(64, help="global batch size, split across --devices (default: "
                                      "{default})")
    lr: float = option(0.05, help="SGD learning rate (default: {default})")
    momentum: float = option(0.9, help="SGD momentum (default: {default})")
    weight_decay: float = option(5e-4, help="SGD weight decay (default: {default})")
    nesterov: bool = option(False, help="Nesterov momentum")
    schedule: Literal["step", "cosine", "constant"] = option(
        "step", help="learning-rate schedule (default: {default})")
    milestones: tuple[int, ...] | None = option(None, metavar="EPOCH", help=(
        "step schedule: multiply the learning rate by --gamma after these epochs (default: the "
        "papers' 150 180 210 of 240 scaled to --epochs, e.g. 9 11 13 for 15; each must be "
        "below --epochs)"))
    gamma: float = option(0.1, help="step schedule: the factor at each milestone (default: "
                                    "{default})")
    grad_clip: float | None = option(None, help="gradient-norm clip (default: {default})")
    seed: int = option(0, help="seeds data splits, weights and order (default: {default})")
    accelerator: str = option("cpu", help="cpu, gpu or auto (default: {default})")
    devices: int = option(1, help="number of devices (processes; default: {default})")
    strategy: str = option("auto", help="auto, ddp or ddp_spawn (default: {default})")
    precision: str = option("32-true", help="32-true, bf16-mixed or 16-mixed (default: "
                                            "{default})")
    max_steps_per_epoch: int | None = option(None, help="cap the steps of an epoch")
    eval_batch_size: int = option(256, help="batch size of validation and testing (default: "
                                            "{default})")
    val_every: int = option(1, metavar="K", help="validate every K epochs and after the last "
                                                 "(default {default})")
    channels_last: bool = option(False, help=(
        "NHWC memory format (faster convolutions on CPU; results differ from the default in "
        "the last bits)"))
    compile: bool = option(False, help=(
        "torch.compile the training step (pays only on long runs: the compile takes tens of "
        "seconds; not bit-identical)"))
    num_workers: int = option(0, help="data-loading processes (default: {default})")
    progress: bool = option(True, help="a progress bar per epoch")
    sync_batchnorm: bool = option(False, help="DDP: batch-norm statistics over the global batch "
                                              "(GPUs only)")

    def validate(self) -> None:
        """Raises ConfigError for values no run can use."""
        for name in ("lr", "momentum", "weight_decay", "gamma", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"training config: {name} must be a finite number, got "
                                  f"{value}")
        checks = [(self.epochs >= 1, "epochs must be >= 1"),
                  (self.batch_size >= 1, "batch_size must be >= 1"),
                  (self.lr > 0, "lr must be > 0"),
                  (self.devices >= 1, "devices must be >= 1"),
                  (self.batch_size % self.devices == 0,
                   f"batch_size {self.batch_size} must divide evenly across {self.devices} "
                   f"devices"),
                  (self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
                   "max_steps_per_epoch must be >= 1"),
                  (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be > 0"),
                  (not isinstance(self.val_every, bool) and isinstance(self.val_every, int)
                   and self.val_every >= 1, f"val_every must be an integer >= 1, got "
                   f"{self.val_every!r}"),
                  (not self.sync_batchnorm or self.accelerator not in ("cpu",),
                   "sync_batchnorm needs GPUs (PyTorch's SyncBatchNorm is GPU-only); on CPU "
                   "batch-norm statistics stay per process")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"training config: {message}")
        # an error, not a warning lost in a log: a milestone outside the run silently keeps
        # the learning rate (the 240-epoch recipe's 150/180/210 in a 15-epoch run)
        if self.schedule != "step" or self.milestones is None or all(
                type(m) is int and 1 <= m < self.epochs for m in self.milestones):
            return
        raise ConfigError(
            f"training config: milestones {', '.join(map(str, self.milestones))} do not fit a "
            f"run of {self.epochs} epochs (the step after epoch m acts from epoch m + 1, so "
            f"each must be in 1..{self.epochs - 1}); leave milestones unset to scale the "
            f"papers' 150/180/210 of 240 to this run "
            f"({', '.join(map(str, scaled_milestones(self.epochs)))}), or give --milestones "
            f"inside the run")

    def resolved_milestones(self) -> tuple[int, ...]:
        """``milestones``, or when None the papers' fractions of ``epochs``."""
        return scaled_milestones(self.epochs) if self.milestones is None \
            else tuple(self.milestones)

