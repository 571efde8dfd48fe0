"""Pure loss functions of teacher training (SFTN, GTN conditioning), the architecture
distribution's entropy, and the KL primitives every loss shares (:mod:`gtn_nas.distill.losses`
builds on them).

Every function here is a pure function of tensors. Logits are ``[batch, classes]`` and targets
are int64 class indices ``[batch]``. The teacher-training losses (:func:`sftn_loss`,
:func:`conditioning_loss`) deliberately let gradients reach the teacher.

Notation: ``KL(P || Q) = sum_c P_c * (log P_c - log Q_c)``; ``P`` is the distribution the
divergence is measured *from* (the expectation is taken under ``P``). Every KL here sums over
classes and averages over the batch.

Example:
    >>> round(float(soft_kl(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]]))), 4)
    0.3278
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["categorical_entropy", "conditioning_loss", "sftn_loss", "soft_kl"]


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {_shape(a)} but {name_b} has shape {_shape(b)}; they must match")


def _check_classification(name: str, logits: Tensor, targets: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"{name} must be [batch, classes], got shape {_shape(logits)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must be [batch] = [{logits.shape[0]}] to match {name} {_shape(logits)}, "
            f"got shape {_shape(targets)}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _kl_from_log_probs(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(P || Q)`` summed over the last dimension, from finite log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def soft_kl(p_logits: Tensor, q_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(softmax(p_logits / T) || softmax(q_logits / T))``, summed over classes, batch mean.

    ``p_logits`` gives ``P``, the distribution the divergence is measured *from*: the sum is
    ``sum_c P_c * (log P_c - log Q_c)``. For distillation towards a teacher this means
    ``soft_kl(teacher_logits, student_logits, T)`` (the usual ``KL(teacher || student)``).
    Computed from ``log_softmax`` of both, so it stays finite for large logits. No ``T^2``
    factor and no detaching: callers add either where their method wants it.

    Args:
        p_logits: logits of ``P``, ``[batch, classes]`` (any leading shape works: the sum runs
            over the last dimension and the mean over all the others).
        q_logits: logits of ``Q``, the same shape as ``p_logits``.
        temperature: softmax temperature ``T`` applied to both (> 0).

    Returns:
        A scalar tensor.

    Raises:
        ValueError: the shapes differ or the temperature is not positive.

    Example:
        >>> p = torch.tensor([[1.0, 2.0, 3.0]])
        >>> round(float(soft_kl(p, p)), 6)
        0.0
        >>> round(float(soft_kl(p, torch.zeros(1, 3))), 4)  # KL(P || uniform) = log 3 - H(P)
        0.2662
    """
    _check_same_shape("p_logits", p_logits, "q_logits", q_logits)
    _check_temperature(temperature)
    log_p = F.log_softmax(p_logits / temperature, dim=-1)
    log_q = F.log_softmax(q_logits / temperature, dim=-1)
    return _kl_from_log_probs(log_p, log_q).mean()


def sftn_loss(
    teacher_logits: Tensor,
    branch_logits: Sequence[Tensor],
    targets: Tensor,
    teacher_ce_weight: float = 1.0,
    kl_weight: float = 3.0,
    branch_ce_weight: float = 1.0,
    temperature: float = 1.0,
) -> dict[str, Tensor]:
    """Student-friendly teacher loss (SFTN, Park et al. 2021, equations 3-6).

    ``L = l_T * CE(z_T, y) + l_KL * mean_i KL(q_R^i || q_T) + l_CE * mean_i CE(z_R^i, y)``
    with ``q = softmax(z / tau)``. The paper writes equation (5) as
    ``L_R^KL = 1/(N-1) sum_i KL(q~_R^i || q~_T)``: the branch distribution is the first
    argument, so this computes ``soft_kl(branch, teacher, tau)`` (expectation under the
    branch), with no ``tau^2`` factor (the paper has none; its default ``tau = 1``). Nothing
    is detached: the KL pulls the teacher towards its student branches as well as the
    branches towards the teacher, which is the point of SFTN. Defaults are the paper's
    CIFAR-100 weights (``l_T = 1, l_KL = 3, l_CE = 1, tau = 1``; ImageNet uses ``l_KL = 1``).

    Args:
        teacher_logits: the teacher's logits ``z_T``, ``[batch, classes]``.
        branch_logits: the logits ``z_R^i`` of each student branch, each like ``z_T``.
        targets: int64 class indices ``[batch]``.
        teacher_ce_weight: ``l_T``.
        kl_weight: ``l_KL``.
        branch_ce_weight: ``l_CE``.
        temperature: ``tau`` of the KL term only (the cross-entropies use 1, as in the paper).

    Returns:
        ``{"loss", "teacher_ce", "branch_kl", "branch_ce"}`` (``branch_*`` are the means over
        the branches, unweighted) plus ``"branch{i}_kl"`` and ``"branch{i}_ce"`` for each
        branch, ``i`` counting from 1; every entry keeps its graph.

    Raises:
        ValueError: no branches, mismatched shapes or a non-positive temperature.

    Example:
        >>> z_t = torch.tensor([[2.0, 0.0, 1.0]])
        >>> out = sftn_loss(z_t, [z_t.clone(), z_t.clone()], torch.tensor([0]))
        >>> round(float(out["branch_kl"]), 6), sorted(k for k in out if k.startswith("branch2"))
        (0.0, ['branch2_ce', 'branch2_kl'])
    """
    branches = list(branch_logits)
    if not branches:
        raise ValueError("sftn_loss needs at least one student branch; got an empty list")
    _check_classification("teacher_logits", teacher_logits, targets)
    _check_temperature(temperature)
    for i, logits in enumerate(branches, start=1):
        _check_same_shape(f"branch_logits[{i - 1}]", logits, "teacher_logits", teacher_logits)

    teacher_ce = F.cross_entropy(teacher_logits, targets)
    per_branch: dict[str, Tensor] = {}
    kls, ces = [], []
    for i, logits in enumerate(branches, start=1):
        kl = soft_kl(logits, teacher_logits, temperature)  # KL(q_R^i || q_T), paper eq. (5)
        ce = F.cross_entropy(logits, targets)
        per_branch[f"branch{i}_kl"] = kl
        per_branch[f"branch{i}_ce"] = ce
        kls.append(kl)
        ces.append(ce)
    branch_kl = torch.stack(kls).mean()
    branch_ce = torch.stack(ces).mean()
    loss = teacher_ce_weight * teacher_ce + kl_weight * branch_kl + branch_ce_weight * branch_ce
    return {
        "loss": loss,
        "teacher_ce": teacher_ce,
        "branch_kl": branch_kl,
        "branch_ce": branch_ce,
        **per_branch,
    }


