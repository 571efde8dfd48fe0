"""The search's trials, scheduled by Optuna: storage, warm workers, heartbeats.

One study per device and tier holds that tier's candidates as enqueued trials; a worker loads
the data once and trains trial after trial (:func:`work`), each trial one candidate on the
students' recipe (:func:`gtn_nas.distill.jobs.train_job`), its validation top-1 reported to
the study after every validated epoch and the study's successive-halving pruner deciding
whether it goes on. Everything a worker needs (space, recipe, seed, candidates, the trials'
folder) is in the study's user attributes, so any process that reaches the storage can work
on it. A trial whose worker dies stops beating (:data:`HEARTBEAT_S`); after
:data:`GRACE_S` it is failed and retried from its run's last checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from gtn_nas.errors import ConfigError, GtnNasError

STORAGE_NAME = "trials.db"
TRIALS_DIR = "trials"
HEARTBEAT_S = 10
"""A running trial's heartbeat; a trial silent for :data:`GRACE_S` is failed and retried."""
GRACE_S = 30


def trial_dir(folder: Path, key: str, seed: int) -> Path:
    return Path(folder) / TRIALS_DIR / key / f"seed{seed}"


def open_storage(url: str):
    """Optuna's RDB storage with heartbeats (a dead worker's trial is failed and retried)."""
    import optuna

    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) \
        or optuna.storages.RetryFailedTrialCallback
    options: dict[str, Any] = {}
    if url.startswith("sqlite"):
        options["connect_args"] = {"timeout": 120}  # several local workers share the file
    kwargs = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S}
    callback = retry(max_retry=2)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=options,
                                          heartbeat_stale_trial_callback=callback, **kwargs)
    except TypeError:  # Optuna before 4.9 names the callback failed_trial_callback
        return optuna.storages.RDBStorage(url, engine_kwargs=options,
                                          failed_trial_callback=callback, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a bad URL or an unreachable database
        raise ConfigError(f"search storage {url}: {str(exc).splitlines()[0]}") from exc


class _Work:
    """What a worker needs to train trials: the space, the recipe and the data, built once."""

    def __init__(self, context: Mapping[str, Any], splits=None) -> None:
        from gtn_nas.config import from_mapping
        from gtn_nas.distill.jobs import DistillRunConfig, load_splits
        from gtn_nas.space.plugins import build_space

        self.context = context
        self.recipe = from_mapping(DistillRunConfig, context["recipe"], "search recipe")
        self.space = build_space(context["space"], **context["options"])
        self.seed = int(context["seed"])
        self.folder = Path(context["folder"])
        self.splits = splits if splits is not None else load_splits(self.recipe, seed=0)
        self.parent: int | None = None  # a local worker's search: it stops when that ends

    def objective(self, trial) -> float:
        import optuna

        from gtn_nas.distill.jobs import train_job
        from gtn_nas.distill.specs import StudentSpec

        fixed = trial.storage.get_trial_system_attrs(trial._trial_id).get("fixed_params") or {}
        if "candidate" not in fixed:  # the queue emptied between a check and this trial
            raise _EmptyQueue("no candidate left to train")
        key = trial.suggest_categorical("candidate", sorted(self.context["samples"]))
        sample = self.context["samples"][key]
        run_dir = trial_dir(self.folder, key, self.seed)
        started = time.perf_counter()
        before = _history(run_dir)
        trial.set_user_attr("start_epoch", len(before))

        def report(record: Mapping[str, Any]) -> None:
            if self.parent is not None and os.getppid() != self.parent:
                raise SystemExit("the search that started this worker has ended")
            if record.get("val/acc") is None:
                return
            trial.report(float(record["val/acc"]), int(record["epoch"]))
            if trial.should_prune():
                trial.set_user_attr("end_epoch", int(record["epoch"]))
                trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))
                raise optuna.TrialPruned()

        for record in before:  # what an earlier trial of this candidate already trained
            report(record)
        spec = StudentSpec(key, self.space, sample, "search candidate")
        _, result = train_job(self.recipe, spec, self.seed, self.splits, None, None, run_dir,
                              on_epoch_end=report)
        validated = [r["val/acc"] for r in result.history if r.get("val/acc") is not None]
        trial.set_user_attr("end_epoch", len(result.history))
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))
        return float(validated[-1])


