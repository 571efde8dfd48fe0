"""Picks chosen by trained accuracy: successive halving over a search's proposals.

A zero-training score (FLOPs, NASWOT, ...) only *proposes*: per device and tier, the
evolution's feasible candidates whose latency lies in the band ``[band x budget, budget]``
(and above the tier below's budget), best score first (:func:`propose`). Each proposal is then trained on the real student recipe
(the ``none`` job of ``gtn-nas distill``: the same data, split, schedule and seed), its
validation top-1 reported after every validated epoch, and stopped at a rung (``min_epochs x
eta^k`` epochs) unless it is among the best ``1/eta`` of those that reached that rung
(asynchronous successive halving, ASHA: Li et al., MLSys 2020). The pick is the candidate
with the best validation top-1 after the recipe's last epoch.

The trials are scheduled by **Optuna** (one study per device and tier, a
:class:`optuna.pruners.SuccessiveHalvingPruner`, the candidates enqueued in proposal order)
in its storage: an SQLite file in the search folder by default, or any database URL
(``storage``) that several machines share. Optuna is chosen over Ray Tune (a cluster runtime
of its own, heavy to install and to start for a 2-core search) and NNI's multi-trial
experiments (a web server and a trial process per candidate: the cold start costs more than
a small student's training): it is a library, its pruner is the algorithm, its storage lets
any number of workers pull trials, and a worker that dies is found by its heartbeat and its
trial retried. Workers are warm: each loads the data once and trains trial after trial.

Training is shared and exact: a candidate's run lives in ``<folder>/trials/<key>/seed<k>/``
(the engine's resumable checkpoint), so a candidate proposed again (another tier, another
device, a resumed search) continues its run instead of starting over, and the pick's finished
run *is* its ``none`` job: ``gtn-nas run`` copies it into ``distill/none/`` rather than
training it again (:func:`reusable_run`).

With one worker the search is deterministic (the trials run in proposal order); with several
the promotions depend on which trial finishes first, as in any asynchronous halving.

Example:
    >>> proposals = {tier: propose(result, tier, 9) for tier in result.picks}  # doctest: +SKIP
    >>> chosen = select_by_training(space, proposals, result.budgets, recipe,
    ...                             "runs/search/host_cpu", device="host_cpu")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from gtn_nas.config import flat_data_keys, to_plain
from gtn_nas.errors import ConfigError
from gtn_nas.search.trials import (STORAGE_NAME, _drain, _history, _load_study,
                                   _run_workers, _trial_line, open_storage, trial_dir)

_log = logging.getLogger(__name__)


TIER_RULES = ("distinct", "best")
"""How a tier's pick relates to the tier below's (:attr:`HalvingConfig.tiers`)."""


@dataclass
class HalvingConfig:
    """How the search trains its proposals (``search.halving`` of a run config).

    Attributes:
        candidates: Proposals per tier that enter the first rung.
        reduction_factor: ``eta``: the best ``1/eta`` of a rung go on to ``eta`` times the
            epochs.
        min_epochs: Epochs of the first rung (None: the recipe's epochs over ``eta**2``, at
            least 1, so three rungs end at the full recipe).
        band: Proposals have latency in ``[band x budget, budget]`` and above the budget of
            the tier below (:func:`bands`; where a search looks: a tier's best student is
            rarely far below its budget).
        workers: Local worker processes pulling trials (1: in this process, deterministic).
        storage: An Optuna storage URL (None: ``sqlite:///<folder>/trials.db``); a database
            that several machines reach lets each run workers on one search.
        tiers: ``distinct``: each tier's pick costs more than the tier below's (the most
            accurate such candidate, where the most accurate one within the budget is not);
            ``best``: each tier takes the most accurate candidate within its budget, and
            tiers coincide where a larger budget buys no accuracy (said in a note). Only the
            final choice differs: the same trials serve both.
    """

    candidates: int = 9
    reduction_factor: int = 3
    min_epochs: int | None = None
    band: float = 0.5
    workers: int = 1
    storage: str | None = None
    tiers: str = "distinct"

    def validate(self) -> None:
        checks = [(_is_int(self.candidates) and self.candidates >= 1,
                   f"candidates must be an integer >= 1, got {self.candidates!r}"),
                  (_is_int(self.reduction_factor) and self.reduction_factor >= 2,
                   f"reduction_factor must be an integer >= 2, got {self.reduction_factor!r}"),
                  (self.min_epochs is None or (_is_int(self.min_epochs)
                                               and self.min_epochs >= 1),
                   f"min_epochs must be an integer >= 1 or null, got {self.min_epochs!r}"),
                  (isinstance(self.band, (int, float)) and not isinstance(self.band, bool)
                   and 0 <= self.band < 1, f"band must be in [0, 1), got {self.band!r}"),
                  (_is_int(self.workers) and self.workers >= 1,
                   f"workers must be an integer >= 1, got {self.workers!r}"),
                  (self.tiers in TIER_RULES,
                   f"tiers must be {' or '.join(TIER_RULES)}, got {self.tiers!r}")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"search.halving: {message}")

    def first_rung(self, epochs: int) -> int:
        if self.min_epochs is not None:
            return self.min_epochs
        return max(1, int(round(epochs / self.reduction_factor ** 2)))

    def rungs(self, epochs: int) -> list[int]:
        """The epochs at which trials are compared (the last is the recipe's end).

        Example:
            >>> HalvingConfig().rungs(30)
            [3, 9, 27, 30]
            >>> HalvingConfig().rungs(10)
            [1, 3, 9, 10]
        """
        rungs, epoch = [], self.first_rung(epochs)
        while epoch < epochs:
            rungs.append(epoch)
            epoch *= self.reduction_factor
        return rungs + [epochs]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- proposals
def propose(space, candidates, limits: Mapping[str, float], count: int,
            low: float = 0.0) -> list:
    """The ``count`` best-scored candidates within ``limits`` whose latency (else MFLOPs) is
    at least ``low``, filled up with the best-scored feasible ones below it when too few lie
    above; best score first, one per distinct network (two samples that differ only by a
    parameter-free pass-through build the same student)."""
    metric = "latency_ms" if "latency_ms" in limits else next(iter(limits))
    feasible = [c for c in candidates if c.violation(limits) == 0]
    order = sorted(feasible, key=lambda c: (-c.score, c.metric(metric) or 0.0,
                                            sample_key(c.sample)))
    inside = [c for c in order if (c.metric(metric) or 0.0) >= low]
    outside = [c for c in order if (c.metric(metric) or 0.0) < low]
    chosen, networks = [], set()
    for candidate in inside + outside:
        network = network_key(space, candidate.sample)
        if network not in networks:
            networks.add(network)
            chosen.append(candidate)
            if len(chosen) == count:
                break
    return chosen


def bands(budgets: Mapping[str, Mapping[str, float]], band: float = 0.5
          ) -> dict[str, float]:
    """Each tier's lowest proposal cost: ``band`` times its budget, and above the budget of
    the tier below (so a tier's own proposals never fit the tier below: its pick can always
    be a costlier student than that tier's).

    Example:
        >>> bands({"s": {"latency_ms": 1.0}, "m": {"latency_ms": 1.5},
        ...        "l": {"latency_ms": 4.0}})
        {'s': 0.5, 'm': 1.0, 'l': 2.0}
    """
    lows, below = {}, None
    for tier, limits in budgets.items():
        metric = "latency_ms" if "latency_ms" in limits else next(iter(limits))
        low = band * limits[metric]
        if below is not None and below.get(metric) is not None and below[metric] < limits[metric]:
            low = max(low, below[metric])
        lows[tier], below = low, limits
    return lows


def network_key(space, sample: Mapping[str, Any]) -> str:
    """What the frozen student computes, as text: its modules without parameter-free
    pass-throughs (``identity`` where the shape does not change is the same as ``zero``)."""
    lines = repr(space.freeze(sample, seed=0)).splitlines()
    return "\n".join(line for line in lines if not line.strip().endswith("Identity()"))


def sample_key(sample: Mapping[str, Any]) -> str:
    """A short stable name of a canonical sample (its trial folder)."""
    import hashlib  # here, not above: its OpenSSL load would slow `gtn-nas --help`

    text = json.dumps({str(k): sample[k] for k in sorted(sample)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- results
@dataclass
class TrialRecord:
    """One candidate's trial in one tier."""

    key: str
    sample: dict[str, Any]
    latency_ms: float | None
    mflops: float
    params: int
    score: float
    state: str
    values: dict[int, float]
    final: float | None
    trained_epochs: int = 0
    trained_seconds: float = 0.0
    wall_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "values": {str(k): v for k, v in
                                                       sorted(self.values.items())}}


@dataclass
class TierSelection:
    """What the halving of one tier trained and chose."""

    tier: str
    rungs: list[int]
    trials: list[TrialRecord]
    pick: TrialRecord
    why: str
    notes: list[str] = field(default_factory=list)

    def per_rung(self) -> list[int]:
        """How many candidates reached each rung."""
        return [sum(1 for t in self.trials if max(t.values, default=0) >= rung)
                for rung in self.rungs]

    def to_json(self) -> dict[str, Any]:
        return {"tier": self.tier, "rungs": self.rungs, "per_rung": self.per_rung(),
                "pick": self.pick.key, "why": self.why, "notes": self.notes,
                "trials": [t.to_json() for t in self.trials]}


# ----------------------------------------------------------------------------- trials
# ----------------------------------------------------------------------------- selection
def select_by_training(space, proposals: Mapping[str, list], budgets: Mapping[str, Mapping],
                       recipe, folder: str | os.PathLike, *, device: str,
                       halving: HalvingConfig | None = None, seed: int = 0, splits=None,
                       say: Callable[[str], None] | None = None) -> dict[str, TierSelection]:
    """Trains each tier's proposals by successive halving and picks the most accurate.

    Args:
        space: The students' space (a registered name or the plugin file the user named).
        proposals: Tier -> candidates (:class:`~gtn_nas.search.strategy.Candidate`), in the
            order they enter (best proxy score first).
        budgets: Tier -> limits (for the report).
        recipe: The :class:`~gtn_nas.distill.jobs.DistillRunConfig` of the students' training
            without a teacher (method ``none``): what each trial trains.
        folder: The search folder (the trials' runs and the storage live there).
        device: The profile's name (studies are per device and tier).
        halving: The halving's settings.
        seed: The training seed of every trial.
        splits: The recipe's data splits, when already loaded (one worker only).
        say: Receives a line per finished trial.

    Returns:
        Tier -> :class:`TierSelection`.

    Raises:
        ConfigError: a bad setting, a recipe that is not teacherless, a storage that cannot be
            opened, a folder holding another search under the same study names.
    """
    import optuna

    halving = halving or HalvingConfig()
    halving.validate()
    if recipe.method != "none" or recipe.teacher is not None:
        raise ConfigError("the search trains its candidates without a teacher (method none)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    url = halving.storage or f"sqlite:///{(folder / STORAGE_NAME).resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    epochs = recipe.train.epochs
    names = []
    for tier, candidates in proposals.items():
        if not candidates:
            raise ConfigError(f"tier {tier}: no candidate to train (raise --budget-evals)")
        samples = {sample_key(c.sample): dict(c.sample) for c in candidates}
        context = {"space": space.spec, "options": to_plain(space.options),
                   "recipe": to_plain(recipe), "seed": seed, "folder": str(folder.resolve()),
                   "samples": samples, "min_epochs": halving.first_rung(epochs),
                   "eta": halving.reduction_factor}
        names.append(_prepare_study(storage, f"{device}/{tier}", context, list(samples)))
    if halving.workers == 1:
        def on_trial(name: str, trial) -> None:
            if say is not None:
                say(_trial_line(name, trial, epochs))

        _drain(url, names, splits=splits, on_trial=on_trial)
    else:
        _run_workers(url, names, halving.workers, say)
    trained: dict[str, TrialRecord] = {}
    chosen = {}
    for name, (tier, candidates) in zip(names, proposals.items()):
        study, _ = _load_study(storage, name)
        records = _trial_records(study, candidates, folder, seed)
        trained.update({r.key: r for r in records if r.final is not None})
        chosen[tier] = records
    by_key = {sample_key(c.sample): c for cs in proposals.values() for c in cs}
    return _choose(chosen, trained, by_key, budgets, halving.rungs(epochs),
                   distinct=halving.tiers == "distinct")


def _prepare_study(storage, prefix: str, context: dict[str, Any], keys: list[str]) -> str:
    """The study of this tier's halving (``<device>/<tier>/<attempt>``), its candidates
    enqueued in proposal order; returns its name.

    A finished attempt is reused as it is. An unfinished one (a killed search) is not
    continued but started again as the next attempt, every candidate enqueued in the same
    order: each trial first replays what its run's checkpoint already holds (nothing is
    trained twice), so the halving's decisions are those of an uninterrupted search,
    whatever order the interrupted one left its trials in.

    Raises:
        ConfigError: the storage holds this tier's study of another search.
    """
    import hashlib

    import optuna
    from optuna.trial import TrialState

    # the recipe's data section digested as the flat keys before it: a search started
    # before the section existed resumes
    digest = hashlib.sha256(json.dumps(flat_data_keys(context), sort_keys=True).encode()
                            ).hexdigest()[:16]
    attempts = sorted(int(name.rsplit("/", 1)[1]) for name in
                      optuna.study.get_all_study_names(storage)
                      if name.rsplit("/", 1)[0] == prefix and name.rsplit("/", 1)[1].isdigit())
    if attempts:
        name = f"{prefix}/{attempts[-1]}"
        study = optuna.load_study(study_name=name, storage=storage)
        existing = study.user_attrs.get("digest")
        if existing is not None and existing != digest:
            raise ConfigError(f"the search storage already holds study {prefix} of another "
                              f"search (other candidates, recipe or seed); choose another "
                              f"--out or --storage")
        ended = {(t.params or {}).get("candidate") for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))}
        if existing is not None and all(key in ended for key in keys):
            return name
    name = f"{prefix}/{(attempts[-1] if attempts else 0) + 1}"
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    for key, value in context.items():
        study.set_user_attr(key, value)
    for key in keys:
        study.enqueue_trial({"candidate": key})
    study.set_user_attr("digest", digest)  # last: an attempt without it was never ready
    return name


def _trial_records(study, candidates: list, folder: Path, seed: int) -> list[TrialRecord]:
    """One record per candidate of a tier's study (its last finished or stopped trial)."""
    from optuna.trial import TrialState

    by_key = {sample_key(c.sample): c for c in candidates}
    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
    latest: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        key = (trial.params or {}).get("candidate")
        if key in by_key and trial.state in states:
            latest[key] = trial  # a retried trial replaces its failed attempt
    records = []
    for key, candidate in by_key.items():
        trial = latest.get(key)
        if trial is None:
            continue
        history = _history(trial_dir(folder, key, seed))
        start = int(trial.user_attrs.get("start_epoch", 0))
        end = int(trial.user_attrs.get("end_epoch", len(history)))
        seconds = sum(r.get("seconds", 0.0) for r in history[start:end])
        records.append(TrialRecord(
            key, dict(candidate.sample), candidate.latency_ms, candidate.mflops,
            candidate.params, candidate.score, states[trial.state],
            {int(k): float(v) for k, v in trial.intermediate_values.items()},
            trial.value if trial.state == TrialState.COMPLETE else None,
            trained_epochs=max(0, end - start), trained_seconds=round(seconds, 3),
            wall_seconds=float(trial.user_attrs.get("wall_seconds", 0.0))))
    return records


def _choose(records: dict[str, list[TrialRecord]], trained: dict[str, TrialRecord],
            by_key: Mapping[str, Any], budgets: Mapping[str, Mapping[str, float]],
            rungs: list[int], *, distinct: bool = True) -> dict[str, TierSelection]:
    """Each tier's pick: the most accurate candidate after the full recipe among *every*
    candidate this device's search trained to the end that fits the tier's budget (a tier's
    own trials and those of other tiers alike); with ``distinct``, costlier than the tier
    below (where the most accurate one is not, the most accurate one that is, said in a
    note), else the most accurate one even where it is the tier below's pick (a note says the
    tiers coincide)."""
    chosen: dict[str, TierSelection] = {}
    previous: TrialRecord | None = None
    previous_tier = ""
    for tier, tier_records in records.items():
        fitting = sorted((r for r in trained.values()
                          if by_key[r.key].violation(budgets[tier]) == 0),
                         key=lambda r: (-r.final, _cost(r), r.key))
        if not fitting:
            raise ConfigError(f"tier {tier}: no candidate finished its training (see the "
                              f"search's log); run the search again to continue it")
        notes = []
        pick = fitting[0]
        if not distinct and previous is not None and pick.key == previous.key:
            notes.append(f"the same student as tier {previous_tier}'s: no candidate within "
                         f"this tier's larger budget is more accurate")
        elif distinct and previous is not None and _cost(pick) <= _cost(previous):
            costlier = [r for r in fitting if _cost(r) > _cost(previous)]
            if costlier:
                notes.append(f"its most accurate candidate ({pick.key}, "
                             f"{pick.final * 100:.1f}%) is no costlier than tier "
                             f"{previous_tier}'s pick; took the most accurate one that is "
                             f"({costlier[0].key}, {costlier[0].final * 100:.1f}%)")
                pick = costlier[0]
            else:
                notes.append(f"no trained candidate within its budget costs more than tier "
                             f"{previous_tier}'s pick: the two tiers coincide")
        own = "" if any(r.key == pick.key for r in tier_records) else \
            " (trained for another tier)"
        if pick is fitting[0]:
            runner = f", ahead of {fitting[1].key} ({fitting[1].final * 100:.1f}%)" \
                if len(fitting) > 1 else ""
            why = (f"the best validation top-1 after the full {rungs[-1]} epochs "
                   f"({pick.final * 100:.1f}%{runner}) among the {len(fitting)} candidates "
                   f"within the budget trained to the end{own}")
        else:
            why = (f"the best validation top-1 after the full {rungs[-1]} epochs "
                   f"({pick.final * 100:.1f}%) among the candidates within the budget trained "
                   f"to the end that cost more than tier {previous_tier}'s pick{own}")
        why += (f"; {len(tier_records)} candidates entered successive halving for this tier "
                f"(rungs at epochs {', '.join(map(str, rungs))})")
        notes += blind_rungs(tier_records, rungs)
        chosen[tier] = TierSelection(tier, rungs, tier_records, pick, why, notes)
        previous, previous_tier = pick, tier
    return chosen


BLIND_SPREAD = 0.02
"""A rung whose candidates' validation top-1 all lie within this of each other could not
tell them apart (two points: about twice the standard error of a 1,000-image split)."""


def blind_rungs(records: list[TrialRecord], rungs: list[int],
                spread: float = BLIND_SPREAD) -> list[str]:
    """A note for each rung before the last where some candidates stopped although every
    candidate's validation top-1 there was within ``spread`` of the others (e.g. all still
    at chance): that cut was a coin toss, and longer rungs (``halving.min_epochs``) would
    rank them."""
    notes = []
    for rung in rungs[:-1]:
        values = [r.values[rung] for r in records if rung in r.values]
        stopped = sum(1 for r in records if r.trained_epochs == rung and r.final is None)
        if len(values) >= 2 and stopped and max(values) - min(values) < spread:
            notes.append(f"at epoch {rung} its {len(values)} candidates were within "
                         f"{(max(values) - min(values)) * 100:.1f} points of each other "
                         f"({min(values) * 100:.1f}-{max(values) * 100:.1f}%), so the {stopped} "
                         f"it stopped there were not told apart from the rest; longer rungs "
                         f"(search.halving.min_epochs) would rank them")
    return notes


def _cost(record: TrialRecord) -> float:
    return record.latency_ms if record.latency_ms is not None else record.mflops


def reusable_run(folder: str | os.PathLike, sample: Mapping[str, Any], seed: int
                 ) -> Path | None:
    """The trial run of ``sample`` at ``seed`` under a search folder, else None. A trial is
    the student's ``none`` job under another name (the same identity: space, sample, recipe,
    seed), so its checkpoint can be copied in place of that job and the job continues from it
    exactly (a finished trial needs no more training)."""
    run_dir = trial_dir(Path(folder), sample_key(sample), seed)
    return run_dir if (run_dir / "last.pt").is_file() else None


def apply_selection(result, chosen: Mapping[str, TierSelection]) -> dict[str, list]:
    """Makes ``chosen``'s picks the search's (``result.picks``, ``result.selection``), gives
    each candidate trained to the end its validation top-1 (``val_acc``), and returns, per
    tier, the finished candidates within its budget, the pick first then by accuracy (what a
    re-measurement falls back on when the pick measures over its budget)."""
    by_key = {sample_key(c.sample): c for c in result.candidates}
    for selection in chosen.values():
        for record in selection.trials:
            if record.final is not None and record.key in by_key:
                by_key[record.key].val_acc = record.final
    finished = [c for c in by_key.values() if c.val_acc is not None]
    ranked = {}
    for tier, selection in chosen.items():
        pick = by_key[selection.pick.key]
        result.picks[tier] = pick
        others = sorted((c for c in finished if c is not pick
                         and c.violation(result.budgets[tier]) == 0),
                        key=lambda c: (-c.val_acc, c.latency_ms or 0.0, sample_key(c.sample)))
        ranked[tier] = [pick] + others
    result.selection = dict(chosen)
    return ranked
