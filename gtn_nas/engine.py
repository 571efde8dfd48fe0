"""The one training loop every method uses (teachers now, distillation later).

Devices, DDP and mixed precision come from Lightning Fabric (``accelerator``, ``devices``,
``strategy``, ``precision``); CPU is the tested default. The loop knows nothing about KD: it
trains a *method*, a :class:`gtn_nas.method.TrainingMethod` whose ``forward(x, y)`` returns a
dict with ``"loss"`` and any named terms (entries ending in ``logits`` are scored as
accuracies, other scalars averaged), and calls each of its hooks (``param_groups``,
``on_epoch_start``, ``after_optimizer_step``, ``validate``, ``epoch_summary``,
``after_validation``), whose defaults do nothing; any other module is refused in one line.

Reproducibility: the global batch is split into equal shards, one per process, and each
image's augmentation is drawn from its own seed ``(seed, epoch, index)``, so N processes train
on exactly the batches one process would; every epoch re-seeds the RNGs from
``(seed, epoch, rank)``, so a run resumed from its last checkpoint (written atomically after
each epoch with the method, optimizer, scheduler and history) continues exactly as an
uninterrupted run.

Example:
    >>> result = fit(method, splits.train, splits.val, TrainConfig(epochs=3),
    ...              "runs/x")                                              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.utils.data import DataLoader, Dataset, Sampler

from gtn_nas.config import flat_data_keys, to_plain
from gtn_nas.errors import ConfigError
from gtn_nas.fileio import atomic_torch_save, load_checkpoint, remove_stale_temporaries
from gtn_nas.locks import folder_lock
from gtn_nas.method import TrainingMethod, evaluate  # noqa: F401 - evaluate: the engine's pass
from gtn_nas.metrics import RunningMeans, write_metrics
# the settings live in a torch-free module (the command line builds its flags from them)
from gtn_nas.train_config import (PAPER_EPOCHS, PAPER_MILESTONES, TrainConfig,  # noqa: F401
                                  scaled_milestones)

_log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = "gtn-nas-train/1"


@dataclass
class FitResult:
    """What :func:`fit` leaves behind."""

    history: list[dict[str, Any]]
    run_dir: Path
    checkpoint: Path
    resumed_from_epoch: int = 0
    is_global_zero: bool = True


class ShardedBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch permutation cut into global batches; each rank takes its shard.

    Batch ``i`` of rank ``r`` is ``perm[i*G + r*B : i*G + (r+1)*B]`` with ``G`` the global and
    ``B = G / world`` the local batch, so the ranks together see exactly the global batches of a
    single process. Incomplete global batches are dropped.
    """

    def __init__(self, num_items: int, global_batch: int, rank: int = 0, world: int = 1,
                 seed: int = 0, max_batches: int | None = None) -> None:
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by {world} ranks")
        self.num_items, self.global_batch = num_items, global_batch
        self.rank, self.world, self.seed = rank, world, seed
        self.local_batch = global_batch // world
        self.max_batches = max_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        batches = self.num_items // self.global_batch
        return batches if self.max_batches is None else min(batches, self.max_batches)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, "batches"))
        perm = torch.randperm(self.num_items, generator=generator).tolist()
        for i in range(len(self)):
            start = i * self.global_batch + self.rank * self.local_batch
            yield perm[start:start + self.local_batch]


class SeededItems(Dataset):
    """Draws each item's augmentation from its own seed, ``(seed, epoch, index)``.

    Random augmentation then depends on which image is loaded, not on which process loads it
    or what was loaded before: N processes see exactly the images one process would, and a
    resumed run sees what the uninterrupted run saw. The global RNG is left as it was.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed also queues a lazy seeding of every
            # accelerator backend (a formatted stack trace each), which cost ~1.5 ms per image,
            # most of a small student's epoch. The augmentation draws from this generator.
            torch.default_generator.manual_seed(derive_seed(self.seed, self.epoch, index,
                                                            "item"))
            return self.dataset[index]


def derive_seed(*parts: Any) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2 ** 63)


def seed_everything(seed: int) -> None:
    """Seeds torch, numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)


def config_digest(record: Mapping[str, Any]) -> str:
    """A stable digest of a resolved configuration (what a resumed run must match); unset
    milestones count as what they mean (:func:`_milestones_as_meant`), a ``data`` section as
    the flat keys before it (:func:`gtn_nas.config.flat_data_keys`)."""
    plain = _milestones_as_meant(flat_data_keys(to_plain(record)))
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def _milestones_as_meant(value: Any) -> Any:
    """Every training config's ``milestones: None`` as the milestones it stands for (the
    former fixed default where the schedule does not use them): a run started under the fixed
    150/180/210 resumes where its schedule is unchanged (cosine, constant, 240-epoch step)."""
    if not isinstance(value, (dict, list)):
        return value
    if isinstance(value, list):
        return [_milestones_as_meant(item) for item in value]
    value = {key: _milestones_as_meant(item) for key, item in value.items()}
    if {"milestones", "schedule", "epochs", "gamma"} <= set(value) and \
            value["milestones"] is None:
        step = value["schedule"] == "step" and isinstance(value["epochs"], int)
        value["milestones"] = list(scaled_milestones(value["epochs"]) if step
                                   else PAPER_MILESTONES)
    return value


