"""The GTN's trainable distribution over student paths, and its samplers.

One categorical distribution per label of the space (``layer3/op``, ``layer3/kernel``, ...),
parameterised by logits (zeros: uniform). One path is drawn per mini-batch with the Gumbel-max
trick from a generator seeded per epoch (identical on every DDP rank) and shared by the three
branches. Samplers **[our reading, METHODS.md section 4]**:

- ``uniform``: the logits never move (the ablation);
- ``learned``: straight-through Gumbel-softmax gates multiply each grafted unit's output (value
  exactly 1 forward), so the branch part of the conditioning loss reaches the logits; they are
  stepped by their own Adam after each weight step, minus an entropy bonus that keeps the
  distribution from collapsing onto a few students;
- ``adversarial``: as ``learned``, but the logits *maximise* the branches' KL to the teacher,
  focusing the teacher on the students it currently serves worst.

The cost-aware option adds ``cost_weight * max(0, E[MFLOPs] / target - 1)^2`` to the
architecture objective, with E[MFLOPs] the distribution's expected FLOPs under a per-unit
table (each unit's FLOPs at its input in the space's reference student, summed: a linear cost
model).

Labels whose units are not grafted (block 1's) get no gradient from the branches; only the
entropy bonus and the cost term move them.

Example:
    >>> sampler = PathSampler(space, kind="learned", seed=0)   # doctest: +SKIP
    >>> sample, gates = sampler.draw()                          # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gtn_nas.engine import derive_seed
from gtn_nas.errors import ConfigError
from gtn_nas.space import Sample, SupernetSpace

SAMPLERS = ("uniform", "learned", "adversarial")
SamplerKind = Literal["uniform", "learned", "adversarial"]


def _key(label: str) -> str:
    return label.replace("/", "__").replace(".", "_")


class PathSampler(nn.Module):
    """Per-label categorical logits over a space's choices, with seeded path draws.

    Args:
        space: The search space whose paths are drawn.
        kind: ``uniform``, ``learned`` or ``adversarial``.
        seed: Seeds the path draws (re-derived per epoch by :meth:`set_epoch`).
        arch_lr: Adam learning rate of the logits.
        entropy_weight: Weight of the entropy bonus (subtracted from the objective).
        tau: Gumbel-softmax temperature of the straight-through gates.
        cost_target_mflops: Target of the cost-aware term (None: off).
        cost_weight: Weight of the cost-aware term.
    """

    def __init__(self, space: SupernetSpace, kind: str = "uniform", seed: int = 0,
                 arch_lr: float = 3e-3, entropy_weight: float = 1e-2, tau: float = 1.0,
                 cost_target_mflops: float | None = None, cost_weight: float = 1.0) -> None:
        super().__init__()
        if kind not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{kind}'; samplers: {', '.join(SAMPLERS)}")
        if cost_target_mflops is not None and kind == "uniform":
            raise ConfigError("the cost-aware option needs a sampler that learns "
                              "(--sampler learned or adversarial)")
        if cost_target_mflops is not None and not cost_target_mflops > 0:
            raise ConfigError(f"cost target must be > 0 MFLOPs, got {cost_target_mflops}")
        self.kind, self.seed, self.tau = kind, seed, tau
        self.entropy_weight, self.cost_weight = entropy_weight, cost_weight
        self.cost_target = cost_target_mflops
        self.space = [space]  # referenced, not a submodule
        self.choices = space.choices()
        self.logits = nn.ParameterDict({
            _key(label): nn.Parameter(torch.zeros(len(values)), requires_grad=kind != "uniform")
            for label, values in self.choices.items()})
        self.unit_labels = {name: unit.labels() for name, unit in space.units.items()}
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = (torch.optim.Adam(self.logits.parameters(), lr=arch_lr, betas=(0.5, 0.999))
                          if self.learns else None)
        self._cost_table = self._build_cost_table(space) if cost_target_mflops else None
        self._pending_grads: list[torch.Tensor] | None = None

    @property
    def learns(self) -> bool:
        return self.kind != "uniform"

    def set_epoch(self, epoch: int) -> None:
        """Re-seeds the path draws from (seed, epoch): the same on every rank and after resume."""
        self.generator.manual_seed(derive_seed(self.seed, epoch, "paths"))

    def probabilities(self) -> dict[str, torch.Tensor]:
        """Label -> current probabilities (detached)."""
        return {label: F.softmax(self.logits[_key(label)].detach(), dim=0)
                for label in self.choices}

    def draw(self, generator: torch.Generator | None = None
             ) -> tuple[Sample, dict[str, torch.Tensor] | None]:
        """One path and, for learning samplers, the straight-through gate of each unit.

        Returns:
            ``(sample, gates)``: a canonical sample, and unit name -> scalar tensor equal to 1
            whose gradient reaches the logits of the labels that matter for that unit (None for
            ``uniform``).
        """
        generator = generator or self.generator
        raw: Sample = {}
        weights: dict[str, torch.Tensor] = {}
        for label, values in self.choices.items():
            logits = self.logits[_key(label)]
            uniform = torch.rand(len(values), generator=generator).clamp_(1e-10, 1.0)
            gumbel = -torch.log(-torch.log(uniform)).to(logits.device)
            index = int(torch.argmax(logits.detach() + gumbel))
            raw[label] = values[index]
            if self.learns:
                soft = F.softmax((logits + gumbel) / self.tau, dim=0)
                weights[label] = 1.0 - soft[index].detach() + soft[index]
        space = self.space[0]
        sample = space.validate(raw)
        if not self.learns:
            return sample, None
        gates = {}
        for unit, labels in self.unit_labels.items():
            relevant = [lb for lb in labels if space._label_matters(lb, sample)]
            if relevant:
                gate = weights[relevant[0]]
                for label in relevant[1:]:
                    gate = gate * weights[label]
                gates[unit] = gate
        return sample, gates

    def entropy(self) -> torch.Tensor:
        """Sum over labels of the entropy of each label's distribution (differentiable)."""
        total = torch.zeros(())
        for logits in self.logits.values():
            log_p = F.log_softmax(logits, dim=0)
            total = total + -(log_p.exp() * log_p).sum()
        return total

    def expected_mflops(self) -> torch.Tensor:
        """E[MFLOPs] of the distribution under the per-unit cost table (differentiable)."""
        if self._cost_table is None:
            raise ConfigError("expected FLOPs need the cost-aware option (a cost target)")
        total = torch.zeros(())
        for unit, rows in self._cost_table.items():
            labels = self.unit_labels[unit]
            probs = [F.softmax(self.logits[_key(lb)], dim=0) for lb in labels]
            for indices, mflops in rows:
                weight = torch.ones(())
                for p, i in zip(probs, indices):
                    weight = weight * p[i]
                total = total + weight * mflops
        return total

    def stash_adversarial_gradient(self, branch_kl: torch.Tensor) -> None:
        """Adversarial sampler: remember d(-branch KL)/d(logits) before the weight backward."""
        params = list(self.logits.parameters())
        grads = torch.autograd.grad(-branch_kl, params, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            for g in grads:
                torch.distributed.all_reduce(g)
                g.div_(world)
        self._pending_grads = grads

    def step(self) -> dict[str, float]:
        """One architecture step (after the weight step); returns logged values."""
        if not self.learns:
            return {}
        params = list(self.logits.parameters())
        if self.kind == "adversarial":
            if self._pending_grads is None:
                raise RuntimeError("adversarial step without a stashed gradient")
            for p, g in zip(params, self._pending_grads):
                p.grad = g.clone()
            self._pending_grads = None
        extra = -self.entropy_weight * self.entropy()
        logged: dict[str, float] = {}
        if self._cost_table is not None:
            expected = self.expected_mflops()
            excess = torch.clamp(expected / self.cost_target - 1.0, min=0.0)
            extra = extra + self.cost_weight * excess ** 2
            logged["sampler/expected_mflops"] = float(expected.detach())
        extra_grads = torch.autograd.grad(extra, params, allow_unused=True)
        for p, g in zip(params, extra_grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        logged["sampler/entropy"] = float(self.entropy().detach())
        return logged

    def summary(self) -> dict[str, Any]:
        """Probabilities per label (lists) and the entropy, for the epoch record and plots."""
        probs = self.probabilities()
        out: dict[str, Any] = {"sampler/entropy": float(self.entropy().detach()),
                               "sampler/probs": {
                                   lb: {str(value): round(float(v), 5)
                                        for value, v in zip(self.choices[lb], p)}
                                   for lb, p in probs.items()}}
        if self._cost_table is not None:
            out["sampler/expected_mflops"] = float(self.expected_mflops().detach())
        return out

    def get_extra_state(self) -> dict[str, Any]:
        """The architecture optimizer's state travels with the module's state dict."""
        return {"optimizer": self.optimizer.state_dict() if self.optimizer else None}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    def _build_cost_table(self, space: SupernetSpace
                          ) -> dict[str, list[tuple[tuple[int, ...], float]]]:
        """Per unit, the MFLOPs of each raw label combination at the unit's input in the
        reference student (the linear cost model's table; from :class:`UnitCosts`)."""
        from gtn_nas.costs import PathStep, UnitCosts

        costs = UnitCosts(space)
        inputs = {step.unit: (step.in_channels, step.in_size)
                  for step, _ in costs.steps(space.reference_sample)}
        table: dict[str, list[tuple[tuple[int, ...], float]]] = {}
        for name, unit in space.units.items():
            labels = self.unit_labels[name]
            channels, size = inputs[name]
            rows = []
            for indices in itertools.product(*(range(len(self.choices[lb])) for lb in labels)):
                canonical = unit.canonical({lb: self.choices[lb][i]
                                            for lb, i in zip(labels, indices)})
                step = PathStep(name, tuple(canonical[lb] for lb in labels), channels, size)
                rows.append((indices, costs.step_cost(step).flops / 1e6))
            table[name] = rows
        return table

