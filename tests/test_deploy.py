"""gtn_nas.distill.deploy: the teacher guard, the deploy choice (validation only) and dominated tiers."""

from __future__ import annotations

import pytest

from gtn_nas.distill.deploy import Deployment, choose_deployment, flag_dominated, teacher_guard
from gtn_nas.errors import ConfigError


def _runs(**methods):
    """method -> [(val, test), ...] per seed -> the result records choose_deployment reads."""
    return {m: [{"seed": k, "val_acc_best": v, "test_acc_best": t, "run_dir": f"{m}/seed{k}"}
                for k, (v, t) in enumerate(pairs)] for m, pairs in methods.items()}


def test_guard_fires_only_when_the_teacher_is_not_above_the_student():
    assert teacher_guard("s", 0.90, 0.91) and teacher_guard("s", 0.90, 0.90)
    assert teacher_guard("s", 0.9001, 0.90) is None
    assert teacher_guard("s", None, 0.9) is None and teacher_guard("s", 0.9, None) is None
    assert "(ls)" in teacher_guard("m", 0.5, 0.6, "ls")


def test_deploy_choice_uses_validation_only():
    # kd wins on validation but loses on test: validation decides, test is only reported
    runs = _runs(kd=[(0.95, 0.80), (0.93, 0.81)], none=[(0.90, 0.99), (0.91, 0.98)],
                 ls=[(0.92, 0.97), (0.90, 0.97)])
    choice = choose_deployment("m", runs)
    assert (choice.method, choice.seed, choice.run_dir) == ("kd", 0, "kd/seed0")
    assert choice.val_acc == 0.95 and choice.test_acc == 0.80
    assert choice.val_by_method == pytest.approx({"kd": 0.94, "none": 0.905, "ls": 0.91})
    assert choice.test_gain_vs_none == pytest.approx(0.805 - 0.985)
    # the best seed within the chosen method, by validation
    runs = _runs(kd=[(0.90, 0.99), (0.97, 0.5)], none=[(0.80, 0.9)])
    assert choose_deployment("s", runs).seed == 1


def test_deploy_never_prefers_a_distilled_student_that_only_ties():
    runs = _runs(kd=[(0.9, 0.9)], ls=[(0.9, 0.9)], none=[(0.9, 0.8)])
    assert choose_deployment("s", runs).method == "none"
    runs = _runs(kd=[(0.9, 0.9)], ls=[(0.9, 0.9)])
    assert choose_deployment("s", runs).method == "ls"
    # unfinished runs (no validation accuracy) are not candidates
    runs = {"kd": [{"seed": 0, "val_acc_best": None, "test_acc_best": 1.0}],
            "none": [{"seed": 0, "val_acc_best": 0.5, "test_acc_best": 0.5}]}
    assert choose_deployment("s", runs).method == "none"
    with pytest.raises(ConfigError, match="no finished run"):
        choose_deployment("s", {"kd": []})


def _dep(name, val, latency=None, mflops=None):
    return Deployment(name, "kd", 0, val, val, {}, {}, None,
                      cost={"latency_ms": latency, "mflops": mflops})


def test_a_costlier_tier_no_more_accurate_than_a_cheaper_one_is_dominated():
    s, m, l = _dep("s", 0.953, 0.05, 1.0), _dep("m", 0.914, 0.09, 2.0), _dep("l", 0.97, 0.2, 4.0)
    notes = flag_dominated([s, m, l])
    assert (s.dominated_by, m.dominated_by, l.dominated_by) == (None, "s", None)
    assert len(notes) == 1 and notes[0].startswith("tier m is dominated") and "deploy s" in notes[0]
    # an equally accurate costlier tier is dominated too; without latencies MFLOPs decide
    a, b = _dep("s", 0.9, None, 1.0), _dep("m", 0.9, 0.1, 3.0)
    flag_dominated([a, b])
    assert b.dominated_by == "s" and a.dominated_by is None
    # a noisy latency that contradicts MFLOPs raises no flag (cheaper must hold on both)
    a, b = _dep("s", 0.95, 0.164, 1.09), _dep("l", 0.978, 0.092, 3.96)
    assert flag_dominated([a, b]) == [] and a.dominated_by is None
    # equal latency, fewer MFLOPs, more accurate: the costlier one is dominated (today's run)
    a, b = _dep("s", 0.972, 0.081, 1.09), _dep("m", 0.956, 0.081, 2.41)
    flag_dominated([a, b])
    assert b.dominated_by == "s" and a.dominated_by is None
    a, b = _dep("s", 0.9), _dep("m", 0.8)
    assert flag_dominated([a, b]) == [] and b.dominated_by is None  # no cost: nothing to say