def conditioning_loss(
    teacher_logits: Tensor,
    branch_logits: Sequence[Tensor],
    targets: Tensor,
    alpha: float = 3.0,
    temperature: float = 1.0,
    teacher_ce_weight: float = 1.0,
    branch_ce_weight: float = 1.0,
) -> dict[str, Tensor]:
    """GTN conditioning loss: :func:`sftn_loss` with the sampled path's branches as students.

    This is **our reading** of the GTN supplement (docs/methods.md section 4), which names a
    conditioning loss with temperature 1 and weight ``alpha`` (3 on CIFAR-100, 1 on
    ImageNet-200) but does not write it out: teacher CE + ``alpha`` * mean over the grafted
    branches (the sampled supernet path behind each of the 3 cuts) of ``KL(branch || teacher)``
    + mean branch CE. It only renames ``kl_weight`` to ``alpha`` and sets GTN's defaults; the
    computation and the returned entries are :func:`sftn_loss`'s.

    Args:
        teacher_logits: the teacher's logits, ``[batch, classes]``.
        branch_logits: the logits of each grafted branch running the sampled path.
        targets: int64 class indices ``[batch]``.
        alpha: weight of the branch KL (3 for CIFAR-100, 1 for ImageNet-200).
        temperature: temperature of the KL (1 in GTN).
        teacher_ce_weight: weight of the teacher's cross-entropy.
        branch_ce_weight: weight of the mean branch cross-entropy.

    Returns:
        The dictionary of :func:`sftn_loss`.

    Raises:
        ValueError: as :func:`sftn_loss`.

    Example:
        >>> z_t = torch.tensor([[2.0, 0.0, 1.0]])
        >>> z_b = [torch.tensor([[0.0, 1.0, 0.0]])] * 3
        >>> y = torch.tensor([0])
        >>> gtn = conditioning_loss(z_t, z_b, y)
        >>> bool(gtn["loss"] == sftn_loss(z_t, z_b, y, kl_weight=3.0)["loss"])
        True
    """
    return sftn_loss(
        teacher_logits,
        branch_logits,
        targets,
        teacher_ce_weight=teacher_ce_weight,
        kl_weight=alpha,
        branch_ce_weight=branch_ce_weight,
        temperature=temperature,
    )


def categorical_entropy(logits: Tensor) -> Tensor:
    """Entropy (in nats) of ``softmax(logits)`` along the last dimension.

    Meant for the entropy bonus on the architecture distribution. Logits of ``-inf`` (masked
    choices) count as probability 0 and keep the value and its gradient finite.

    Args:
        logits: ``[..., choices]``.

    Returns:
        A tensor of the leading shape ``logits.shape[:-1]``.

    Example:
        >>> round(float(categorical_entropy(torch.zeros(4))), 4)  # log 4
        1.3863
        >>> categorical_entropy(torch.zeros(2, 3, 5)).shape
        torch.Size([2, 3])
    """
    log_p = F.log_softmax(logits, dim=-1)
    finite_log_p = log_p.clamp(min=torch.finfo(log_p.dtype).min)
    return -(log_p.exp() * finite_log_p).sum(dim=-1)
