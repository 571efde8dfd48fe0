"""Student branches grafted onto a teacher's cuts (shared by SFTN and GTN).

Branch ``k`` (k = 1, 2, 3) starts from the teacher's feature after block ``k``, passes a
*transform layer* (SFTN, section 3: 3x3 stride-2 convolutions to shrink, 4x4 stride-2 transposed
convolutions to grow, a 1x1 convolution when sizes match; each with BN + ReLU) and then the
student's blocks ``k+1 .. 4``, ending in logits.

- SFTN grafts one fixed student: each branch holds its own copy of that student's plain blocks.
- GTN grafts the supernet: each branch holds its own copy of the supernet's units for blocks
  ``k+1 .. 4`` and runs the path of the sample it is given. Optionally a *full-path branch*
  **[our reading, docs/gtn.md]** holds a copy of every unit and runs the whole path from the
  input image (a one-shot supernet trained beside the teacher): the only branch that runs block
  1, so layer 1's choice matters to a score and to the sampler. The transform produces the widest
  input the path can need and the branch takes the leading channels its path uses (the
  supernet's own weight-sharing rule). Resolutions follow the space's reference student (every
  stride kept) **[our reading]**: a path that drops a strided layer runs its later blocks at that
  nominal resolution.

Example:
    >>> branches = GraftedBranches.for_supernet(teacher, space)          # doctest: +SKIP
    >>> logits = branches([f1, f2, f3], sample)                          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from gtn_nas.errors import ConfigError
from gtn_nas.space.layers import ConvBN
from gtn_nas.space.supernet import NUM_BLOCKS, SupernetSpace


def transform_layer(in_channels: int, out_channels: int, in_size: int, out_size: int,
                    where: str = "transform") -> nn.Sequential:
    """SFTN's transform from a teacher feature (in_channels, in_size) to (out_channels, out_size).

    Raises:
        ConfigError: the sizes do not differ by a power of two.
    """
    if in_size == out_size:
        return nn.Sequential(ConvBN(in_channels, out_channels, 1))
    ratio = in_size / out_size if in_size > out_size else out_size / in_size
    steps = round(math.log2(ratio))
    if ratio != 2 ** steps:
        raise ConfigError(f"{where}: the teacher's feature is {in_size}x{in_size} but the student "
                          f"expects {out_size}x{out_size}; sizes must differ by a power of two")
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(steps):
        if in_size > out_size:
            layers.append(ConvBN(channels, out_channels, 3, stride=2))
        else:
            layers += [nn.ConvTranspose2d(channels, out_channels, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        channels = out_channels
    return nn.Sequential(*layers)


class _SupernetBody(nn.Module):
    """Copies of supernet units run on a sample's path."""

    def __init__(self, units: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.units = nn.ModuleDict({name: copy.deepcopy(unit) for name, unit in units.items()})

    def forward(self, x: torch.Tensor, sample: Mapping[str, Any]) -> torch.Tensor:
        for unit in self.units.values():
            x = unit(x, sample)
        return x


class _StudentBody(nn.Module):
    """Copies of a fixed student's plain modules."""

    def __init__(self, modules: Sequence[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(copy.deepcopy(m) for _, m in modules))

    def forward(self, x: torch.Tensor, sample: Mapping[str, Any] | None = None) -> torch.Tensor:
        return self.layers(x)


class GraftedBranches(nn.Module):
    """Three branches, grafted after teacher blocks 1, 2 and 3.

    Use :meth:`for_student` (SFTN) or :meth:`for_supernet` (GTN) to build one.
    """

    def __init__(self, transforms: Sequence[nn.Module], bodies: Sequence[nn.Module],
                 space: SupernetSpace, fixed_sample: Mapping[str, Any] | None,
                 full: nn.Module | None = None) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        self.bodies = nn.ModuleList(bodies)
        self.full = full
        self.space = [space]  # a list keeps the space out of this module's parameters
        self.fixed_sample = dict(fixed_sample) if fixed_sample is not None else None

    @classmethod
    def for_student(cls, teacher: nn.Module, space: SupernetSpace, sample: Mapping[str, Any],
                    input_size: int) -> "GraftedBranches":
        """SFTN: branches of one student (its own plain blocks, copied per branch)."""
        sample = space.validate(sample)
        student = space.freeze(sample)
        children = dict(student.named_children())
        target = space.block_shapes(sample)
        transforms, bodies = [], []
        for k, (channels, size, _) in enumerate(teacher.feature_shapes(input_size), start=1):
            out_channels, out_size = target[k - 1][0], target[k - 1][1]
            transforms.append(transform_layer(channels, out_channels, size, out_size,
                                              where=f"branch {k}"))
            names = [n for group in space.block_units[k:] for n in group if n in children]
            bodies.append(_StudentBody([(n, children[n]) for n in names]))
        return cls(transforms, bodies, space, sample)

    @classmethod
    def for_supernet(cls, teacher: nn.Module, space: SupernetSpace, input_size: int,
                     full_branch: bool = False) -> "GraftedBranches":
        """GTN: branches holding copies of the supernet's last 3, 2 and 1 blocks, and with
        ``full_branch`` a copy of the whole supernet run from the input image."""
        widest = space.max_block_channels()
        nominal = space.block_shapes(space.reference_sample)
        transforms, bodies = [], []
        for k, (channels, size, _) in enumerate(teacher.feature_shapes(input_size), start=1):
            transforms.append(transform_layer(channels, widest[k - 1], size, nominal[k - 1][1],
                                              where=f"branch {k}"))
            names = [n for group in space.block_units[k:] for n in group]
            bodies.append(_SupernetBody({n: space.units[n] for n in names}))
        full = _SupernetBody(dict(space.units)) if full_branch else None
        return cls(transforms, bodies, space, None, full)

    @property
    def has_full(self) -> bool:
        return self.full is not None

    def branch_units(self) -> dict[str, list[str]]:
        """Branch name (``full``, ``branch1`` ..) -> the supernet units it runs (GTN only)."""
        out = {f"branch{k}": list(body.units) for k, body in enumerate(self.bodies, start=1)
               if isinstance(body, _SupernetBody)}
        if self.full is not None:
            out["full"] = list(self.full.units)
        return out

    def full_path(self, images: torch.Tensor, sample: Mapping[str, Any]) -> torch.Tensor:
        """Logits of the full-path branch (the whole student path from the input image)."""
        if self.full is None:
            raise ValueError("these branches have no full-path branch")
        return self.full(images, sample)

    def branch(self, index: int, feature: torch.Tensor,
               sample: Mapping[str, Any] | None = None) -> torch.Tensor:
        """Logits of branch ``index`` (0-based) alone, from the teacher's feature at its cut."""
        x = self.transforms[index](feature)
        if self.fixed_sample is None:
            if sample is None:
                raise ValueError("supernet branches need a sample (the path to run)")
            x = x[:, : self.space[0].block_channels(sample)[index]]
        return self.bodies[index](x, sample)

    def forward(self, features: Sequence[torch.Tensor],
                sample: Mapping[str, Any] | None = None) -> list[torch.Tensor]:
        """Logits of branches 1..3 for the teacher's ``features`` at the 3 cuts.

        Args:
            features: The teacher's outputs of blocks 1, 2, 3.
            sample: The path (GTN, validated); ignored by SFTN branches.
        """
        if len(features) != NUM_BLOCKS - 1:
            raise ValueError(f"expected {NUM_BLOCKS - 1} features, got {len(features)}")
        return [self.branch(k, feature, sample) for k, feature in enumerate(features)]
