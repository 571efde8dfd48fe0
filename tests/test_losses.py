"""Loss functions checked against hand computations (math.exp / math.log, no torch)."""

from __future__ import annotations

import math

import pytest
import torch

from gtn_nas.distill.losses import (
    _dkd_parts,
    attention_map,
    attention_transfer_loss,
    dkd_loss,
    dkd_warmup_factor,
    hint_loss,
    kd_loss,
)
from gtn_nas.teacher.losses import categorical_entropy, conditioning_loss, sftn_loss, soft_kl

E = math.e
D = torch.float64


def t64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=D)


# Pure-python references (used where writing every term out would be unreadable).
def py_softmax(z: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(v / temperature) for v in z]
    total = sum(exps)
    return [v / total for v in exps]


def py_kl(p_logits: list[float], q_logits: list[float], temperature: float = 1.0) -> float:
    """KL(softmax(p/T) || softmax(q/T)) for one sample."""
    p = py_softmax(p_logits, temperature)
    q = py_softmax(q_logits, temperature)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def py_ce(z: list[float], target: int) -> float:
    return math.log(sum(math.exp(v) for v in z)) - z[target]


# ---------------------------------------------------------------- soft_kl
def test_soft_kl_by_hand_and_its_direction():
    p, q = [1.0, 2.0, 3.0], [0.5, 0.0, -1.0]
    zp = E**1 + E**2 + E**3
    zq = E**0.5 + E**0 + E**-1
    P = [E**1 / zp, E**2 / zp, E**3 / zp]
    Q = [E**0.5 / zq, 1 / zq, E**-1 / zq]
    kl_pq = (P[0] * math.log(P[0] / Q[0]) + P[1] * math.log(P[1] / Q[1])
             + P[2] * math.log(P[2] / Q[2]))
    kl_qp = (Q[0] * math.log(Q[0] / P[0]) + Q[1] * math.log(Q[1] / P[1])
             + Q[2] * math.log(Q[2] / P[2]))
    assert float(soft_kl(t64([p]), t64([q]))) == pytest.approx(kl_pq, rel=1e-12)
    # The first argument is P: the reverse call gives the (different) reverse divergence.
    assert float(soft_kl(t64([q]), t64([p]))) == pytest.approx(kl_qp, rel=1e-12)
    assert abs(kl_pq - kl_qp) > 1e-3


def test_soft_kl_zero_for_equal_logits_and_shift_invariant():
    z = torch.randn(5, 7)
    assert float(soft_kl(z, z.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_kl(z, z + 3.0, temperature=2.0)) == pytest.approx(0.0, abs=1e-6)


def test_soft_kl_non_negative_on_random_inputs():
    gen = torch.Generator().manual_seed(0)
    for temperature in (0.5, 1.0, 4.0):
        p = 5 * torch.randn(32, 10, generator=gen)
        q = 5 * torch.randn(32, 10, generator=gen)
        for i in range(p.shape[0]):
            assert float(soft_kl(p[i:i + 1], q[i:i + 1], temperature)) >= -1e-6
        assert float(soft_kl(p, q, temperature)) > 0


def test_soft_kl_temperature_divides_the_logits():
    p, q = [1.0, 2.0, 3.0], [0.5, 0.0, -1.0]
    for temperature in (2.0, 4.0):
        got = float(soft_kl(t64([p]), t64([q]), temperature))
        assert got == pytest.approx(py_kl(p, q, temperature), rel=1e-12)
        assert got == pytest.approx(float(soft_kl(t64([p]) / temperature, t64([q]) / temperature)))
    # Softer distributions are closer: the divergence shrinks as T grows here.
    assert float(soft_kl(t64([p]), t64([q]), 4.0)) < float(soft_kl(t64([p]), t64([q]), 1.0))


def test_soft_kl_batch_mean_and_stability():
    rows_p, rows_q = [[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]], [[0.5, 0.0, -1.0], [2.0, 1.0, 0.0]]
    expected = (py_kl(rows_p[0], rows_q[0]) + py_kl(rows_p[1], rows_q[1])) / 2
    assert float(soft_kl(t64(rows_p), t64(rows_q))) == pytest.approx(expected, rel=1e-12)
    huge = torch.tensor([[1000.0, 0.0, -1000.0]])
    assert torch.isfinite(soft_kl(huge, -huge))


def test_soft_kl_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        soft_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        soft_kl(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)


# ---------------------------------------------------------------- KD
S_ROWS = [[1.0, 2.0, 0.0], [0.5, 0.5, 3.0]]
T_ROWS = [[3.0, 1.0, 0.0], [0.0, 1.0, 2.0]]
Y = [1, 2]


def test_kd_loss_by_hand():
    # CE, sample 0: log(e^1 + e^2 + e^0) - 2; sample 1: log(2 e^0.5 + e^3) - 3.
    ce = ((math.log(E + E**2 + 1) - 2) + (math.log(2 * E**0.5 + E**3) - 3)) / 2
    kd = 4.0**2 * (py_kl(T_ROWS[0], S_ROWS[0], 4.0) + py_kl(T_ROWS[1], S_ROWS[1], 4.0)) / 2
    out = kd_loss(t64(S_ROWS), t64(T_ROWS), torch.tensor(Y), temperature=4.0)
    assert float(out["ce"]) == pytest.approx(ce, rel=1e-12)
    assert float(out["kd"]) == pytest.approx(kd, rel=1e-12)
    assert float(out["loss"]) == pytest.approx(0.1 * ce + 0.9 * kd, rel=1e-12)
    # KD is KL(teacher || student), not the reverse.
    reverse = 16 * (py_kl(S_ROWS[0], T_ROWS[0], 4.0) + py_kl(S_ROWS[1], T_ROWS[1], 4.0)) / 2
    assert abs(kd - reverse) > 1e-4


def test_kd_loss_teacher_gets_no_gradient():
    student = torch.tensor(S_ROWS, requires_grad=True)
    teacher = torch.tensor(T_ROWS, requires_grad=True)
    kd_loss(student, teacher, torch.tensor(Y))["loss"].backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_kd_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="targets"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 5\)"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 5), torch.tensor([0, 1]))


