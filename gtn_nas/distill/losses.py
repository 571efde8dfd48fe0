"""Pure loss functions: distillation (KD, DKD, FitNets, AT), teacher training (SFTN, GTN
conditioning) and the architecture-distribution entropy.

Every function here is a pure function of tensors: no state, no modules, no printing. Logits are
``[batch, classes]`` and targets are int64 class indices ``[batch]``. Wherever a term has a
"teacher" that only provides targets (KD, DKD, FitNets, AT), the teacher tensor is detached
inside; the teacher-training losses (:func:`sftn_loss`, :func:`conditioning_loss`) deliberately
let gradients reach the teacher.

Notation: ``KL(P || Q) = sum_c P_c * (log P_c - log Q_c)``; ``P`` is the distribution the
divergence is measured *from* (the expectation is taken under ``P``). Every KL here sums over
classes and averages over the batch.

Example:
    >>> z_s = torch.tensor([[1.0, 2.0, 0.0]])
    >>> z_t = torch.tensor([[3.0, 1.0, 0.0]])
    >>> y = torch.tensor([0])
    >>> sorted(kd_loss(z_s, z_t, y))
    ['ce', 'kd', 'loss']
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def labelled_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0
                           ) -> Tensor:
    """Cross-entropy over the items that have a label (target >= 0), mean over them; 0 (with a
    gradient path) when the batch has none. Equals ``F.cross_entropy`` on a fully labelled
    batch; unlabelled items carry ``gtn_nas.distill.partial_labels.UNLABELLED``.

    Example:
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> float(labelled_cross_entropy(z, torch.tensor([0, -100]))) == float(
        ...     F.cross_entropy(z[:1], torch.tensor([0])))
        True
        >>> float(labelled_cross_entropy(z, torch.tensor([-100, -100])))
        0.0
    """
    labelled = targets >= 0
    if bool(labelled.all()):
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled], targets[labelled], label_smoothing=label_smoothing)

__all__ = [
    "attention_map",
    "attention_transfer_loss",
    "categorical_entropy",
    "conditioning_loss",
    "dkd_loss",
    "dkd_warmup_factor",
    "hint_loss",
    "kd_loss",
    "sftn_loss",
    "soft_cross_entropy",
    "soft_kl",
]

# mdistiller's DKD masks the target logit (after dividing by T) by subtracting this constant.
_DKD_MASK = 1000.0


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


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float = 4.0,
    ce_weight: float = 0.1,
    kd_weight: float = 0.9,
) -> dict[str, Tensor]:
    """Hinton knowledge distillation.

    ``ce = CE(z_s, y)``, ``kd = T^2 * KL(softmax(z_t/T) || softmax(z_s/T))`` and
    ``loss = ce_weight * ce + kd_weight * kd``. The teacher logits are detached. Defaults are
    the CIFAR ones of RepDistiller and mdistiller (``T = 4``, ``0.1 / 0.9``).

    Args:
        student_logits: ``[batch, classes]``.
        teacher_logits: ``[batch, classes]``; no gradient flows into them.
        targets: int64 class indices ``[batch]``.
        temperature: ``T`` (> 0).
        ce_weight: weight of the cross-entropy term.
        kd_weight: weight of the ``T^2``-scaled KL term.

    Returns:
        ``{"loss", "ce", "kd"}`` (scalar tensors; ``kd`` includes ``T^2`` but not ``kd_weight``).

    Raises:
        ValueError: mismatched shapes or a non-positive temperature.

    Example:
        >>> z = torch.tensor([[2.0, 0.0, 1.0]])
        >>> out = kd_loss(z, z, torch.tensor([0]))
        >>> round(float(out["kd"]), 6), round(float(out["loss"] - 0.1 * out["ce"]), 6)
        (0.0, 0.0)
    """
    _check_classification("student_logits", student_logits, targets)
    _check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
    ce = labelled_cross_entropy(student_logits, targets)
    kd = temperature**2 * soft_kl(teacher_logits.detach(), student_logits, temperature)
    return {"loss": ce_weight * ce + kd_weight * kd, "ce": ce, "kd": kd}


def _dkd_parts(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float = 4.0,
    reduction: Literal["mean", "none"] = "mean",
) -> tuple[Tensor, Tensor]:
    """TCKD and NCKD of decoupled KD, without ``T^2`` or weights (teacher not detached here).

    With ``p = softmax(z / T)`` and target ``t``: TCKD is ``KL(b^T || b^S)`` on the binary
    ``b = [p_t, 1 - p_t]``; NCKD is ``KL(p_hat^T || p_hat^S)`` over the non-target classes
    renormalised, where (as in mdistiller) the target logit is masked by subtracting
    ``1000 * one_hot(t)`` from ``z / T`` before the softmax. ``log(1 - p_t)`` is taken as
    ``logsumexp`` of those masked logits minus ``logsumexp(z / T)``, so both terms stay finite
    even when ``p_t`` rounds to 1. Per sample, ``KL(p^T || p^S) = TCKD + (1 - p_t^T) * NCKD``
    (up to terms of order ``exp(-1000)``).

    Returns:
        ``(tckd, nckd)``: shape ``[batch]`` for ``reduction="none"``, scalars for ``"mean"``.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    _check_classification("student_logits", student_logits, targets)
    _check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
    _check_temperature(temperature)
    gt_mask = F.one_hot(targets, student_logits.shape[1]).to(student_logits.dtype)
    index = targets.unsqueeze(1)

    def binary_and_rest(logits: Tensor) -> tuple[Tensor, Tensor]:
        scaled = logits / temperature
        masked = scaled - _DKD_MASK * gt_mask
        log_norm = torch.logsumexp(scaled, dim=1)
        log_p_target = scaled.gather(1, index).squeeze(1) - log_norm
        log_p_rest = torch.logsumexp(masked, dim=1) - log_norm
        binary = torch.stack([log_p_target, log_p_rest], dim=1)
        return binary, F.log_softmax(masked, dim=1)

    binary_s, non_target_s = binary_and_rest(student_logits)
    binary_t, non_target_t = binary_and_rest(teacher_logits)
    tckd = _kl_from_log_probs(binary_t, binary_s)
    nckd = _kl_from_log_probs(non_target_t, non_target_s)
    if reduction == "mean":
        return tckd.mean(), nckd.mean()
    return tckd, nckd


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    ce_weight: float = 1.0,
    warmup_factor: float = 1.0,
) -> dict[str, Tensor]:
    """Decoupled knowledge distillation (Zhao et al. 2022), as in the official mdistiller code.

    ``loss = ce_weight * CE(z_s, y) + warmup_factor * T^2 * (alpha * TCKD + beta * NCKD)``.
    TCKD is the KL between teacher and student on the binary ``[p_target, 1 - p_target]``;
    NCKD is the KL over the non-target classes renormalised (the target logit masked by
    subtracting ``1000 * one_hot`` after dividing by ``T``, as mdistiller does). Both are
    ``KL(teacher || student)``, summed over classes and averaged over the batch; per sample
    ``KL(p^T || p^S) = TCKD + (1 - p_target^T) * NCKD`` at the same ``T``. The teacher logits
    are detached. Defaults are mdistiller's CIFAR ones; pass
    :func:`dkd_warmup_factor` as ``warmup_factor``.

    Args:
        student_logits: ``[batch, classes]``.
        teacher_logits: ``[batch, classes]``; no gradient flows into them.
        targets: int64 class indices ``[batch]``.
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: ``T`` (> 0).
        ce_weight: weight of the cross-entropy term.
        warmup_factor: multiplies the whole distillation term (``min(epoch / warmup, 1)``).

    Returns:
        ``{"loss", "ce", "tckd", "nckd"}``; ``tckd`` and ``nckd`` are the plain batch-mean KLs,
        without ``T^2``, ``alpha``, ``beta`` or the warm-up factor.

    Raises:
        ValueError: mismatched shapes or a non-positive temperature.

    Example:
        >>> z_s = torch.tensor([[1.0, 2.0, 0.0]])
        >>> out = dkd_loss(z_s, z_s.clone(), torch.tensor([0]))
        >>> round(float(out["tckd"]), 6), round(float(out["nckd"]), 6)
        (0.0, 0.0)
    """
    teacher_logits = teacher_logits.detach()
    tckd, nckd = _dkd_parts(student_logits, teacher_logits, targets, temperature)
    ce = F.cross_entropy(student_logits, targets)
    distill = warmup_factor * temperature**2 * (alpha * tckd + beta * nckd)
    return {"loss": ce_weight * ce + distill, "ce": ce, "tckd": tckd, "nckd": nckd}


