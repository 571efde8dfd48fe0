"""Zero-cost proxies: scores of a student computed without training it.

- :func:`synflow`: SynFlow (Tanaka et al., 2020; as a NAS proxy, Abdelfattah et al., 2021):
  with every parameter and buffer replaced by its absolute value, in double precision and eval
  mode (BatchNorm at its initial statistics is a near-identity), ``R = sum(f(1))`` for an
  all-ones input; the score is ``sum over conv and linear weights of |theta * dR/dtheta|``.
- :func:`naswot`: NASWOT (Mellor et al., 2021): for a batch of N images, the binary code of
  every ReLU's output (positive or not) per image; ``K[i, j]`` = number of units where images
  i and j agree (``N_A - Hamming``); the score is ``log |det K|``, averaged over batches. The
  network runs in training mode (batch statistics), as in the paper's code.

- :class:`ShortTrainingScore` (not zero-cost): the student's validation accuracy after a few
  SGD steps from a seeded initialisation (a fraction of an epoch or one), the cheap end of the
  learning-curve estimators.

The scorer classes (:class:`ParamsScore`, :class:`FlopsScore`, :class:`SynflowScore`,
:class:`NaswotScore`, :class:`ShortTrainingScore`) follow :mod:`gtn_nas.search.scoring`'s Scorer contract; SynFlow and NASWOT run on
the sampled student at a seeded fresh initialisation (``space.freeze(sample, seed=seed)``).

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    >>> synflow(net, (2,)) > 0
    True
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from gtn_nas.space.supernet import SupernetSpace
from gtn_nas.teacher.recalibration import recalibrated


def synflow(model: nn.Module, input_shape: Sequence[int]) -> float:
    """The SynFlow score of ``model`` for inputs of shape ``input_shape`` (no batch dim).

    ``model`` is not changed (a double-precision copy is scored).
    """
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    x = torch.ones(1, *input_shape, dtype=torch.float64)
    net(x).sum().backward()
    total = 0.0
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight.grad is not None:
            total += float((module.weight * module.weight.grad).detach().abs().sum())
    return total


def naswot(model: nn.Module, batches: Iterable[torch.Tensor]) -> float:
    """The NASWOT score of ``model``: mean over ``batches`` of ``log|det K_H|``.

    ``model`` is not changed (a copy runs in training mode, without gradients).
    """
    net = copy.deepcopy(model).train()
    codes: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        codes.append((output.detach() > 0).flatten(1).double())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    scores = []
    try:
        with torch.no_grad():
            for x in batches:
                codes.clear()
                net(x)
                if not codes:
                    raise ValueError("NASWOT needs a network with ReLU layers")
                c = torch.cat(codes, dim=1)
                kernel = c @ c.t() + (1 - c) @ (1 - c).t()
                scores.append(float(torch.linalg.slogdet(kernel)[1]))
    finally:
        for handle in handles:
            handle.remove()
    return sum(scores) / len(scores)


class _ProxyScore:
    """Shared parts of the proxy scorers (no chance level; always informative)."""

    kind = "proxy"
    chance: float | None = None
    description = ""

    def __init__(self, space: SupernetSpace) -> None:
        self.space = space
        self._cache: dict[tuple, float] = {}

    def __call__(self, sample: Mapping[str, Any]) -> float:
        canonical = self.space.validate(sample)
        key = tuple(sorted(canonical.items()))
        if key not in self._cache:
            self._cache[key] = self.compute(canonical)
        return self._cache[key]

    def compute(self, sample: Mapping[str, Any]) -> float:
        raise NotImplementedError

    def check_informative(self, samples: Sequence[Mapping[str, Any]]) -> str | None:
        """None unless every sample gets the same score."""
        scores = {round(self(s), 12) for s in samples}
        return f"{self.kind} gives every probed student the same score" \
            if len(samples) > 1 and len(scores) == 1 else None


class ParamsScore(_ProxyScore):
    """log10 of the student's parameter count (larger: better)."""

    kind = "params"
    description = "log10(parameters) of the student"

    def __init__(self, space: SupernetSpace) -> None:
        from gtn_nas.space.costs import UnitCosts

        super().__init__(space)
        self.costs = UnitCosts(space)

    def compute(self, sample: Mapping[str, Any]) -> float:
        return math.log10(max(self.costs.params(sample), 1))