# ---------------------------------------------------------------- DKD
def test_dkd_by_hand():
    """One sample, target 0, T = 2: z_s = [1, 2, 0], z_t = [3, 1, 0]."""
    # p = softmax(z / 2): student [0.5, 1, 0], teacher [1.5, 0.5, 0].
    zs, zt = E**0.5 + E**1 + 1, E**1.5 + E**0.5 + 1
    ps_t, pt_t = E**0.5 / zs, E**1.5 / zt
    tckd = pt_t * math.log(pt_t / ps_t) + (1 - pt_t) * math.log((1 - pt_t) / (1 - ps_t))
    # Non-target classes {1, 2} renormalised: student softmax([1, 0]), teacher softmax([0.5, 0]).
    s1, s2 = E / (E + 1), 1 / (E + 1)
    t1, t2 = E**0.5 / (E**0.5 + 1), 1 / (E**0.5 + 1)
    nckd = t1 * math.log(t1 / s1) + t2 * math.log(t2 / s2)
    ce = math.log(E + E**2 + 1) - 1
    out = dkd_loss(t64([[1.0, 2.0, 0.0]]), t64([[3.0, 1.0, 0.0]]), torch.tensor([0]),
                   alpha=1.0, beta=8.0, temperature=2.0)
    assert float(out["tckd"]) == pytest.approx(tckd, rel=1e-9)
    assert float(out["nckd"]) == pytest.approx(nckd, rel=1e-9)
    assert float(out["ce"]) == pytest.approx(ce, rel=1e-12)
    assert float(out["loss"]) == pytest.approx(ce + 2.0**2 * (tckd + 8 * nckd), rel=1e-9)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_decomposes_kd_per_sample(temperature):
    """KL(p^T || p^S) = TCKD + (1 - p_target^T) * NCKD for every sample."""
    gen = torch.Generator().manual_seed(1)
    student = 3 * torch.randn(16, 10, generator=gen, dtype=D)
    teacher = 3 * torch.randn(16, 10, generator=gen, dtype=D)
    targets = torch.randint(0, 10, (16,), generator=gen)
    tckd, nckd = _dkd_parts(student, teacher, targets, temperature, reduction="none")
    assert tckd.shape == nckd.shape == (16,)
    pt_teacher = torch.softmax(teacher / temperature, dim=1)[torch.arange(16), targets]
    for i in range(16):
        kl = float(soft_kl(teacher[i:i + 1], student[i:i + 1], temperature))
        assert float(tckd[i] + (1 - pt_teacher[i]) * nckd[i]) == pytest.approx(kl, rel=1e-9)
    # The batch means are what dkd_loss reports, and they recombine into KD's term.
    out = dkd_loss(student, teacher, targets, temperature=temperature)
    assert float(out["tckd"]) == pytest.approx(float(tckd.mean()), rel=1e-12)
    assert float(out["nckd"]) == pytest.approx(float(nckd.mean()), rel=1e-12)
    kd = kd_loss(student, teacher, targets, temperature=temperature)["kd"] / temperature**2
    assert float(kd) == pytest.approx(float((tckd + (1 - pt_teacher) * nckd).mean()), rel=1e-9)