def dkd_warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """DKD's linear warm-up of the distillation term: ``min(epoch / warmup_epochs, 1)``.

    mdistiller counts epochs from 1, so its first epoch already gets ``1 / warmup_epochs``;
    pass the epoch number the same way to reproduce it. ``warmup_epochs = 0`` disables the
    warm-up (factor 1).

    Args:
        epoch: the current epoch number (>= 0).
        warmup_epochs: length of the warm-up (>= 0; mdistiller's CIFAR default is 20).

    Returns:
        The factor in ``[0, 1]``.

    Raises:
        ValueError: a negative epoch or warm-up length.

    Example:
        >>> dkd_warmup_factor(5, 20), dkd_warmup_factor(30, 20), dkd_warmup_factor(0, 0)
        (0.25, 1.0, 1.0)
    """
    if epoch < 0 or warmup_epochs < 0:
        raise ValueError(
            f"epoch and warmup_epochs must be >= 0, got epoch={epoch}, "
            f"warmup_epochs={warmup_epochs}")
    if warmup_epochs == 0:
        return 1.0
    return min(epoch / warmup_epochs, 1.0)


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

    This is **our reading** of the GTN supplement (METHODS.md section 4), which names a
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


def attention_map(features: Tensor, p: int = 2) -> Tensor:
    """Spatial attention map of Zagoruyko & Komodakis (AT, 2017).

    The mean over channels of ``|f|^p``, flattened over the spatial positions and L2-normalised
    per sample.

    Args:
        features: ``[batch, channels, *spatial]`` (usually ``[B, C, H, W]``).
        p: the exponent (the paper's default is 2).

    Returns:
        ``[batch, prod(spatial)]``, each row of unit L2 norm (all-zero features stay zero).

    Raises:
        ValueError: fewer than 3 dimensions.

    Example:
        >>> f = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])  # [1, 2, 1, 2]
        >>> attention_map(f) * 5 ** 0.5                          # (|f|^2 mean: [1, 2]) / sqrt(5)
        tensor([[1., 2.]])
    """
    if features.dim() < 3:
        raise ValueError(
            f"features must be [batch, channels, *spatial], got shape {_shape(features)}")
    energy = features.abs().pow(p).mean(dim=1).flatten(start_dim=1)
    return F.normalize(energy, p=2.0, dim=1)


