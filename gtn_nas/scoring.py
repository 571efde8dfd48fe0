"""Scoring a path of the search space: through a GTN teacher's grafted branch, or by a proxy.

- :class:`BranchScorer`: the validation accuracy of the path through the teacher's grafted
  supernet branch 1 (weight sharing, no training); the teacher's features at cut 1 are computed
  once, so each path only runs its branch.
- :func:`proxy_score`: without a teacher, ``log10(parameters) + log10(FLOPs)`` (capacity: the
  search then picks the largest student each budget allows).

Example:
    >>> space, scorer = load_branch_scorer("runs/gtn/teacher.pt")   # doctest: +SKIP
    >>> scorer(space.preset("s_nas_s"))                              # doctest: +SKIP
    0.71
"""

from __future__ import annotations

import math

import torch

from gtn_nas.errors import ConfigError
from gtn_nas.space import Sample

BRANCHES_FORMAT = "gtn-nas-gtn-branches/1"


def proxy_score(params: int, flops: int) -> float:
    """Capacity proxy: ``log10(parameters) + log10(FLOPs)``."""
    return math.log10(max(params, 1)) + math.log10(max(flops, 1))


class BranchScorer:
    """Validation accuracy of a path through a GTN teacher's grafted branch 1.

    The teacher's features at cut 1 are computed once; each path then runs only its branch.
    """

    def __init__(self, teacher: torch.nn.Module, branches, images: torch.Tensor,
                 labels: torch.Tensor, batch_size: int = 256) -> None:
        self.branches, self.labels, self.batch_size = branches.eval(), labels, batch_size
        teacher.eval()
        with torch.no_grad():
            self.features = torch.cat([teacher.forward_with_features(images[i:i + batch_size])[1][0]
                                       for i in range(0, len(images), batch_size)])

    def __call__(self, sample: Sample) -> float:
        correct = 0
        with torch.no_grad():
            for i in range(0, len(self.features), self.batch_size):
                logits = self.branches.branch(0, self.features[i:i + self.batch_size], sample)
                correct += int((logits.argmax(1) == self.labels[i:i + self.batch_size]).sum())
        return correct / len(self.labels)


def load_branch_scorer(teacher_path, space_override: str | None = None):
    """The space and :class:`BranchScorer` of a GTN run, from its ``teacher.pt``.

    The run directory must hold ``branches.pt`` (written by ``train-teacher --method gtn``) and
    ``config.yaml``; the validation split is rebuilt exactly as in training (same data, seed,
    fractions). Returns ``(space, scorer)``.
    """
    from pathlib import Path

    from gtn_nas.config import load_config
    from gtn_nas.data import load_dataset
    from gtn_nas.fileio import load_checkpoint
    from gtn_nas.methods.grafting import GraftedBranches
    from gtn_nas.plugins import build_space, is_file_spec
    from gtn_nas.teachers import load_teacher
    from gtn_nas.train_teacher import TeacherRunConfig

    teacher_path = Path(teacher_path)
    run_dir = teacher_path.parent
    branches_path = run_dir / "branches.pt"
    if not branches_path.is_file():
        raise ConfigError(f"--teacher {teacher_path}: no branches.pt beside it; scoring paths "
                          f"needs a GTN run (train-teacher --method gtn)")
    teacher, _ = load_teacher(teacher_path)
    payload = load_checkpoint(branches_path, BRANCHES_FORMAT, "GTN branches file")
    spec, options, state = payload.get("space"), payload.get("options"), payload.get("state_dict")
    if not isinstance(spec, str) or not isinstance(options, dict) or not isinstance(state, dict):
        raise ConfigError(f"{branches_path}: damaged GTN branches file")
    if is_file_spec(spec) and space_override != spec:
        raise ConfigError(f"{branches_path} uses the plugin file {spec}; pass --space {spec} "
                          f"to trust it")
    if space_override is not None and space_override != spec and not is_file_spec(spec):
        raise ConfigError(f"--space {space_override} does not match the teacher's space {spec}")
    space = build_space(spec, **options)
    branches = GraftedBranches.for_supernet(teacher, space, space.input_size)
    try:
        branches.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{branches_path} does not match its teacher: "
                          f"{str(exc).splitlines()[0]}") from exc
    run = load_config(TeacherRunConfig, run_dir / "config.yaml").resolved()
    splits = load_dataset(run.data, root=run.data_root, image_size=run.image_size,
                          seed=run.train.seed, limit=run.limit, augment=False,
                          **run.data_options)
    images = torch.stack([splits.val[i][0] for i in range(len(splits.val))])
    labels = torch.tensor([int(splits.val[i][1]) for i in range(len(splits.val))])
    return space, BranchScorer(teacher, branches, images, labels)
