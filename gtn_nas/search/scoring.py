"""Scoring a path of the search space, on one contract: the Scorer.

A *Scorer* is callable ``scorer(sample) -> float`` (larger: better) with ``kind``,
``description`` (what ran, for summaries), ``chance`` (the score of guessing, or None),
``space`` and ``check_informative(samples) -> str | None`` (a note when its scores cannot rank).
Kinds (:func:`build_scorer`):

- ``branch``: :class:`BranchScorer`, the validation accuracy of the path through a GTN
  teacher's grafted branch: the full-path branch where the teacher has one (it runs layer 1),
  else branch 1 (which cannot see block 1: the description says so). Each path's BatchNorm
  statistics are first recalibrated on a few *training* batches (:mod:`gtn_nas.teacher.recalibration`;
  the shared statistics are restored).
- ``params``, ``flops``, ``synflow``, ``naswot``: proxies (:mod:`gtn_nas.search.proxies`).

The default kind is ``flops`` (:data:`DEFAULT_SCORE`, chosen by the evidence study).

:func:`resolve_scorer` is the at-chance rule: a branch scorer whose scores sit at chance is
replaced by a named proxy, with a note saying so.

Example:
    >>> space, scorer = load_branch_scorer("runs/gtn/teacher.pt")   # doctest: +SKIP
    >>> scorer(space.preset("s_nas_s"))                              # doctest: +SKIP
    0.71
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Mapping, Protocol, Sequence

import torch

from gtn_nas.errors import ConfigError
from gtn_nas.teacher.recalibration import recalibrated
from gtn_nas.teacher.train import BRANCHES_FORMAT
from gtn_nas.space.supernet import Sample, SupernetSpace

SCORES = ("branch", "params", "flops", "synflow", "naswot", "short")
DEFAULT_SCORE = "flops"
"""The default of :func:`build_scorer` and of ``--score auto``, the evidence study's choice
(issue 19; docs/BENCHMARKS.md, "Evidence study"): 50 random students of resnet_supernet, each
distilled with KD from a standard teacher on Fashion-MNIST (1,000 labels, 30 epochs; seed
noise 1.0 points against a pool spread of 13), ranked before training. NASWOT ranked them best
(Spearman +0.74 [0.54, 0.87]), FLOPs (+0.73 [0.51, 0.87]) and SynFlow (+0.70) level with it
(the lead's paired intervals span 0), the parameter count behind (+0.54; NASWOT's lead over it
[+0.00, +0.46]). Among the tied, FLOPs' top pick within each tier's budget was most often among
the truly best 10% (3 of 3 tiers; bootstrap rate 0.49 vs NASWOT's 0.41), and it needs no
data. Earlier studies ranked otherwise (params first on the short recipe, NASWOT on digits):
the proxies do not carry across data and recipes."""
AT_CHANCE_SIGMAS = 3.0


class Scorer(Protocol):
    """The contract every score follows (see the module docstring)."""

    kind: str
    description: str
    chance: float | None
    space: Any

    def __call__(self, sample: Mapping[str, Any]) -> float: ...

    def check_informative(self, samples: Sequence[Mapping[str, Any]]) -> str | None: ...


def proxy_score(params: int, flops: int) -> float:
    """Capacity proxy: ``log10(parameters) + log10(FLOPs)``."""
    return math.log10(max(params, 1)) + math.log10(max(flops, 1))


class BranchScorer:
    """Validation accuracy of a path through a GTN teacher's grafted branch.

    The teacher's features at the branch's cut (or the images, for the full-path branch) are
    computed once; each path then runs only its branch, after recalibrating the branch's BN
    statistics on ``recalibration_images`` (nothing is recalibrated without them).

    Args:
        teacher: The trained teacher (``forward_with_features``).
        branches: Its :class:`~gtn_nas.teacher.methods.grafting.GraftedBranches`.
        images: Validation images.
        labels: Their labels.
        batch_size: Evaluation batch size.
        branch: ``"auto"`` (full-path branch if present, else branch 1), ``"full"`` or a
            1-based branch number.
        recalibration_images: Training images for per-path BN recalibration.
        recalibration_batch_size: Their batch size during recalibration.
        metric: ``accuracy`` or ``nll`` (minus the mean cross-entropy; smoother).
        chance: The accuracy of guessing (default ``1 / number of classes seen``).
    """

    kind = "branch"

    def __init__(self, teacher: torch.nn.Module, branches, images: torch.Tensor,
                 labels: torch.Tensor, batch_size: int = 256, *, branch: str | int = "auto",
                 recalibration_images: torch.Tensor | None = None,
                 recalibration_batch_size: int = 64, metric: str = "accuracy",
                 chance: float | None = None) -> None:
        if metric not in ("accuracy", "nll"):
            raise ConfigError(f"branch score metric must be accuracy or nll, got '{metric}'")
        has_full = bool(getattr(branches, "has_full", False))
        if branch == "auto":
            branch = "full" if has_full else 1
        if branch == "full" and not has_full:
            raise ConfigError("these GTN branches have no full-path branch (trained without "
                              "full_branch); score with branch 1")
        self.branch, self.metric = branch, metric
        self.branches, self.labels, self.batch_size = branches.eval(), labels, batch_size
        self.space = (getattr(branches, "space", None) or [None])[0]
        teacher.eval()
        self.inputs = self._inputs(teacher, images)
        self.recal_inputs = (self._inputs(teacher, recalibration_images)
                             if recalibration_images is not None and len(recalibration_images)
                             else None)
        self.recal_batch = recalibration_batch_size
        self.chance = chance if chance is not None else 1.0 / max(int(labels.max()) + 1, 1)
        self.last_stderr = float("nan")
        self._cache: dict[tuple, tuple[float, float]] = {}
        where = ("the full-path branch (all layers)" if branch == "full" else
                 f"grafted branch {branch} (cannot see the layers before cut {branch})")
        recal = (f"per-path BN recalibrated on {len(self.recal_inputs)} training images"
                 if self.recal_inputs is not None else "shared BN statistics")
        self.description = (f"GTN teacher branch score: validation {metric} of the path through "
                            f"{where} on {len(labels)} images, {recal}")

    def _inputs(self, teacher: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        if self.branch == "full":
            return images
        index = int(self.branch) - 1
        with torch.no_grad():
            return torch.cat([teacher.forward_with_features(images[i:i + self.batch_size])[1][index]
                              for i in range(0, len(images), self.batch_size)])

    def _run(self, x: torch.Tensor, sample: Sample) -> torch.Tensor:
        if self.branch == "full":
            return self.branches.full_path(x, sample)
        return self.branches.branch(int(self.branch) - 1, x, sample)

    def _module(self) -> torch.nn.Module:
        if self.branch == "full":
            return self.branches.full
        return self.branches.bodies[int(self.branch) - 1]

    def _evaluate(self, sample: Sample) -> tuple[float, float]:
        correct, nll = 0, 0.0
        for i in range(0, len(self.inputs), self.batch_size):
            logits = self._run(self.inputs[i:i + self.batch_size], sample)
            target = self.labels[i:i + self.batch_size]
            correct += int((logits.argmax(1) == target).sum())
            nll += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
        n = max(len(self.labels), 1)
        return correct / n, -nll / n

    def score_with_error(self, sample: Sample) -> tuple[float, float]:
        """``(score, standard error)``; the error of an accuracy is ``sqrt(p (1 - p) / n)``
        over the n scoring images (of ``nll``: NaN, not estimated)."""
        key = tuple(sorted(sample.items()))
        if key not in self._cache:
            with torch.no_grad():
                if self.recal_inputs is None:
                    self._cache[key] = self._evaluate(sample)
                else:
                    recal = self.recal_inputs

                    def run() -> None:
                        for i in range(0, len(recal), self.recal_batch):
                            self._run(recal[i:i + self.recal_batch], sample)

                    with recalibrated(self._module(), run):
                        self._cache[key] = self._evaluate(sample)
        accuracy, nll = self._cache[key]
        if self.metric == "accuracy":
            return accuracy, math.sqrt(max(accuracy * (1 - accuracy), 0.0) / len(self.labels))
        return nll, float("nan")

    def __call__(self, sample: Sample) -> float:
        score, self.last_stderr = self.score_with_error(sample)
        return score

    def accuracy(self, sample: Sample) -> float:
        """The path's accuracy, whatever the metric."""
        self.score_with_error(sample)
        return self._cache[tuple(sorted(sample.items()))][0]

    def check_informative(self, samples: Sequence[Mapping[str, Any]]) -> str | None:
        """A note when the median accuracy of ``samples`` is within 3 standard errors (at
        chance, over the scoring images) of chance, or all accuracies are equal; else None."""
        accuracies = [self.accuracy(dict(s)) for s in samples]
        if not accuracies:
            return None
        median = statistics.median(accuracies)
        sigma = math.sqrt(self.chance * (1 - self.chance) / max(len(self.labels), 1))
        threshold = self.chance + AT_CHANCE_SIGMAS * sigma
        if median <= threshold:
            return (f"branch scores are at chance: median accuracy {median:.3f} over "
                    f"{len(accuracies)} probe students <= {threshold:.3f} (chance "
                    f"{self.chance:.3f} + {AT_CHANCE_SIGMAS:g} standard errors on "
                    f"{len(self.labels)} images); train the teacher longer")
        if len(accuracies) > 1 and len(set(accuracies)) == 1:
            return f"branch scores give every probe student the same accuracy {median:.3f}"
        return None


class CombinedBranchScorer:
    """Branch 1's score with ties broken by the full-path branch's (``primary + weight *
    secondary``, weight 1e-3: a lexicographic order on accuracies), so layer 1's choice is
    decided by a branch that runs it instead of by the order of the candidates.

    The at-chance check and the standard error are branch 1's.
    """

    kind = "branch"

    def __init__(self, primary: BranchScorer, secondary: BranchScorer,
                 weight: float = 1e-3) -> None:
        self.primary, self.secondary, self.weight = primary, secondary, weight
        self.space, self.chance, self.metric = primary.space, primary.chance, primary.metric
        self.branch = "combined"
        self.last_stderr = float("nan")
        self.description = (f"{primary.description}; ties (layer 1) broken by the full-path "
                            f"branch's {secondary.metric}")

    def score_with_error(self, sample: Sample) -> tuple[float, float]:
        value, error = self.primary.score_with_error(sample)
        return value + self.weight * self.secondary.score_with_error(sample)[0], error

    def __call__(self, sample: Sample) -> float:
        score, self.last_stderr = self.score_with_error(sample)
        return score

    def accuracy(self, sample: Sample) -> float:
        return self.primary.accuracy(sample)

    def check_informative(self, samples: Sequence[Mapping[str, Any]]) -> str | None:
        return self.primary.check_informative(samples)


def load_branch_scorer(teacher_path, space_override: str | None = None, *,
                       recalibration_batches: int = 4, recalibration_batch_size: int = 64,
                       branch: str | int = "auto", images: int | None = None,
                       metric: str = "accuracy", seed: int = 0):
    """The space and :class:`BranchScorer` of a GTN run, from its ``teacher.pt``.

    The run directory must hold ``branches.pt`` (written by ``train-teacher --method gtn``) and
    ``config.yaml``; the splits are rebuilt exactly as in training (same data, seed,
    fractions). Paths are scored on the validation split (at most ``images`` of it) after
    recalibrating their BN statistics on ``recalibration_batches`` batches of non-augmented
    training images drawn with ``seed`` (0: no recalibration). ``branch``: ``auto`` (default:
    ``combined`` when the run has a full-path branch, else 1), ``combined``
    (:class:`CombinedBranchScorer`), ``full`` or 1, 2, 3. Plugin-file spaces are built only
    when ``space_override`` names the same file. Returns ``(space, scorer)``.
    """
    from gtn_nas.teacher.methods.grafting import GraftedBranches
    from gtn_nas.teacher.zoo import load_teacher

    if recalibration_batches < 0:
        raise ConfigError(f"recalibration_batches must be >= 0, got {recalibration_batches}")
    branches_path, payload, space, splits = _gtn_run(teacher_path, space_override)
    state = payload["state_dict"]
    teacher, _ = load_teacher(teacher_path)
    full = any(str(k).startswith("full.") for k in state)
    branches = GraftedBranches.for_supernet(teacher, space, space.input_size, full_branch=full)
    try:
        branches.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{branches_path} does not match its teacher: "
                          f"{str(exc).splitlines()[0]}") from exc
    count = len(splits.val) if images is None else min(images, len(splits.val))
    val_images = torch.stack([splits.val[i][0] for i in range(count)])
    labels = torch.tensor([int(splits.val[i][1]) for i in range(count)])
    recal = None
    if recalibration_batches:
        take = min(len(splits.train), recalibration_batches * recalibration_batch_size)
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed))
        recal = torch.stack([splits.train[int(i)][0] for i in order[:take]])
    def make(which: str | int) -> BranchScorer:
        return BranchScorer(teacher, branches, val_images, labels, branch=which,
                            recalibration_images=recal,
                            recalibration_batch_size=recalibration_batch_size, metric=metric,
                            chance=1.0 / splits.num_classes)

    if branch == "auto":
        branch = "combined" if full else 1
    if branch == "combined":
        if not full:
            raise ConfigError(f"{branches_path} has no full-path branch; score with branch 1")
        return space, CombinedBranchScorer(make(1), make("full"))
    return space, make(branch)