def attention_transfer_loss(
    student_features: Tensor, teacher_features: Tensor, p: int = 2
) -> Tensor:
    """Attention transfer: mean squared difference of the two attention maps.

    ``mean((attention_map(f_s) - attention_map(f_t))^2)`` over batch and positions, as in the
    official AT code; channel counts may differ, batch and spatial sizes must match. The
    teacher features are detached.

    Args:
        student_features: ``[batch, C_s, *spatial]``.
        teacher_features: ``[batch, C_t, *spatial]``; no gradient flows into them.
        p: the exponent of :func:`attention_map`.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: the batch or spatial sizes differ (the message names both shapes).

    Example:
        >>> f = torch.ones(2, 3, 4, 4)
        >>> float(attention_transfer_loss(f, 5 * torch.ones(2, 8, 4, 4)))
        0.0
    """
    if (student_features.dim() < 3 or student_features.dim() != teacher_features.dim()
            or student_features.shape[0] != teacher_features.shape[0]
            or student_features.shape[2:] != teacher_features.shape[2:]):
        raise ValueError(
            "attention transfer needs [batch, channels, *spatial] features with equal batch and "
            f"spatial sizes: student features {_shape(student_features)} vs teacher features "
            f"{_shape(teacher_features)}")
    student_map = attention_map(student_features, p)
    teacher_map = attention_map(teacher_features.detach(), p)
    return (student_map - teacher_map).pow(2).mean()


def hint_loss(adapted_student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """FitNets hint loss: mean squared error to the teacher's features (teacher detached).

    The student's features must already have passed its learned adapter (e.g. a 1x1 conv), so
    that both tensors have the same shape.

    Args:
        adapted_student_features: the adapter's output, any shape.
        teacher_features: the teacher's features, the same shape; no gradient flows into them.

    Returns:
        A scalar tensor (mean over all elements).

    Raises:
        ValueError: the shapes differ (the message names both).

    Example:
        >>> float(hint_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])))
        2.5
    """
    _check_same_shape("adapted_student_features", adapted_student_features,
                      "teacher_features", teacher_features)
    return F.mse_loss(adapted_student_features, teacher_features.detach())


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


def soft_cross_entropy(logits: Tensor, target_probs: Tensor, label_smoothing: float = 0.0
                       ) -> Tensor:
    """Cross-entropy against soft targets, with label smoothing (GPD's student <- DT term).

    ``loss = mean_b sum_c -((1 - eps) * p_c + eps / C) * log softmax(z)_c``, i.e.
    ``(1 - eps) * CE(z, p) + eps * mean_c(-log softmax(z)_c)``; no temperature. The targets are
    detached (they only provide targets).

    Args:
        logits: ``[batch, classes]``.
        target_probs: ``[batch, classes]``, rows summing to 1 (e.g. ``softmax`` of other logits).
        label_smoothing: ``eps`` in ``[0, 1)``.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: mismatched shapes or ``label_smoothing`` outside ``[0, 1)``.

    Example:
        >>> z = torch.tensor([[0.0, 0.0]])
        >>> round(float(soft_cross_entropy(z, torch.tensor([[1.0, 0.0]]), 0.1)), 4)  # log 2
        0.6931
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [batch, classes], got shape {_shape(logits)}")
    _check_same_shape("logits", logits, "target_probs", target_probs)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    log_q = F.log_softmax(logits, dim=-1)
    target = target_probs.detach()
    if label_smoothing:
        target = (1.0 - label_smoothing) * target + label_smoothing / logits.shape[-1]
    return -(target * log_q).sum(dim=-1).mean()


