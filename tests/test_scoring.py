"""Path scores: per-path BN recalibration, the branch scorer, the factory and the at-chance rule."""

from __future__ import annotations

import pytest
import torch

from gtn_nas.errors import ConfigError
from gtn_nas.teacher.methods.grafting import GraftedBranches
from gtn_nas.space.plugins import build_space
from gtn_nas.teacher.recalibration import recalibrated
from gtn_nas.search.scoring import (DEFAULT_SCORE, BranchScorer, build_scorer, probe_samples,
                                    resolve_scorer)
from gtn_nas.teacher.zoo import build_teacher

SIZE = 8


@pytest.fixture
def space():
    torch.manual_seed(0)
    return build_space("resnet_supernet", width_mult=0.25, num_classes=10, input_size=SIZE)


def _bn_state(module):
    return {k: v.clone() for k, v in module.state_dict().items()
            if "running" in k or "num_batches" in k}


def test_recalibration_uses_the_paths_statistics_and_restores_the_shared_ones(space):
    sample = space.preset("s_nas_s")
    x = torch.randn(32, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 3 + 1
    stem_bn = space.units["stem"].stem.bn
    with torch.no_grad():
        stem_bn.running_mean.fill_(5.0)
        stem_bn.running_var.fill_(7.0)
    shared = _bn_state(space)
    space.eval()
    with torch.no_grad():
        before = space(x, sample)
    with recalibrated(space, lambda: space(x, sample)) as module:
        assert not module.training
        conv_out = torch.nn.functional.conv2d(x, space.units["stem"].stem.conv.weight,
                                              padding=1)
        torch.testing.assert_close(stem_bn.running_mean, conv_out.mean((0, 2, 3)))
        assert not torch.allclose(stem_bn.running_mean, torch.full_like(stem_bn.running_mean,
                                                                         5.0))
        with torch.no_grad():
            inside = space(x, sample)
        assert not torch.allclose(inside, before), "the path ran on its own statistics"
    after = _bn_state(space)
    assert after.keys() == shared.keys()
    assert all(torch.equal(after[k], shared[k]) for k in shared), "shared statistics restored"
    assert stem_bn.momentum == 0.1 and not space.training


def _scorer(space, recal=True, metric="accuracy"):
    torch.manual_seed(0)
    teacher = build_teacher("tiny", num_classes=10)
    branches = GraftedBranches.for_supernet(teacher, space, SIZE, full_branch=True)
    gen = torch.Generator().manual_seed(1)
    images, labels = torch.randn(40, 3, SIZE, SIZE, generator=gen), torch.arange(40) % 10
    recal_images = torch.randn(48, 3, SIZE, SIZE, generator=gen) if recal else None
    return branches, BranchScorer(teacher, branches, images, labels,
                                  recalibration_images=recal_images, recalibration_batch_size=16,
                                  metric=metric)


def test_branch_scorer_sees_layer1_and_leaves_the_branches_untouched(space):
    branches, scorer = _scorer(space, metric="nll")
    assert scorer.branch == "full" and "full-path branch" in scorer.description
    assert "recalibrated on 48 training images" in scorer.description
    state = {k: v.clone() for k, v in branches.state_dict().items()}
    base = space.preset("s_nas_m")
    other = dict(base, **{"layer1/kernel": 5})
    assert scorer(base) != scorer(other), "layer 1's choice changes the score"
    after = branches.state_dict()
    assert all(torch.equal(after[k], state[k]) for k in state)
    _, plain = _scorer(space, recal=False, metric="nll")
    assert plain(base) != scorer(base), "recalibration changed the statistics the path used"
    _, accuracy = _scorer(space)
    value, error = accuracy.score_with_error(base)
    assert 0 <= value <= 1 and error == pytest.approx((value * (1 - value) / 40) ** 0.5)


def test_at_chance_scores_fall_back_to_a_named_proxy(space):
    _, scorer = _scorer(space)  # untrained branches: at chance
    samples = probe_samples(space, 6, seed=0)
    note = scorer.check_informative(samples)
    assert note is not None and "at chance" in note
    replacement, why = resolve_scorer(scorer, samples, fallback="params")
    assert replacement.kind == "params" and "log10(parameters)" in why
    params = build_scorer("params", space)
    assert resolve_scorer(params, samples) == (params, None)
    assert resolve_scorer(scorer, samples)[0].kind == DEFAULT_SCORE == "flops", "the study's choice"
    images = torch.randn(16, 3, SIZE, SIZE)
    chosen, _ = resolve_scorer(scorer, samples, data=images, naswot_batches=1, batch_size=8)
    assert chosen.kind == DEFAULT_SCORE, "with training images too: the default score"
    chosen, _ = resolve_scorer(scorer, samples, fallback="naswot", data=images,
                               naswot_batches=1, batch_size=8)
    assert chosen.kind == "naswot"


def test_build_scorer_checks_what_each_kind_needs(space):
    with pytest.raises(ConfigError, match="unknown score 'zen'"):
        build_scorer("zen", space)
    with pytest.raises(ConfigError, match="needs a GTN teacher"):
        build_scorer("branch", space)
    with pytest.raises(ConfigError, match="needs training images"):
        build_scorer("naswot", space)
    images = torch.randn(20, 3, SIZE, SIZE)
    naswot = build_scorer("naswot", space, data=images, naswot_batches=2, batch_size=8)
    assert "2 training batch(es) of 8 images" in naswot.description
    assert build_scorer("synflow", space).kind == "synflow"


def test_branch_scorer_from_a_gtn_run(tmp_path, capsys):
    from gtn_nas.cli import main

    run = tmp_path / "gtn"
    code = main(["train-teacher", "--method", "gtn", "--teacher", "tiny", "--data", "synthetic",
                 "--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2",
                 "--out", str(run)])
    assert code == 0, capsys.readouterr().err
    scorer = build_scorer("branch", teacher_path=run / "teacher.pt", recalibration_batches=2,
                          batch_size=8)
    sample = scorer.space.preset("s_nas_s")
    assert 0.0 <= scorer(sample) <= 1.0 and scorer.chance == pytest.approx(0.1)
    assert "recalibrated on 16 training images" in scorer.description
