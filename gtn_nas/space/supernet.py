"""The search-space contract: a weight-sharing supernet declared as an NNI ``ModelSpace``.

A space is a sequence of named *units* (stem, reconfigurable layers, head). Each unit registers its
NNI mutables (``nni.choice`` under readable hierarchical labels such as ``layer3/op``), runs the
weight-sharing forward for any *sample*, and builds the plain module a student needs for one
sample (:meth:`SupernetUnit.materialize`). On top of that the base class gives every space:

- samples as plain ``dict`` label -> value, validated with errors naming label, value and choices;
- seeded random sampling, canonical forms (labels that a choice makes irrelevant are reset) and
  the number of distinct students;
- :meth:`SupernetSpace.freeze`: a plain ``nn.Sequential`` student with fresh weights (or a *copy*
  of the supernet's), sharing nothing with the space or other students;
- named presets and the split into 4 blocks used for grafting onto a teacher.

Example:
    >>> space = build_space("resnet_supernet", width_mult=0.25, num_classes=10)  # doctest: +SKIP
    >>> student = space.freeze(space.sample(seed=0))                               # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import math
import warnings
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from gtn_nas.errors import ConfigError, SampleError

with warnings.catch_warnings():
    # NNI 3.0 warns that two torch 2.x classes are "not a nn.Module"; harmless.
    warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
    from nni.nas.nn.pytorch import ModelSpace, MutableModule

Sample = dict[str, Any]
"""A student of a space: NNI label -> chosen value (``{"layer1/op": "resblock", ...}``)."""

NUM_BLOCKS = 4
"""Every space splits into this many consecutive blocks for grafting onto a 4-stage teacher."""


class SupernetUnit(MutableModule):
    """One unit of a supernet (stem, a reconfigurable layer, head).

    Subclasses register their choices with ``self.add_mutable(nni.choice(...))`` inside
    ``nni.mutable.label_scope(...)`` and implement :meth:`forward` and :meth:`materialize`.
    """

    def labels(self) -> list[str]:
        """The labels of this unit's own choices, in declaration order."""
        return [str(m.label) for m in self.mutables]

    def forward(self, x: torch.Tensor, sample: Mapping[str, Any]) -> torch.Tensor:  # type: ignore[override]
        """Weight-sharing forward of the path ``sample`` selects."""
        raise NotImplementedError

    def materialize(self, sample: Mapping[str, Any], in_channels: int,
                    inherit_weights: bool) -> tuple[nn.Module | None, int]:
        """Builds this unit's plain module for ``sample`` and the given input width.

        Returns:
            ``(module, out_channels)``; ``module`` is None when the sample drops the unit (the
            output is then the input, so ``out_channels == in_channels``).
        """
        raise NotImplementedError

    def out_channels(self, sample: Mapping[str, Any], in_channels: int) -> int:
        """Output width for ``sample`` and the given input width (override for speed)."""
        return self.materialize(sample, in_channels, False)[1]

    def canonical(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """This unit's values with choices the sample makes irrelevant set to their defaults."""
        return {label: sample[label] for label in self.labels()}


class SupernetSpace(ModelSpace):
    """Base class of every gtn-nas search space (an NNI ``ModelSpace``).

    Subclasses call ``super().__init__()``, then fill :attr:`units` in forward order and set
    :attr:`in_channels`, :attr:`input_size`, :attr:`num_classes`, :attr:`options` (the keyword
    arguments that rebuild the space), :attr:`block_units` (4 groups of unit names) and
    :attr:`presets`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.units = nn.ModuleDict()
        self.in_channels = 3
        self.input_size = 32
        self.num_classes = 10
        self.options: dict[str, Any] = {}
        self.block_units: tuple[tuple[str, ...], ...] = ()
        self.presets: dict[str, Sample] = {}
        self.spec = type(self).__name__  # set by build_space to the name it was built from

    @classmethod
    def create_fixed_module(cls, sample: dict, *args: Any, **kwargs: Any) -> nn.Module:
        """NNI's hook for building the space inside ``model_context(sample)``.

        NNI's execution engines re-instantiate a space under the sample a strategy chose
        (``SimplifiedModelSpace.executable_model``); the result must be that student, not the
        whole supernet. The space is built as usual and frozen: a plain student with fresh
        weights.
        """
        space = nn.Module.__new__(cls)  # skip MutableModule.__new__, which would recurse here
        space.__init__(*args, **kwargs)
        return space.freeze({k: v for k, v in sample.items() if not k.startswith("__")})

    # ------------------------------------------------------------------ choices and samples
    def choices(self) -> dict[str, tuple[Any, ...]]:
        """Label -> allowed values, in declaration order (from NNI's ``simplify()``)."""
        cached = self.__dict__.get("_choices")
        if cached is None:
            # NNI's labels are a str subclass; plain str keeps samples serialisable everywhere.
            cached = {str(label): tuple(m.values) for label, m in self.simplify().items()}
            self.__dict__["_choices"] = cached  # the mutables are fixed once built
        return dict(cached)

    def validate(self, sample: Mapping[str, Any], where: str = "sample") -> Sample:
        """Checks ``sample`` and returns it in canonical form.

        Labels that the sample's other choices make irrelevant (the kernel of a dropped layer)
        may be omitted. ``where`` prefixes messages (a file name, say).

        Raises:
            SampleError: naming the label, the bad value and the allowed values.
        """
        if not isinstance(sample, Mapping):
            raise SampleError(f"{where}: a sample is a mapping label -> value, got "
                              f"{type(sample).__name__}")
        choices = self.choices()
        for label in sample:
            if label not in choices:
                close = difflib.get_close_matches(str(label), list(choices), n=3)
                hint = f" (did you mean: {', '.join(close)}?)" if close else ""
                raise SampleError(f"{where}: unknown label '{label}'{hint}; labels of "
                                  f"{self.spec}: {', '.join(choices)}")
        resolved: Sample = {}
        for label, allowed in choices.items():
            if label in sample:
                resolved[label] = _match_choice(label, sample[label], allowed, where)
            else:
                resolved[label] = allowed[0]  # provisional; checked below
        for label, allowed in choices.items():
            if label not in sample and self._label_matters(label, resolved):
                raise SampleError(f"{where}: missing label '{label}' (allowed: "
                                  f"{_fmt_values(allowed)})")
        return self._canonical(resolved)

    def _label_matters(self, label: str, sample: Sample) -> bool:
        """Whether another value of ``label`` would give another student."""
        base = self._canonical(sample)
        for value in self.choices()[label]:
            if self._canonical({**sample, label: value}) != base:
                return True
        return False

    def _canonical(self, sample: Mapping[str, Any]) -> Sample:
        canonical: Sample = {}
        for unit in self.units.values():
            canonical.update(unit.canonical(sample))
        return {label: canonical[label] for label in self.choices()}

    def sample(self, seed: int) -> Sample:
        """A random student, each label drawn uniformly by NNI from ``seed``; canonical form."""
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
            raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")
        rng = np.random.RandomState(seed)
        mutables = self.__dict__.get("_simplified")
        if mutables is None:
            mutables = self.__dict__["_simplified"] = dict(self.simplify())
        raw = {str(label): m.random(random_state=rng) for label, m in mutables.items()}
        return self._canonical(raw)

    def describe_sample(self, sample: Mapping[str, Any]) -> str:
        """A one-line summary listing only the choices that matter for this student.

        Example: ``layer1/op=resblock layer1/kernel=3 layer1/depth=4 layer2/op=zero ...``
        """
        sample = self.validate(sample)
        return " ".join(f"{label}={value}" for label, value in sample.items()
                        if self._label_matters(label, sample))

    def default_sample(self) -> Sample:
        """The first value of every choice (NNI's default), canonical."""
        return self._canonical({label: values[0] for label, values in self.choices().items()})

    def preset(self, name: str) -> Sample:
        """The sample of a named preset; unknown names get close matches and the list."""
        if name not in self.presets:
            close = difflib.get_close_matches(name, list(self.presets), n=3)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            known = ", ".join(self.presets) or "none"
            raise ConfigError(f"unknown preset '{name}' for space {self.spec}{hint}; "
                              f"presets: {known}")
        return self.validate(self.presets[name], where=f"preset {name}")

    def unit_configs(self, name: str) -> list[tuple[Any, ...]]:
        """The distinct canonical configurations of unit ``name`` (values of its labels)."""
        choices = self.choices()
        unit = self.units[name]
        labels = unit.labels()
        seen: dict[tuple[Any, ...], None] = {}
        for values in itertools.product(*(choices[label] for label in labels)):
            canonical = unit.canonical(dict(zip(labels, values)))
            seen[tuple(canonical[label] for label in labels)] = None
        return list(seen)

    def unit_configurations(self) -> dict[str, int]:
        """Unit name -> number of distinct configurations of that unit."""
        return {name: len(self.unit_configs(name)) for name in self.units}

    def size(self) -> int:
        """The number of distinct canonical samples (students as labelled) in the space.

        Two different samples can still compute the same function (the paper's space: an
        ``identity`` where the shape is kept is a parameter-free pass-through, like ``zero``);
        this counts architectures as the labels describe them.
        """
        return math.prod(self.unit_configurations().values())

    # ------------------------------------------------------------------ models
    def forward(self, x: torch.Tensor, sample: Mapping[str, Any] | None = None,
                units: Sequence[str] | None = None) -> torch.Tensor:
        """Weight-sharing forward of the path ``sample`` (default: :meth:`default_sample`).

        Args:
            x: Input batch (the input of the first unit in ``units``).
            sample: A *validated* sample.
            units: Names of the consecutive units to run (default: all).
        """
        sample = self.default_sample() if sample is None else sample
        for name in (units if units is not None else self.units.keys()):
            x = self.units[name](x, sample)
        return x

    def freeze(self, sample: Mapping[str, Any], inherit_weights: bool = False,  # type: ignore[override]
               seed: int | None = None) -> nn.Sequential:
        """Builds the plain student of ``sample``.

        Args:
            sample: A sample of this space (validated here).
            inherit_weights: Copy the supernet's (sliced) weights instead of a fresh
                initialisation; the student then computes what :meth:`forward` computes for the
                same sample. Either way, nothing is shared with the space.
            seed: Seed of a fresh initialisation (the global RNG is left untouched).

        Returns:
            An ``nn.Sequential`` of plain modules named after the units; dropped units are absent.
        """
        sample = self.validate(sample)
        rng_scope = torch.random.fork_rng() if seed is not None else contextlib.nullcontext()
        with rng_scope:
            if seed is not None:
                torch.manual_seed(seed)
            modules: OrderedDict[str, nn.Module] = OrderedDict()
            channels = self.in_channels
            for name, unit in self.units.items():
                module, channels = unit.materialize(sample, channels, inherit_weights)
                if module is not None:
                    modules[name] = module
        student = nn.Sequential(modules)
        student.train(self.training)
        return student

    def block_channels(self, sample: Mapping[str, Any]) -> list[int]:
        """Output width of each of the 4 blocks for ``sample`` (the first 3 are the cut widths)."""
        sample = self.validate(sample)
        widths, channels = [], self.in_channels
        for group in self.block_units:
            for name in group:
                channels = self.units[name].out_channels(sample, channels)
            widths.append(channels)
        return widths

    def max_block_channels(self) -> list[int]:
        """The widest output each block can have over all samples."""
        possible, widest = {self.in_channels}, []
        for group in self.block_units:
            for name in group:
                unit = self.units[name]
                configs = [dict(zip(unit.labels(), config)) for config in self.unit_configs(name)]
                possible = {unit.out_channels(config, width) for width in possible
                            for config in configs}
            widest.append(max(possible))
        return widest

    @property
    def reference_sample(self) -> Sample:
        """The student whose block shapes define the nominal shapes at the cuts (for grafting).

        Default: the first preset, else :meth:`default_sample`; spaces with layers that can be
        dropped should name a student that keeps every stride.
        """
        return self.preset(next(iter(self.presets))) if self.presets else self.default_sample()

    def block_shapes(self, sample: Mapping[str, Any]) -> list[tuple[int, int, int]]:
        """(C, H, W) at the output of each block for ``sample`` at the space's input size."""
        student = self.freeze(sample, seed=0).eval()
        modules = dict(student.named_children())
        shapes, x = [], self.example_input()
        with torch.no_grad():
            for group in self.block_units:
                for name in group:
                    if name in modules:
                        x = modules[name](x)
                shapes.append(tuple(x.shape[1:]))
        return shapes

    def check_blocks(self) -> None:
        """Raises ConfigError unless :attr:`block_units` splits :attr:`units` into 4 groups."""
        flat = [name for group in self.block_units for name in group]
        if len(self.block_units) != NUM_BLOCKS or flat != list(self.units.keys()):
            raise ConfigError(f"space {self.spec}: block_units must split the units "
                              f"{list(self.units.keys())} into {NUM_BLOCKS} consecutive groups, "
                              f"got {self.block_units}")

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A zero input batch of the space's input shape."""
        return torch.zeros(batch, self.in_channels, self.input_size, self.input_size)



def _fmt_values(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _match_choice(label: str, value: Any, allowed: Sequence[Any], where: str) -> Any:
    """Returns the allowed value equal to ``value`` (same kind: 3 matches 3, not '3' or True)."""
    for candidate in allowed:
        same_kind = isinstance(value, bool) == isinstance(candidate, bool) and (
            isinstance(value, str) == isinstance(candidate, str))
        if same_kind and value == candidate:
            return candidate
    raise SampleError(f"{where}: {label}: {value!r} is not allowed (allowed: "
                      f"{_fmt_values(allowed)})")
