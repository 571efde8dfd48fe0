"""Zero-cost proxies: SynFlow and NASWOT against hand-computed values; the proxy scorers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gtn_nas.space.plugins import build_space
from gtn_nas.search.proxies import FlopsScore, NaswotScore, ParamsScore, SynflowScore, naswot, synflow


def test_synflow_matches_a_hand_computation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]]))
        net[0].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        net[2].weight.copy_(torch.tensor([[2.0, -1.0, 0.5]]))
        net[2].bias.copy_(torch.tensor([-4.0]))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    w1, b1 = before["0.weight"].double().abs(), before["0.bias"].double().abs()
    w2 = before["2.weight"].double().abs()[0]
    h = w1.sum(1) + b1                          # all-ones input, |weights|: ReLU passes
    expected = float((w2 * h).sum() + (w1 * w2[:, None]).sum())   # |W2 dR/dW2| + |W1 dR/dW1|
    assert synflow(net, (2,)) == pytest.approx(expected, rel=1e-12)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "model untouched"


def test_naswot_matches_a_hand_computation():
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    # codes [1,0], [1,1], [0,0]; K = N_A - Hamming = [[2,1,1],[1,2,0],[1,0,2]], det 4
    assert naswot(net, [x]) == pytest.approx(math.log(4.0))
    # two batches: the mean of their log-determinants
    y = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])  # codes [1,0], [0,1]: K = [[2,0],[0,2]]
    assert naswot(net, [x, y]) == pytest.approx((math.log(4.0) + math.log(4.0)) / 2)


def test_proxy_scorers_follow_the_scorer_contract():
    space = build_space("resnet_supernet", width_mult=0.25, num_classes=10, input_size=8)
    small, large = space.preset("s_nas_s"), space.preset("s_nas_l")
    batches = [torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))]
    for scorer in (ParamsScore(space), FlopsScore(space), SynflowScore(space, seed=0),
                   NaswotScore(space, batches, seed=0)):
        assert scorer.chance is None and scorer.description
        values = [scorer(small), scorer(large)]
        assert all(math.isfinite(v) for v in values)
        assert scorer(small) == values[0], "cached and deterministic"
        assert scorer.check_informative([small, large]) is None
    assert ParamsScore(space)(large) > ParamsScore(space)(small)
    assert SynflowScore(space)(large) > SynflowScore(space)(small)


def test_short_training_score_learns_a_learnable_task_and_is_seeded():
    """Planted: synthetic classes are learnable in a few steps, so the score after training
    is far above chance while the same student scored after no step sits near it."""
    from gtn_nas.data import load_dataset
    from gtn_nas.errors import ConfigError
    from gtn_nas.search.scoring import build_scorer, labelled_batches
    from gtn_nas.search.proxies import ShortTrainingScore

    data = load_dataset("synthetic", seed=0, num_examples=2048, size=8)
    space = build_space("resnet_supernet", width_mult=0.25, num_classes=10, input_size=8)
    sample = space.preset("s_nas_s")
    trained = build_scorer("short", space, data=data, short_steps=16, short_val_images=128)
    score = trained(sample)
    untrained = ShortTrainingScore(space, [], labelled_batches(data.val, 2, 64, None))
    assert score > 0.3 and untrained(sample) < 0.2, (score, untrained(sample))  # chance 0.1
    again = build_scorer("short", space, data=data, short_steps=16, short_val_images=128)
    assert again(sample) == score, "seeded: the same students score the same"
    assert trained.description.startswith("validation top-1 on 128 images after 16 SGD steps")
    with pytest.raises(ConfigError, match="short score needs training images"):
        build_scorer("short", space)