class FlopsScore(ParamsScore):
    """log10 of the student's FLOPs (fvcore; larger: better)."""

    kind = "flops"
    description = "log10(FLOPs) of the student"

    def compute(self, sample: Mapping[str, Any]) -> float:
        return math.log10(max(self.costs.flops(sample), 1))


class SynflowScore(_ProxyScore):
    """log10 SynFlow of the student at a seeded initialisation."""

    kind = "synflow"

    def __init__(self, space: SupernetSpace, seed: int = 0) -> None:
        super().__init__(space)
        self.seed = seed
        self.description = f"log10 SynFlow of the student at init (seed {seed})"

    def compute(self, sample: Mapping[str, Any]) -> float:
        student = self.space.freeze(sample, seed=self.seed)
        shape = (self.space.in_channels, self.space.input_size, self.space.input_size)
        return math.log10(max(synflow(student, shape), 1e-300))


class NaswotScore(_ProxyScore):
    """NASWOT of the student at a seeded initialisation on a few real training batches."""

    kind = "naswot"

    def __init__(self, space: SupernetSpace, batches: Sequence[torch.Tensor],
                 seed: int = 0) -> None:
        super().__init__(space)
        if not batches:
            raise ValueError("NASWOT needs at least one batch of images")
        self.batches, self.seed = list(batches), seed
        self.description = (f"NASWOT log|K_H| of the student at init (seed {seed}) on "
                            f"{len(self.batches)} training batch(es) of "
                            f"{len(self.batches[0])} images")

    def compute(self, sample: Mapping[str, Any]) -> float:
        return naswot(self.space.freeze(sample, seed=self.seed), self.batches)


class ShortTrainingScore(_ProxyScore):
    """Validation accuracy of the student after ``len(batches)`` SGD steps from a seeded
    initialisation (lr 0.05, momentum 0.9, weight decay 5e-4: the student recipe's optimiser),
    its BatchNorm statistics recomputed on the same batches before it is scored.

    Args:
        space: The space.
        batches: Labelled training batches ``(x, y)``, one step each, in order.
        val: Labelled validation batches ``(x, y)`` scored after training.
        seed: Seeds the initialisation (and nothing else: the batches are given).
    """

    kind = "short"

    def __init__(self, space: SupernetSpace, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 val: Sequence[tuple[torch.Tensor, torch.Tensor]], seed: int = 0,
                 lr: float = 0.05) -> None:
        super().__init__(space)
        if not val:
            raise ValueError("the short-training score needs validation images")
        self.batches, self.val, self.seed, self.lr = list(batches), list(val), seed, lr
        images = sum(len(y) for _, y in self.val)
        self.description = (f"validation top-1 on {images} images after {len(self.batches)} "
                            f"SGD steps of {len(self.batches[0][1]) if self.batches else 0} "
                            f"training images from a seeded init (seed {seed})")

    def compute(self, sample: Mapping[str, Any]) -> float:
        import torch.nn.functional as F

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            student = self.space.freeze(sample, seed=self.seed).train()
            optimizer = torch.optim.SGD(student.parameters(), lr=self.lr, momentum=0.9,
                                        weight_decay=5e-4)
            for x, y in self.batches:
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(student(x), y).backward()
                optimizer.step()
            # BN running statistics after a few steps are mostly their initial values: score
            # with statistics recomputed on the training batches (as per-path recalibration)
            correct = total = 0
            with recalibrated(student, lambda: [student(x) for x, _ in self.batches]), \
                    torch.no_grad():
                for x, y in self.val:
                    correct += int((student(x).argmax(1) == y).sum())
                    total += len(y)
        return correct / total