def test_dkd_warmup_factor_scales_only_the_distillation_term():
    args = (t64(S_ROWS), t64(T_ROWS), torch.tensor(Y))
    full = dkd_loss(*args, ce_weight=0.5)
    half = dkd_loss(*args, ce_weight=0.5, warmup_factor=0.5)
    off = dkd_loss(*args, ce_weight=0.5, warmup_factor=0.0)
    ce = float(full["ce"])
    assert float(off["loss"]) == pytest.approx(0.5 * ce, rel=1e-12)
    assert float(half["loss"]) - 0.5 * ce == pytest.approx(
        0.5 * (float(full["loss"]) - 0.5 * ce), rel=1e-12)
    distill = 16 * (1.0 * float(full["tckd"]) + 8.0 * float(full["nckd"]))
    assert float(full["loss"]) == pytest.approx(0.5 * ce + distill, rel=1e-12)


def test_dkd_teacher_detached_and_finite_for_a_certain_teacher():
    student = torch.tensor(S_ROWS, requires_grad=True)
    teacher = torch.tensor([[60.0, 0.0, 0.0], [0.0, 0.0, 60.0]], requires_grad=True)
    out = dkd_loss(student, teacher, torch.tensor([0, 2]), temperature=1.0)
    out["loss"].backward()
    assert teacher.grad is None
    assert all(torch.isfinite(v) for v in out.values())
    assert torch.isfinite(student.grad).all()


def test_dkd_warmup_factor_values():
    assert dkd_warmup_factor(0, 20) == 0.0
    assert dkd_warmup_factor(10, 20) == 0.5
    assert dkd_warmup_factor(20, 20) == 1.0
    assert dkd_warmup_factor(25, 20) == 1.0
    assert dkd_warmup_factor(3, 0) == 1.0
    with pytest.raises(ValueError):
        dkd_warmup_factor(1, -5)


# ---------------------------------------------------------------- SFTN / GTN conditioning
Z_T, Z_1, Z_2 = [2.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 2.0, 1.0]


def test_sftn_loss_by_hand_two_branches():
    """Target 0, tau = 1, the paper's CIFAR-100 weights (1, 3, 1)."""
    zt = E**2 + 1 + E        # partition function of z_T
    z1 = E + E + 1           # of z_R^1
    z2 = 1 + E**2 + E        # of z_R^2
    teacher_ce = math.log(zt) - 2
    ce1, ce2 = math.log(z1) - 1, math.log(z2) - 0
    # KL(q_R || q_T) = sum_c q_R,c * (z_R,c - z_T,c) - log Z_R + log Z_T
    kl1 = (E * (1 - 2) + E * (1 - 0) + 1 * (0 - 1)) / z1 - math.log(z1) + math.log(zt)
    kl2 = (1 * (0 - 2) + E**2 * (2 - 0) + E * (1 - 1)) / z2 - math.log(z2) + math.log(zt)
    out = sftn_loss(t64([Z_T]), [t64([Z_1]), t64([Z_2])], torch.tensor([0]))
    assert float(out["teacher_ce"]) == pytest.approx(teacher_ce, rel=1e-12)
    assert float(out["branch1_ce"]) == pytest.approx(ce1, rel=1e-12)
    assert float(out["branch2_ce"]) == pytest.approx(ce2, rel=1e-12)
    assert float(out["branch1_kl"]) == pytest.approx(kl1, rel=1e-12)
    assert float(out["branch2_kl"]) == pytest.approx(kl2, rel=1e-12)
    assert float(out["branch_kl"]) == pytest.approx((kl1 + kl2) / 2, rel=1e-12)
    assert float(out["branch_ce"]) == pytest.approx((ce1 + ce2) / 2, rel=1e-12)
    expected = 1 * teacher_ce + 3 * (kl1 + kl2) / 2 + 1 * (ce1 + ce2) / 2
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-12)
    # Paper eq. (5) is KL(q_R || q_T): the teacher-first direction gives another number.
    assert abs(kl1 - py_kl(Z_T, Z_1)) > 1e-3


