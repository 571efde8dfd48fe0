"""Per-path BatchNorm recalibration of a weight-sharing supernet.

The running statistics of a supernet's BatchNorm layers mix every path that was trained; a path
evaluated with them is judged on statistics that are not its own. Single-path one-shot NAS
recomputes them for the path on a few training batches before scoring it. :func:`recalibrated`
does that inside a ``with`` block and restores the shared statistics (and each layer's momentum
and training flag) on exit, so the supernet is left exactly as it was.

Example:
    >>> with recalibrated(body, lambda: [body(x, sample) for x in batches]):   # doctest: +SKIP
    ...     accuracy = evaluate(body, sample)                                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextlib.contextmanager
def recalibrated(module: nn.Module, run: Callable[[], object]) -> Iterator[nn.Module]:
    """Within the block, ``module``'s BatchNorm layers hold statistics recomputed by ``run``.

    ``run`` is called once with ``module`` in training mode and without gradients; each BN
    layer's statistics become the plain average over the batches it saw (momentum ``None``).
    Layers the path does not use keep reset statistics inside the block. Inside the block
    ``module`` is in eval mode. On exit every BN buffer, momentum and every training flag are
    restored.

    Args:
        module: The module whose BN layers are recalibrated (e.g. one branch's body).
        run: Forwards the recalibration batches through ``module`` on the wanted path.
    """
    norms = _norms(module)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(),
              m.momentum) for m in norms]
    flags = [(m, m.training) for m in module.modules()]
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        module.train()
        with torch.no_grad():
            run()
        module.eval()
        yield module
    finally:
        with torch.no_grad():
            for m, (mean, var, count, momentum) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
                m.momentum = momentum
        for m, flag in flags:
            m.training = flag


Statistics = list[tuple[torch.Tensor, torch.Tensor]]
"""The running mean and variance of each tracked BatchNorm layer of a module, in order."""


def _norms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def statistics_of(module: nn.Module) -> Statistics:
    """A copy of ``module``'s BN running statistics (what eval mode uses)."""
    return [(m.running_mean.clone(), m.running_var.clone()) for m in _norms(module)]


def recalibrated_statistics(module: nn.Module, run: Callable[[], object]) -> Statistics:
    """The statistics :func:`recalibrated` gives ``module`` for ``run``; ``module`` is left
    exactly as it was. With :func:`load_statistics`, K paths can be evaluated batch by batch
    in one pass over the data (their statistics swapped in per batch) instead of K passes."""
    with recalibrated(module, run):
        return statistics_of(module)


def load_statistics(module: nn.Module, statistics: Statistics) -> None:
    """Copies ``statistics`` (from :func:`statistics_of`) into ``module``'s BN layers."""
    norms = _norms(module)
    if len(norms) != len(statistics):
        raise ValueError(f"{len(statistics)} statistics for {len(norms)} BatchNorm layers")
    with torch.no_grad():
        for m, (mean, var) in zip(norms, statistics):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