def training_batches(data, batches: int, batch_size: int = 64, seed: int = 0
                     ) -> list[torch.Tensor]:
    """``batches`` seeded batches of training images from ``data`` (a ``DataSplits``, a
    dataset of ``(x, y)`` or a tensor of images)."""
    if isinstance(data, torch.Tensor):
        images = data
    else:
        dataset = getattr(data, "train", data)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        with torch.random.fork_rng(devices=[]):  # a training split's augmentation: seeded
            torch.default_generator.manual_seed(seed)
            images = torch.stack([dataset[int(i)][0] for i in order[:batches * batch_size]])
    return [images[i:i + batch_size] for i in range(0, min(len(images), batches * batch_size),
                                                    batch_size)]


def build_scorer(kind: str = DEFAULT_SCORE, space: SupernetSpace | None = None, *,
                 teacher_path=None, space_override: str | None = None, data=None,
                 recalibration_batches: int = 4, images: int | None = None,
                 naswot_batches: int = 2, batch_size: int = 64, seed: int = 0,
                 short_steps: int = 16, short_val_images: int = 1024) -> Scorer:
    """The scorer of ``kind`` (``branch``, ``params``, ``flops``, ``synflow``, ``naswot``,
    ``short``).

    Args:
        kind: The score.
        space: The space (proxies); for ``branch`` it comes from the teacher (if given, it must
            be the teacher's).
        teacher_path: ``teacher.pt`` of a GTN run (``branch``).
        space_override: ``--space`` as the user gave it (trusts a plugin file; ``branch``).
        data: Training images for ``naswot`` (``DataSplits``, dataset or tensor).
        recalibration_batches: ``branch``: training batches per path for BN recalibration.
        images: ``branch``: at most this many validation images (None: all).
        naswot_batches: ``naswot``: batches of ``batch_size`` training images.
        batch_size: Batch size of NASWOT's and recalibration batches.
        seed: Seeds initialisations (synflow, naswot, short) and the choice of training
            images.
        short_steps: ``short``: SGD steps of ``batch_size`` labelled training images.
        short_val_images: ``short``: validation images scored after them.

    Raises:
        ConfigError: an unknown kind, or what the kind needs is missing.
    """
    from gtn_nas.search.proxies import (FlopsScore, NaswotScore, ParamsScore,
                                        ShortTrainingScore, SynflowScore)

    if kind not in SCORES:
        raise ConfigError(f"unknown score '{kind}'; scores: {', '.join(SCORES)}")
    if kind == "branch":
        if teacher_path is None:
            raise ConfigError("the branch score needs a GTN teacher (--teacher teacher.pt)")
        teacher_space, scorer = load_branch_scorer(
            teacher_path, space_override, recalibration_batches=recalibration_batches,
            recalibration_batch_size=batch_size, images=images, seed=seed)
        if space is not None and (space.spec, space.options) != (teacher_space.spec,
                                                                 teacher_space.options):
            raise ConfigError(f"the teacher's branches are of space {teacher_space.spec} "
                              f"{teacher_space.options}, not {space.spec} {space.options}")
        return scorer
    if space is None:
        raise ConfigError(f"the {kind} score needs a search space")
    if kind == "params":
        return ParamsScore(space)
    if kind == "flops":
        return FlopsScore(space)
    if kind == "synflow":
        return SynflowScore(space, seed=seed)
    if data is None:
        raise ConfigError(f"the {kind} score needs training images (data)")
    if kind == "short":
        if not hasattr(data, "train") or not hasattr(data, "val"):
            raise ConfigError("the short score needs a dataset's train and validation splits")
        return ShortTrainingScore(
            space, labelled_batches(data.train, short_steps, batch_size, seed),
            labelled_batches(data.val, -(-short_val_images // batch_size), batch_size, None),
            seed=seed)
    return NaswotScore(space, training_batches(data, naswot_batches, batch_size, seed), seed=seed)


def labelled_batches(dataset, batches: int, batch_size: int = 64, seed: int | None = 0
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` batches ``(x, y)`` of ``dataset``: a seeded random order, or the first
    items in order when ``seed`` is None (validation)."""
    count = min(len(dataset), batches * batch_size)
    order = (torch.arange(count) if seed is None else
             torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count])
    with torch.random.fork_rng(devices=[]):  # a training split's augmentation: seeded
        torch.default_generator.manual_seed(0 if seed is None else seed)
        items = [dataset[int(i)] for i in order]
    return [(torch.stack([x for x, _ in items[i:i + batch_size]]),
             torch.as_tensor([y for _, y in items[i:i + batch_size]]))
            for i in range(0, count, batch_size)]


def probe_samples(space: SupernetSpace, count: int = 16, seed: int = 0) -> list[Sample]:
    """``count`` seeded random students to probe a scorer with."""
    return [space.sample(seed=(seed * 7919 + i) % (2 ** 32)) for i in range(count)]


def resolve_scorer(scorer: Scorer, samples: Sequence[Mapping[str, Any]] | None = None, *,
                   fallback: str | None = None, **build_options: Any
                   ) -> tuple[Scorer, str | None]:
    """The at-chance rule: ``(scorer, None)`` when ``scorer`` can rank ``samples`` (default:
    16 probe students), else ``(fallback scorer, note)``; the note says why and what ranks.

    Args:
        scorer: Any Scorer (proxies are always kept unless every score is equal).
        samples: The probe students.
        fallback: The replacing score (default: :data:`DEFAULT_SCORE`).
        **build_options: For :func:`build_scorer` (``data``, ``seed``, ...).

    Example:
        >>> scorer, note = resolve_scorer(build_scorer("branch", teacher_path=path),
        ...                               data=splits)                        # doctest: +SKIP
        >>> note  # None, or "branch scores are at chance: ...; scored by log10(parameters)"  # doctest: +SKIP
    """
    samples = list(samples) if samples is not None else probe_samples(scorer.space)
    note = scorer.check_informative(samples)
    if note is None:
        return scorer, None
    if fallback is None:
        fallback = DEFAULT_SCORE
    replacement = build_scorer(fallback, scorer.space, **build_options)
    return replacement, f"{note}; not ranking by them: scored by {replacement.description}"


def search_scorer(kind: str, space: SupernetSpace | None, *, teacher_path=None,
                  space_override: str | None = None, data=None, seed: int = 0
                  ) -> tuple[Scorer, list[str]]:
    """The scorer a search ranks by, as ``gtn-nas search --score`` and ``gtn-nas run`` build it.

    ``kind`` is a name of :data:`SCORES` or ``auto`` (:data:`DEFAULT_SCORE`, which needs no
    training ``data``). Every scorer then passes the
    at-chance rule (:func:`resolve_scorer`). Returns the scorer and notes for the summary.

    Raises:
        ConfigError: an unknown kind, or what the kind needs is missing.
    """
    notes: list[str] = []
    if kind == "auto":
        kind = DEFAULT_SCORE
    scorer = build_scorer(kind, space, teacher_path=teacher_path, space_override=space_override,
                          data=data, seed=seed)
    scorer, note = resolve_scorer(scorer, data=data, seed=seed)
    if note:
        notes.append(note)
    return scorer, notes


def teacher_run_space_and_data(teacher_path, space_override: str | None = None):
    """The search space of a GTN run's branches and the run's data splits (non-augmented),
    from its ``teacher.pt``, ``branches.pt`` and ``config.yaml``: what a search scored by a
    proxy needs from a teacher run, without loading the branches. Plugin-file spaces are built
    only when ``space_override`` names the same file."""
    _, _, space, splits = _gtn_run(teacher_path, space_override)
    return space, splits


def _gtn_run(teacher_path, space_override: str | None):
    """``(branches.pt path, its payload, the space it names, the run's non-augmented splits)``.

    Raises:
        ConfigError: no or a damaged ``branches.pt``, an untrusted plugin file, a ``--space``
            that is not the run's.
    """
    from pathlib import Path

    from gtn_nas.config import load_config
    from gtn_nas.fileio import load_checkpoint
    from gtn_nas.space.plugins import build_space, is_file_spec
    from gtn_nas.teacher.train import TeacherRunConfig

    run_dir = Path(teacher_path).parent
    branches_path = run_dir / "branches.pt"
    if not branches_path.is_file():
        raise ConfigError(f"--teacher {teacher_path}: no branches.pt beside it; scoring paths "
                          f"needs a GTN run (train-teacher --method gtn)")
    payload = load_checkpoint(branches_path, BRANCHES_FORMAT, "GTN branches file")
    spec, options = payload.get("space"), payload.get("options")
    if not isinstance(spec, str) or not isinstance(options, dict) or not isinstance(
            payload.get("state_dict"), dict):
        raise ConfigError(f"{branches_path}: damaged GTN branches file")
    if is_file_spec(spec) and space_override != spec:
        raise ConfigError(f"{branches_path} uses the plugin file {spec}; pass --space {spec} "
                          f"to trust it")
    if space_override is not None and space_override != spec and not is_file_spec(spec):
        raise ConfigError(f"--space {space_override} does not match the teacher's space {spec}")
    run = load_config(TeacherRunConfig, run_dir / "config.yaml").resolved()
    splits = run.data.load(seed=run.train.seed, augment=False)
    return branches_path, payload, build_space(spec, **options), splits
