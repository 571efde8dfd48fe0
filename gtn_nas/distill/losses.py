"""Pure loss functions of distillation: KD, DKD, FitNets (hints), AT, GPD's soft-target
cross-entropy and the cross-entropy over the labelled items of a partly labelled batch.

Every function here is a pure function of tensors: no state, no modules, no printing. Logits are
``[batch, classes]`` and targets are int64 class indices ``[batch]``. The teacher tensor only
provides targets and is detached inside. KL notation and primitives:
:mod:`gtn_nas.teacher.losses`.

Example:
    >>> z_s = torch.tensor([[1.0, 2.0, 0.0]])
    >>> z_t = torch.tensor([[3.0, 1.0, 0.0]])
    >>> y = torch.tensor([0])
    >>> sorted(kd_loss(z_s, z_t, y))
    ['ce', 'kd', 'loss']
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gtn_nas.teacher.losses import (_check_classification, _check_same_shape,
                                    _check_temperature, _kl_from_log_probs, _shape, soft_kl)

__all__ = [
    "attention_map",
    "attention_transfer_loss",
    "dkd_loss",
    "dkd_warmup_factor",
    "hint_loss",
    "kd_loss",
    "labelled_cross_entropy",
    "soft_cross_entropy",
]

# mdistiller's DKD masks the target logit (after dividing by T) by subtracting this constant.
_DKD_MASK = 1000.0


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