def make_fabric(config: TrainConfig, find_unused_parameters: bool = False):
    """The Lightning Fabric for ``config`` (DDP strategies get ``find_unused_parameters``)."""
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import DDPStrategy

    strategy: Any = config.strategy
    if strategy in ("ddp", "ddp_spawn"):
        start_method = "popen" if strategy == "ddp" else "spawn"
        strategy = DDPStrategy(start_method=start_method,
                               find_unused_parameters=find_unused_parameters)
    try:
        return Fabric(accelerator=config.accelerator, devices=config.devices, strategy=strategy,
                      precision=config.precision)
    except (ValueError, RuntimeError, TypeError, ImportError) as exc:
        raise ConfigError(f"devices: {str(exc).splitlines()[0]}") from exc


def fit(method: nn.Module, train_set: Dataset, val_set: Dataset, config: TrainConfig,
        run_dir: str | os.PathLike, *, resume: bool = False,
        identity: Mapping[str, Any] | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
        fabric: Any = None) -> FitResult:
    """Trains ``method`` on ``train_set``, evaluating on ``val_set`` after every epoch.

    Args:
        method: The training method (see the module docstring).
        train_set: Yields ``(x, y)``.
        val_set: Yields ``(x, y)``; evaluated in eval mode after each epoch.
        config: Optimisation and device settings.
        run_dir: Receives ``last.pt`` (checkpoint), ``metrics.jsonl`` and ``metrics.csv``.
        resume: Continue from ``run_dir/last.pt``; its ``identity`` must equal this one's.
        identity: The resolved configuration of the run (stored, and checked on resume).
        on_epoch_end: Called on the global-zero process with each epoch's record.
        fabric: A launched Fabric to use (default: one made from ``config`` and launched here).

    Raises:
        ConfigError: a checkpoint exists and ``resume`` is false, a checkpoint of another
            configuration, or a corrupt one. ``resume`` without a checkpoint (a run killed
            before its first epoch ended) starts from scratch and logs a warning.
    """
    config.validate()
    if not isinstance(method, TrainingMethod):
        raise ConfigError(f"{type(method).__name__} is not a training method: subclass "
                          f"gtn_nas.method.TrainingMethod (forward(x, y) -> {{'loss': ...}})")
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run directory; choose another --out")
    try:  # refused before training, not after the first epoch's checkpoint fails to write
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a path under a file, a read-only folder
        raise ConfigError(f"cannot create the run directory {run_dir}: "
                          f"{exc.strerror or exc}; choose another --out") from exc
    checkpoint_path = run_dir / CHECKPOINT_NAME
    identity = dict(to_plain(identity or {"train": config}))
    digest = config_digest(identity)
    if not resume and checkpoint_path.exists():
        raise ConfigError(f"{run_dir} already holds a training checkpoint; pass --resume to "
                          f"continue it or choose another --out")
    state = None
    if resume and checkpoint_path.exists():
        state = _read_checkpoint(checkpoint_path, digest, identity)
    elif resume:
        _log.warning("--resume: %s holds no checkpoint yet (killed before its first epoch "
                     "ended?); starting from scratch", run_dir)

    if fabric is None:
        fabric = make_fabric(config, method.has_unused_parameters)
        fabric.launch()
    # one writer per run directory (the global-zero process writes it): a second process
    # training into it is refused in one line naming the holder
    lock = folder_lock(run_dir, "training") if fabric.is_global_zero else nullcontext()
    with lock:
        if fabric.is_global_zero:
            for stale in remove_stale_temporaries(run_dir):
                _log.info("removed %s, left by a killed run", stale)
        # Denormal floats (tiny gradients of rarely sampled branches) slow CPU kernels by orders of
        # magnitude; flushing them to zero changes nothing measurable in training.
        torch.set_flush_denormal(True)
        rank, world = fabric.global_rank, fabric.world_size
        if config.sync_batchnorm and world > 1:
            # batch statistics over the global batch, as one process would compute them
            method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
        raw = method
        groups = method.param_groups()
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, nesterov=config.nesterov)
        scheduler = _scheduler(optimizer, config)
        history: list[dict[str, Any]] = []
        start_epoch = 0
        if state is not None:
            raw.load_state_dict(state["method"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history = list(state["history"])
            start_epoch = int(state["epoch"])
            _log.info("resuming %s after epoch %d", run_dir, start_epoch)
        if config.channels_last:  # conv outputs follow their weights' NHWC layout
            method.to(memory_format=torch.channels_last)
        if config.compile:  # in place: the state_dict keys stay those of the eager module
            method.compile()
        model, optimizer = fabric.setup(method, optimizer)

        sampler = ShardedBatchSampler(len(train_set), config.batch_size, rank, world, config.seed,
                                      config.max_steps_per_epoch)
        if len(sampler) == 0:
            raise ConfigError(f"training data has {len(train_set)} examples, fewer than one batch "
                              f"of {config.batch_size}")
        seeded_train = SeededItems(train_set, config.seed)
        loader = DataLoader(seeded_train, batch_sampler=sampler, num_workers=config.num_workers)
        val_loader = DataLoader(val_set, batch_size=config.eval_batch_size, shuffle=False,
                                num_workers=config.num_workers)

        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            seed_everything(derive_seed(config.seed, epoch, rank, "epoch") % (2 ** 31))
            sampler.set_epoch(epoch)
            seeded_train.set_epoch(epoch)
            raw.on_epoch_start(epoch, config.epochs)
            model.train()
            train_meter = RunningMeans()
            batches = _progress(loader, config.progress and fabric.is_global_zero,
                                f"epoch {epoch + 1}/{config.epochs}")
            batch_iterator = iter(batches)
            while True:
                with record_function("engine/data"):
                    batch = next(batch_iterator, None)
                    if batch is None:
                        break
                    x, y = fabric.to_device(batch)
                with record_function("engine/forward"):
                    outputs = model(x, y)
                with record_function("engine/backward"):
                    optimizer.zero_grad(set_to_none=True)
                    fabric.backward(outputs["loss"])
                with record_function("engine/optimizer"):
                    if config.grad_clip is not None:
                        fabric.clip_gradients(model, optimizer, max_norm=config.grad_clip)
                    optimizer.step()
                    extra = raw.after_optimizer_step(x, y, outputs)
                with record_function("engine/metrics"):
                    train_meter.update(outputs, y, extra)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
            train_means = train_meter.means()
            if world > 1:  # each rank saw its shard; report the global batch's means
                train_means = {k: float(fabric.all_reduce(torch.tensor(train_means[k]),
                                                          reduce_op="mean"))
                               for k in sorted(train_means)}
            record.update({f"train/{k}": v for k, v in train_means.items()})
            if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs:
                with record_function("engine/validation"):
                    values = raw.validate(val_loader, fabric)
                record.update({f"val/{k}": v for k, v in values.items()})
            record.update(raw.epoch_summary())
            raw.after_validation(record)  # e.g. keep the best weights in the checkpoint
            record["seconds"] = round(time.perf_counter() - started, 3)
            history.append(record)
            if fabric.is_global_zero:
                with record_function("engine/checkpoint"):
                    atomic_torch_save({"format": CHECKPOINT_FORMAT, "digest": digest,
                                       "identity": identity, "epoch": epoch + 1,
                                       "method": raw.state_dict(),
                                       "optimizer": optimizer.state_dict(),
                                       "scheduler": scheduler.state_dict(), "history": history},
                                      checkpoint_path)
                    write_metrics(run_dir, history)
            fabric.barrier()
            if on_epoch_end is not None and fabric.is_global_zero:
                on_epoch_end(record)
        if fabric.is_global_zero and history:
            # Derived from the checkpoint's history: a run killed after its last checkpoint but
            # before these files were rewritten gets them back on --resume.
            write_metrics(run_dir, history)
        return FitResult(history=history, run_dir=run_dir, checkpoint=checkpoint_path,
                         resumed_from_epoch=start_epoch, is_global_zero=fabric.is_global_zero)


def _read_checkpoint(path: Path, digest: str, identity: Mapping[str, Any]) -> dict[str, Any]:
    state = load_checkpoint(path, CHECKPOINT_FORMAT, "training checkpoint")
    if state.get("digest") != digest:
        theirs = state.get("identity", {})
        changed = sorted(_diff_keys(theirs, identity))
        raise ConfigError(f"{path} was written by another configuration (differs in: "
                          f"{', '.join(changed) or 'unknown'}); resume with the same options "
                          f"or choose another --out")
    return state


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in set(a) | set(b):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            keys += _diff_keys(va, vb, f"{prefix}{key}.")
        elif va != vb:
            keys.append(f"{prefix}{key}")
    return keys


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, list(config.resolved_milestones()), gamma=config.gamma)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _progress(iterable, enabled: bool, description: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, leave=False, dynamic_ncols=True, disable=None)
