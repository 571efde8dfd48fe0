"""The GTN's trainable distribution over student paths, and its samplers.

One categorical distribution per label of the space (``layer3/op``, ``layer3/kernel``, ...),
parameterised by logits. One path is drawn per mini-batch with the Gumbel-max trick from a
generator seeded per epoch (identical on every DDP rank) and shared by the branches. Samplers
**[our reading, docs/methods.md section 4; docs/gtn.md]**:

- ``uniform``: the logits never move (the ablation); they stay at the *prior*;
- ``learned``: a score-function (REINFORCE) estimator with a moving-average baseline moves the
  logits to *minimise* the per-path branch loss; each label is credited with the losses of the
  branches that run its unit (layer 1 is run by the full-path branch, see
  :mod:`.grafting`), so every layer's logits receive a signal;
- ``adversarial``: the same estimator, *maximising* the per-path branch loss (the students the
  teacher currently serves worst).

Both learning samplers are stepped by their own Adam after each weight step, with a bonus
``entropy_weight * (-KL(p || prior))`` per label (the entropy when the prior is uniform) that
keeps the distribution from collapsing onto a few students.

Priors: ``label`` (uniform over each label's values) or ``student`` (each layer's *distinct
configurations* equally likely, so ``zero`` and ``identity`` are drawn 1/8 of the time each
in the paper's space instead of 1/3: fewer degenerate students during training).

The cost-aware option adds ``cost_weight * max(0, E[MFLOPs] / target - 1)^2`` to the
architecture objective (exact gradient), with E[MFLOPs] the distribution's expected FLOPs under
a per-unit table (each unit's FLOPs at its input in the space's reference student, summed).

Example:
    >>> sampler = PathSampler(space, kind="learned", seed=0)            # doctest: +SKIP
    >>> sample = sampler.draw()                                          # doctest: +SKIP
    >>> sampler.step(sample, {"full": 1.3, "branch1": 0.9})              # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gtn_nas.engine import derive_seed
from gtn_nas.errors import ConfigError
from gtn_nas.space.supernet import Sample, SupernetSpace

SAMPLERS = ("uniform", "learned", "adversarial")
PRIORS = ("label", "student")
SamplerKind = Literal["uniform", "learned", "adversarial"]


def _key(label: str) -> str:
    return label.replace("/", "__").replace(".", "_")


def prior_logits(space: SupernetSpace, prior: str) -> dict[str, torch.Tensor]:
    """Label -> log-prior logits. ``student``: the first label of each unit is weighted by the
    number of distinct unit configurations each of its values leads to (the others uniform)."""
    if prior not in PRIORS:
        raise ConfigError(f"unknown path prior '{prior}'; priors: {', '.join(PRIORS)}")
    choices = space.choices()
    out = {label: torch.zeros(len(values)) for label, values in choices.items()}
    if prior == "label":
        return out
    for name, unit in space.units.items():
        labels = unit.labels()
        if not labels:
            continue
        first = labels[0]
        counts = [sum(1 for config in space.unit_configs(name)
                      if config[0] == value) for value in choices[first]]
        out[first] = torch.log(torch.tensor(counts, dtype=torch.float).clamp(min=1.0))
    return out


class PathSampler(nn.Module):
    """Per-label categorical logits over a space's choices, seeded draws, REINFORCE steps.

    Args:
        space: The search space whose paths are drawn.
        kind: ``uniform``, ``learned`` or ``adversarial``.
        seed: Seeds the path draws (re-derived per epoch by :meth:`set_epoch`).
        arch_lr: Adam learning rate of the logits.
        entropy_weight: Weight of the entropy bonus (``-KL(p || prior)`` per label).
        baseline_decay: Decay of each branch's moving-average loss baseline.
        prior: ``label`` or ``student`` (see the module docstring).
        branch_units: Branch name -> names of the units it runs (the credit assignment of the
            estimator); labels of units in no branch get only the bonus and cost gradients.
        cost_target_mflops: Target of the cost-aware term (None: off).
        cost_weight: Weight of the cost-aware term.
    """

    def __init__(self, space: SupernetSpace, kind: str = "uniform", seed: int = 0,
                 arch_lr: float = 0.02, entropy_weight: float = 0.1,
                 baseline_decay: float = 0.9, prior: str = "label",
                 branch_units: Mapping[str, list[str]] | None = None,
                 cost_target_mflops: float | None = None, cost_weight: float = 1.0) -> None:
        super().__init__()
        if kind not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{kind}'; samplers: {', '.join(SAMPLERS)}")
        if cost_target_mflops is not None and kind == "uniform":
            raise ConfigError("the cost-aware option needs a sampler that learns "
                              "(--sampler learned or adversarial)")
        if cost_target_mflops is not None and not cost_target_mflops > 0:
            raise ConfigError(f"cost target must be > 0 MFLOPs, got {cost_target_mflops}")
        if not 0.0 <= baseline_decay < 1.0:
            raise ConfigError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        if entropy_weight < 0:
            raise ConfigError(f"entropy_weight must be >= 0, got {entropy_weight}")
        self.kind, self.seed, self.prior = kind, seed, prior
        self.entropy_weight, self.cost_weight = entropy_weight, cost_weight
        self.baseline_decay = baseline_decay
        self.cost_target = cost_target_mflops
        self.space = [space]  # referenced, not a submodule
        self.choices = space.choices()
        priors = prior_logits(space, prior)
        for label, values in priors.items():
            self.register_buffer(f"prior_{_key(label)}", values.clone(), persistent=False)
        self.logits = nn.ParameterDict({
            _key(label): nn.Parameter(priors[label].clone(), requires_grad=kind != "uniform")
            for label in self.choices})
        self.unit_labels = {name: unit.labels() for name, unit in space.units.items()}
        self.set_branches(branch_units or {})
        self.register_buffer("baselines", torch.zeros(0))
        self._baseline_names: list[str] = []
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = (torch.optim.Adam(self.logits.parameters(), lr=arch_lr,
                                           betas=(0.9, 0.999)) if self.learns else None)
        self._cost_table = self._build_cost_table(space) if cost_target_mflops else None

    # ------------------------------------------------------------------ distribution
    @property
    def learns(self) -> bool:
        return self.kind != "uniform"

    def set_branches(self, branch_units: Mapping[str, list[str]]) -> None:
        """Declares which labels each branch's loss is credited to."""
        self.branch_labels = {branch: {lb for unit in units for lb in self.unit_labels[unit]}
                              for branch, units in branch_units.items()}

    def set_epoch(self, epoch: int) -> None:
        """Re-seeds the path draws from (seed, epoch): the same on every rank and after resume."""
        self.generator.manual_seed(derive_seed(self.seed, epoch, "paths"))

    def prior_of(self, label: str) -> torch.Tensor:
        return getattr(self, f"prior_{_key(label)}")

    def probabilities(self) -> dict[str, torch.Tensor]:
        """Label -> current probabilities (detached)."""
        return {label: F.softmax(self.logits[_key(label)].detach(), dim=0)
                for label in self.choices}

    def draw(self, generator: torch.Generator | None = None, *, prior: bool = False) -> Sample:
        """One canonical path, by Gumbel-max from the logits (or from the prior)."""
        generator = generator or self.generator
        raw: Sample = {}
        for label, values in self.choices.items():
            logits = (self.prior_of(label) if prior else self.logits[_key(label)]).detach()
            uniform = torch.rand(len(values), generator=generator).clamp_(1e-10, 1.0)
            gumbel = -torch.log(-torch.log(uniform)).to(logits.device)
            raw[label] = values[int(torch.argmax(logits + gumbel))]
        return self.space[0].validate(raw)

    def entropy(self, per_label: bool = False) -> torch.Tensor | dict[str, float]:
        """Sum over labels of each label's entropy (differentiable), or label -> entropy."""
        values = {}
        for label in self.choices:
            log_p = F.log_softmax(self.logits[_key(label)], dim=0)
            values[label] = -(log_p.exp() * log_p).sum()
        if per_label:
            return {label: float(v.detach()) for label, v in values.items()}
        return torch.stack(list(values.values())).sum()

    def kl_to_prior(self) -> torch.Tensor:
        """Sum over labels of KL(p || prior) (differentiable)."""
        total = torch.zeros(())
        for label in self.choices:
            log_p = F.log_softmax(self.logits[_key(label)], dim=0)
            log_q = F.log_softmax(self.prior_of(label), dim=0)
            total = total + (log_p.exp() * (log_p - log_q)).sum()
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

    # ------------------------------------------------------------------ learning
    def labels_that_matter(self, sample: Mapping[str, Any]) -> set[str]:
        """The labels whose value changes ``sample``'s student (per unit, from its canonical
        form: a dropped layer's kernel does not matter)."""
        out = set()
        for name, labels in self.unit_labels.items():
            unit = self.space[0].units[name]
            base = unit.canonical(sample)
            for label in labels:
                if any(unit.canonical({**sample, label: v}) != base
                       for v in self.choices[label]):
                    out.add(label)
        return out

    def advantages(self, sample: Mapping[str, Any], losses: Mapping[str, float]
                   ) -> dict[str, float]:
        """Label -> mean over the branches that run it of (branch loss - branch baseline).

        Only labels that matter for ``sample`` (a dropped layer's kernel does not) are
        credited. Updates the baselines afterwards.
        """
        names = sorted(losses)
        if names != self._baseline_names:  # first call, or a new set of branches
            self._baseline_names = names
            self.baselines = torch.tensor([float(losses[n]) for n in names])
        base = dict(zip(names, self.baselines.tolist()))
        matters = self.labels_that_matter(sample)
        out: dict[str, float] = {}
        for label in self.choices:
            runs = [n for n in names if label in self.branch_labels.get(n, ())]
            if runs and label in matters:
                out[label] = sum(float(losses[n]) - base[n] for n in runs) / len(runs)
        d = self.baseline_decay
        self.baselines = torch.tensor([d * base[n] + (1 - d) * float(losses[n]) for n in names])
        return out

    def step(self, sample: Mapping[str, Any] | None = None,
             losses: Mapping[str, float] | None = None) -> dict[str, float]:
        """One architecture step after the weight step.

        Args:
            sample: The path the branches ran.
            losses: Branch name -> that branch's loss on the path (already averaged over the
                global batch; see :func:`all_reduce_mean`).

        Returns:
            Logged values (``sampler/entropy``, ``sampler/advantage``, ...).
        """
        if not self.learns:
            return {}
        sign = 1.0 if self.kind == "learned" else -1.0
        objective = self.entropy_weight * self.kl_to_prior()
        logged: dict[str, float] = {}
        if sample is not None and losses:
            advantage = self.advantages(sample, losses)
            for label, adv in advantage.items():
                values = self.choices[label]
                log_p = F.log_softmax(self.logits[_key(label)], dim=0)
                objective = objective + sign * adv * log_p[values.index(sample[label])]
            if advantage:
                logged["sampler/advantage"] = sum(advantage.values()) / len(advantage)
        if self._cost_table is not None:
            expected = self.expected_mflops()
            excess = torch.clamp(expected / self.cost_target - 1.0, min=0.0)
            objective = objective + self.cost_weight * excess ** 2
            logged["sampler/expected_mflops"] = float(expected.detach())
        if objective.requires_grad:
            # autograd.grad, not backward(): DDP's hooks on these parameters must not fire
            # outside the weight step's backward pass
            params = list(self.logits.parameters())
            grads = torch.autograd.grad(objective, params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = g
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        logged["sampler/entropy"] = float(self.entropy().detach())
        return logged

    def summary(self) -> dict[str, Any]:
        """Probabilities and entropy per label, and the total entropy, for the epoch record."""
        probs = self.probabilities()
        out: dict[str, Any] = {
            "sampler/entropy": float(self.entropy().detach()),
            "sampler/entropy_by_label": {lb: round(v, 5) for lb, v in
                                         self.entropy(per_label=True).items()},
            "sampler/probs": {lb: {str(value): round(float(v), 5)
                                   for value, v in zip(self.choices[lb], p)}
                              for lb, p in probs.items()}}
        if self._cost_table is not None:
            out["sampler/expected_mflops"] = float(self.expected_mflops().detach())
        return out

    def get_extra_state(self) -> dict[str, Any]:
        """The optimizer's state and the baselines' names travel with the state dict."""
        return {"optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "baseline_names": list(self._baseline_names)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self._baseline_names = list(state.get("baseline_names", []))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        key = prefix + "baselines"
        if key in state_dict:  # its length is only known once a run has stepped
            self.baselines = torch.zeros_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _build_cost_table(self, space: SupernetSpace
                          ) -> dict[str, list[tuple[tuple[int, ...], float]]]:
        """Per unit, the MFLOPs of each raw label combination at the unit's input in the
        reference student (the linear cost model's table; from :class:`UnitCosts`)."""
        from gtn_nas.space.costs import PathStep, UnitCosts

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


def all_reduce_mean(values: Mapping[str, float]) -> dict[str, float]:
    """The mean over DDP ranks of each value (unchanged without a process group), so every
    rank takes the same architecture step."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return dict(values)
    names = sorted(values)
    tensor = torch.tensor([float(values[n]) for n in names], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    tensor /= torch.distributed.get_world_size()
    return dict(zip(names, tensor.tolist()))


def extreme_paths(space: SupernetSpace) -> tuple[Sample, Sample]:
    """The sandwich rule's largest and smallest students: per unit the configuration whose
    module has the most and the fewest parameters at the unit's widest input (ties: the
    later, resp. earlier, configuration)."""
    largest: Sample = {}
    smallest: Sample = {}
    widest = space.in_channels
    for name, unit in space.units.items():
        labels = unit.labels()
        sized = []
        for config in space.unit_configs(name):
            module, _ = unit.materialize(dict(zip(labels, config)), widest, False)
            sized.append(sum(p.numel() for p in module.parameters()) if module is not None
                         else -1)
        configs = space.unit_configs(name)
        if labels:
            big = max(range(len(configs)), key=lambda i: (sized[i], i))
            small = min(range(len(configs)), key=lambda i: (sized[i], i))
            largest.update(zip(labels, configs[big]))
            smallest.update(zip(labels, configs[small]))
        widest = max([widest] + [unit.out_channels(dict(zip(labels, c)), widest)
                                 for c in configs])
    return space.validate(largest), space.validate(smallest)


def path_log_prob(sampler: PathSampler, sample: Mapping[str, Any]) -> float:
    """log p(sample) under the sampler's current distribution (labels that matter only)."""
    total = 0.0
    matters = sampler.labels_that_matter(sample)
    for label, values in sampler.choices.items():
        if label in matters:
            p = sampler.probabilities()[label][values.index(sample[label])]
            total += math.log(max(float(p), 1e-30))
    return total