def test_sftn_loss_weights_and_temperature():
    teacher = t64([Z_T, [0.0, 1.0, -1.0]])
    branches = [t64([Z_1, [1.0, 0.0, 0.0]]), t64([Z_2, [0.0, 0.0, 2.0]])]
    y = [0, 1]
    out = sftn_loss(teacher, branches, torch.tensor(y), teacher_ce_weight=0.5, kl_weight=1.0,
                    branch_ce_weight=2.0, temperature=4.0)
    rows = [teacher.tolist()] + [b.tolist() for b in branches]
    teacher_ce = (py_ce(rows[0][0], 0) + py_ce(rows[0][1], 1)) / 2
    kls = [(py_kl(b[0], rows[0][0], 4.0) + py_kl(b[1], rows[0][1], 4.0)) / 2 for b in rows[1:]]
    ces = [(py_ce(b[0], 0) + py_ce(b[1], 1)) / 2 for b in rows[1:]]
    expected = 0.5 * teacher_ce + 1.0 * sum(kls) / 2 + 2.0 * sum(ces) / 2
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-12)
    assert float(out["branch2_kl"]) == pytest.approx(kls[1], rel=1e-12)


def test_sftn_gradients_reach_teacher_and_every_branch():
    teacher = torch.tensor([Z_T], requires_grad=True)
    branches = [torch.tensor([Z_1], requires_grad=True), torch.tensor([Z_2], requires_grad=True)]
    sftn_loss(teacher, branches, torch.tensor([0]))["loss"].backward()
    for leaf in [teacher, *branches]:
        assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    # The KL term alone (no CE) still moves the teacher: nothing is detached.
    teacher.grad = None
    only_kl = sftn_loss(teacher, branches, torch.tensor([0]), teacher_ce_weight=0.0,
                        branch_ce_weight=0.0)
    only_kl["loss"].backward()
    assert teacher.grad is not None and teacher.grad.abs().sum() > 0


def test_sftn_per_branch_entries_and_empty_list():
    gen = torch.Generator().manual_seed(2)
    teacher = torch.randn(4, 5, generator=gen)
    branches = [torch.randn(4, 5, generator=gen) for _ in range(3)]
    out = sftn_loss(teacher, branches, torch.tensor([0, 1, 2, 3]))
    expected_keys = {"loss", "teacher_ce", "branch_kl", "branch_ce"} | {
        f"branch{i}_{kind}" for i in (1, 2, 3) for kind in ("kl", "ce")}
    assert set(out) == expected_keys
    mean_kl = sum(float(out[f"branch{i}_kl"]) for i in (1, 2, 3)) / 3
    assert float(out["branch_kl"]) == pytest.approx(mean_kl, rel=1e-6)
    with pytest.raises(ValueError, match="branch"):
        sftn_loss(teacher, [], torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"branch_logits\[1\]"):
        sftn_loss(teacher, [branches[0], torch.zeros(4, 6)], torch.tensor([0, 1, 2, 3]))


def test_conditioning_loss_is_sftn_with_gtn_weights():
    gen = torch.Generator().manual_seed(3)
    teacher = torch.randn(6, 10, generator=gen)
    branches = [torch.randn(6, 10, generator=gen) for _ in range(3)]
    y = torch.randint(0, 10, (6,), generator=gen)
    gtn = conditioning_loss(teacher, branches, y)
    ref = sftn_loss(teacher, branches, y, teacher_ce_weight=1.0, kl_weight=3.0,
                    branch_ce_weight=1.0, temperature=1.0)
    assert set(gtn) == set(ref)
    for key in ref:
        assert torch.equal(gtn[key], ref[key]), key
    imagenet = conditioning_loss(teacher, branches, y, alpha=1.0)
    assert torch.equal(imagenet["loss"], sftn_loss(teacher, branches, y, kl_weight=1.0)["loss"])
    assert float(gtn["loss"] - imagenet["loss"]) == pytest.approx(2 * float(gtn["branch_kl"]))


# ---------------------------------------------------------------- AT / FitNets
def test_attention_map_by_hand():
    features = torch.tensor([[[[-1.0, 0.0], [0.0, 0.0]],      # channel 0
                              [[1.0, 2.0], [0.0, 0.0]]]])     # channel 1
    # p = 2: mean over channels of f^2 = [(1+1)/2, (0+4)/2, 0, 0] = [1, 2, 0, 0], / sqrt(5).
    expected = torch.tensor([[1.0, 2.0, 0.0, 0.0]]) / math.sqrt(5)
    assert torch.allclose(attention_map(features), expected)
    # p = 1: mean of |f| = [1, 1, 0, 0], / sqrt(2).
    assert torch.allclose(attention_map(features, p=1),
                          torch.tensor([[1.0, 1.0, 0.0, 0.0]]) / math.sqrt(2))
    assert attention_map(torch.zeros(3, 4, 5, 5)).abs().sum() == 0
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        attention_map(torch.zeros(2, 3))