class _EmptyQueue(GtnNasError):
    """A worker asked for a trial after the last candidate was taken."""


def _history(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of a trial's checkpoint (none when it has not finished an epoch)."""
    from gtn_nas.engine import CHECKPOINT_FORMAT, CHECKPOINT_NAME
    from gtn_nas.fileio import load_checkpoint

    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        return []
    return list(load_checkpoint(path, CHECKPOINT_FORMAT, "training checkpoint")["history"])


def _load_study(storage, name: str):
    import optuna

    context = optuna.load_study(study_name=name, storage=storage).user_attrs
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=int(context["min_epochs"]), reduction_factor=int(context["eta"]),
        min_early_stopping_rate=0)
    return optuna.load_study(study_name=name, storage=storage, pruner=pruner,
                             sampler=optuna.samplers.RandomSampler(seed=0)), context


def _waiting(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _running(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def work(storage_url: str, names: list[str], splits=None,
         on_trial: Callable[[str, Any], None] | None = None, parent: int | None = None
         ) -> None:
    """Trains the waiting trials of the studies ``names`` (in order) until none is left: one
    warm worker (the data is loaded once). Several workers may run it on one storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url)
    cache: dict[str, _Work] = {}
    for name in names:
        study, context = _load_study(storage, name)
        data_key = json.dumps(context["recipe"], sort_keys=True)
        if data_key not in cache:
            cache[data_key] = _Work(context, splits)
        worker = cache[data_key]
        worker.context, worker.parent = context, parent
        callbacks = [] if on_trial is None else [
            lambda _study, trial, name=name: on_trial(name, trial)]
        while _waiting(study):
            study.optimize(worker.objective, n_trials=1, catch=(_EmptyQueue,),
                           callbacks=callbacks, gc_after_trial=False)


def _drain(storage_url: str, names: list[str], splits=None,
           on_trial: Callable[[str, Any], None] | None = None) -> None:
    """:func:`work` until no trial waits or runs: a trial whose worker died (killed search,
    lost machine) is failed once its heartbeat is :data:`GRACE_S` old and retried here."""
    import optuna

    storage = open_storage(storage_url)
    while True:
        work(storage_url, names, splits=splits, on_trial=on_trial)
        studies = [_load_study(storage, name)[0] for name in names]
        if not any(_running(study) for study in studies):
            return
        time.sleep(HEARTBEAT_S)
        for study in studies:
            optuna.storages.fail_stale_trials(study)


def _worker_main(storage_url: str, names: list[str], threads: int, parent: int) -> None:
    """A local worker process (spawned): one thread budget, then :func:`work` until its
    search ends (a killed search's workers stop after their current epoch)."""
    import torch

    torch.set_num_threads(threads)
    work(storage_url, names, parent=parent)


def _run_workers(url: str, names: list[str], workers: int,
                 say: Callable[[str], None] | None) -> None:
    """``workers`` spawned processes pulling the studies' trials; returns when all finish.
    A worker that fails is reported in one line (its trial is retried by another)."""
    import multiprocessing

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    threads = max(1, cores // workers)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(url, names, threads, os.getpid()),
                                 daemon=True)
                 for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.exitcode for p in processes if p.exitcode]
    if failed and say is not None:
        say(f"{len(failed)} search worker(s) stopped with an error; their trials were retried")
    _drain(url, names)  # a trial whose worker died is failed by its heartbeat and retried


def _trial_line(name: str, trial, epochs: int) -> str:
    from optuna.trial import TrialState

    key = (trial.params or {}).get("candidate", "?")
    values = trial.intermediate_values
    last = max(values) if values else 0
    acc = f"{values[last] * 100:.1f}%" if values else "-"
    if trial.state == TrialState.COMPLETE:
        return f"{name} {key}: trained to epoch {last}/{epochs}, validation {acc}"
    if trial.state == TrialState.PRUNED:
        return f"{name} {key}: stopped at epoch {last} (validation {acc})"
    return f"{name} {key}: {trial.state.name.lower()}"
