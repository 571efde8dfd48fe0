"""FLOPs and parameters through fvcore, checked against hand computation."""

from __future__ import annotations

import torch

from gtn_nas.space.costs import FlopsCost, ParamsCost, count_flops, count_params, layer_costs
from gtn_nas.space.layers import ResBlock


def test_single_resblock_by_hand():
    """ResBlock 16->64, kernel 3, stride 1, depth 2 on a 32x32 input (one multiply-add = 1)."""
    block = ResBlock(16, 64, kernel_size=3, stride=1, depth=2)
    hw = 32 * 32
    conv1 = 3 * 3 * 16 * 64 * hw          # 9,437,184
    conv2 = 3 * 3 * 64 * 64 * hw          # 37,748,736
    projection = 1 * 1 * 16 * 64 * hw     # 1,048,576 (16 -> 64 needs the 1x1 shortcut)
    batch_norms = 3 * 2 * 64 * hw         # fvcore: 2 per element for an affine BN in eval mode
    assert count_flops(block, torch.zeros(1, 16, 32, 32)) == (
        conv1 + conv2 + projection + batch_norms) == 48_627_712
    params = 3 * 3 * 16 * 64 + 3 * 3 * 64 * 64 + 16 * 64 + 3 * 2 * 64
    assert count_params(block) == params == 47_488


def test_strided_block_and_depth_by_hand():
    block = ResBlock(64, 64, kernel_size=5, stride=2, depth=4)   # two basic blocks
    out_hw = 8 * 8
    first = (5 * 5 * 64 * 64 + 5 * 5 * 64 * 64 + 64 * 64) * out_hw + 3 * 2 * 64 * out_hw
    second = 2 * 5 * 5 * 64 * 64 * out_hw + 2 * 2 * 64 * out_hw
    assert count_flops(block, torch.zeros(1, 64, 16, 16)) == first + second


def test_layer_rows_add_up_to_the_total(paper_space):
    student = paper_space.freeze(paper_space.preset("s_nas_m"))
    example = paper_space.example_input()
    costs = layer_costs(student, example)
    assert sum(c.flops for c in costs) == count_flops(student, example)
    assert sum(c.params for c in costs) == count_params(student)


def test_cost_models_follow_the_contract(small_space):
    flops, params = FlopsCost(small_space), ParamsCost(small_space)
    sample = small_space.sample(5)
    student = small_space.freeze(sample)
    assert params.cost(sample) == count_params(student)
    assert flops.cost(sample) == count_flops(student, small_space.example_input())
    cached = len(flops.unit_costs._cache)
    assert flops.cost(dict(sample)) == flops.cost(sample)  # cached per unit step
    assert len(flops.unit_costs._cache) == cached
    for seed in range(6, 12):  # sums of per-unit costs equal whole-student counts
        other = small_space.sample(seed)
        student = small_space.freeze(other)
        assert flops.cost(other) == count_flops(student, small_space.example_input())
        assert params.cost(other) == count_params(student)