def test_attention_transfer_by_hand_and_teacher_detached():
    student = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]], requires_grad=True)   # map [1, 0, 0, 0]
    teacher = torch.tensor([[[[-1.0, 0.0], [0.0, 0.0]],
                             [[1.0, 2.0], [0.0, 0.0]]]], requires_grad=True)   # [1, 2, 0, 0]/sqrt5
    expected = ((1 - 1 / math.sqrt(5)) ** 2 + (2 / math.sqrt(5)) ** 2) / 4
    loss = attention_transfer_loss(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None


def test_attention_transfer_rejects_different_spatial_sizes():
    with pytest.raises(ValueError, match=r"\(2, 8, 4, 4\).*\(2, 16, 8, 8\)"):
        attention_transfer_loss(torch.zeros(2, 8, 4, 4), torch.zeros(2, 16, 8, 8))
    with pytest.raises(ValueError, match=r"\(2, 8, 4, 4\).*\(3, 8, 4, 4\)"):
        attention_transfer_loss(torch.zeros(2, 8, 4, 4), torch.zeros(3, 8, 4, 4))


def test_hint_loss_by_hand_shapes_and_detach():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 2.0], [3.0, 6.0]], requires_grad=True)
    loss = hint_loss(student, teacher)
    assert loss.item() == pytest.approx((1**2 + 0 + 0 + 2**2) / 4)
    loss.backward()
    assert teacher.grad is None
    assert torch.allclose(student.grad, torch.tensor([[0.5, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match=r"\(2, 16, 4, 4\).*\(2, 32, 4, 4\)"):
        hint_loss(torch.zeros(2, 16, 4, 4), torch.zeros(2, 32, 4, 4))


# ---------------------------------------------------------------- entropy
def test_categorical_entropy_values():
    for k in (1, 2, 5, 10):
        assert float(categorical_entropy(torch.zeros(k))) == pytest.approx(math.log(k), abs=1e-6)
    # probabilities [1/2, 1/4, 1/4]: H = 1/2 log 2 + 2 * 1/4 log 4 = 1.5 log 2
    logits = torch.tensor([math.log(0.5), math.log(0.25), math.log(0.25)])
    assert float(categorical_entropy(logits)) == pytest.approx(1.5 * math.log(2), rel=1e-6)
    assert float(categorical_entropy(torch.tensor([100.0, 0.0, 0.0]))) < 1e-6
    assert categorical_entropy(torch.zeros(2, 3, 5)).shape == (2, 3)


def test_categorical_entropy_masked_choices_stay_finite():
    logits = torch.tensor([0.0, 0.0, float("-inf")], requires_grad=True)
    entropy = categorical_entropy(logits)
    assert entropy.item() == pytest.approx(math.log(2), abs=1e-6)
    entropy.backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- soft cross-entropy (GPD)
def test_soft_cross_entropy_by_hand_smoothing_and_detach():
    from gtn_nas.distill.losses import soft_cross_entropy

    logits = t64([[1.0, 2.0, 0.0]]).requires_grad_()
    target = t64([[0.2, 0.5, 0.3]]).requires_grad_()
    z = sum(math.exp(v) for v in (1.0, 2.0, 0.0))
    log_q = [v - math.log(z) for v in (1.0, 2.0, 0.0)]
    plain = -sum(p * lq for p, lq in zip((0.2, 0.5, 0.3), log_q))
    assert soft_cross_entropy(logits, target).item() == pytest.approx(plain, rel=1e-12)
    eps = 0.1
    smoothed = (1 - eps) * plain + eps * -sum(log_q) / 3
    loss = soft_cross_entropy(logits, target, eps)
    assert float(loss) == pytest.approx(smoothed, rel=1e-12)
    loss.backward()
    assert target.grad is None and logits.grad is not None
    # a one-hot target without smoothing is the ordinary cross-entropy
    one_hot = t64([[0.0, 1.0, 0.0]])
    assert float(soft_cross_entropy(logits, one_hot)) == pytest.approx(-log_q[1], rel=1e-12)
    with pytest.raises(ValueError, match=r"label_smoothing"):
        soft_cross_entropy(logits, target, 1.0)
    with pytest.raises(ValueError, match=r"\(1, 3\).*\(1, 4\)"):
        soft_cross_entropy(logits, torch.zeros(1, 4, dtype=D))
