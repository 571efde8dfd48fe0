"""The paper's space: presets against the supplement's Tables 1-3, op semantics, size."""

from __future__ import annotations

import pytest
import torch

from gtn_nas.space.costs import count_params
from gtn_nas.space.layers import PassThrough, Projection, ResBlock, describe_module
from gtn_nas.space.plugins import build_space

# Rows of the supplement's Tables 1-3 (type, in, out, kernel, stride), transcribed, with the two
# readings docs/methods.md section 1 states: fixed "IdentityLayer" rows are parameter-free
# pass-throughs (left out here), and Table 3's "IdentityLayer 64->128" + "ResBlock (x3) 128->128
# s2" is one ResBlock layer 64->128 whose first block carries the projection.
STEM = ("ConvLayer", 3, 16, 3, 1)
TABLES = {
    "s_nas_s": [STEM,
                ("ResBlock", 16, 64, 3, 1),
                ("ResBlock", 64, 128, 3, 2),
                ("ResBlock", 128, 256, 3, 2),
                ("ConvLayer", 256, 1280, 1, 1),
                ("LinearLayer", 1280, 100, None, None)],
    "s_nas_m": [STEM,
                ("ResBlock (x2)", 16, 64, 3, 1),
                ("ResBlock", 64, 64, 3, 1),
                ("ResBlock (x2)", 64, 128, 5, 2),
                ("ResBlock", 128, 256, 3, 2),
                ("ResBlock", 256, 512, 3, 2),
                ("ConvLayer", 512, 1280, 1, 1),
                ("LinearLayer", 1280, 100, None, None)],
    "s_nas_l": [STEM,
                ("ResBlock (x2)", 16, 64, 3, 1),
                ("ResBlock (x3)", 64, 64, 3, 1),
                ("ResBlock (x3)", 64, 128, 3, 2),
                ("ResBlock (x3)", 128, 128, 3, 1),
                ("ResBlock (x3)", 128, 256, 3, 2),
                ("ResBlock (x3)", 256, 512, 3, 2),
                ("ConvLayer", 512, 1280, 1, 1),
                ("LinearLayer", 1280, 100, None, None)],
}


@pytest.mark.parametrize("preset", sorted(TABLES))
def test_presets_match_supplement_tables(paper_space, preset):
    student = paper_space.freeze(paper_space.preset(preset))
    rows = [(r.type, r.in_channels, r.out_channels, r.kernel, r.stride)
            for _, r in describe_module(student)
            if r.type not in ("IdentityLayer", "GlobalAvgPool")]
    assert rows == TABLES[preset]
    identity_rows = [r for _, r in describe_module(student) if r.type == "IdentityLayer"]
    # s_nas_m's layer 4 is an identity at an unchanged shape: a pass-through, no parameters.
    assert [(r.in_channels, r.out_channels) for r in identity_rows] == (
        [(128, 128)] if preset == "s_nas_m" else [])


def test_preset_parameter_counts_are_ordered(paper_space):
    counts = [count_params(paper_space.freeze(paper_space.preset(p)))
              for p in ("s_nas_s", "s_nas_m", "s_nas_l")]
    assert counts == sorted(counts) and counts[0] < counts[2] / 5


def test_space_size_is_eight_per_layer(paper_space):
    # per layer: zero, identity, resblock x {k3, k5} x {d2, d4, d6} = 8 distinct choices
    assert paper_space.unit_configurations()["layer3"] == 8
    assert paper_space.size() == 8 ** 6 == 262_144


def test_zero_drops_the_layer_and_identity_projects_where_shape_changes(paper_space):
    sample = paper_space.preset("s_nas_s")
    student = paper_space.freeze(sample)
    assert "layer2" not in dict(student.named_children()), "zero means: drop the layer"
    everything_off = {f"layer{i}/op": "zero" for i in range(1, 7)}
    bare = paper_space.freeze(everything_off)
    assert list(dict(bare.named_children())) == ["stem", "head"]
    x = torch.randn(2, 3, 32, 32)
    bare.eval()
    assert not torch.allclose(bare(x), bare(torch.randn(2, 3, 32, 32))), \
        "the output still depends on the input when every layer is dropped"
    identities = {**everything_off, "layer1/op": "identity", "layer2/op": "identity"}
    children = dict(paper_space.freeze(identities).named_children())
    assert isinstance(children["layer1"], Projection)      # 16 -> 64
    assert isinstance(children["layer2"], PassThrough)     # 64 -> 64, stride 1
    strided = dict(paper_space.freeze({**everything_off, "layer3/op": "identity"}).named_children())
    conv = strided["layer3"].conv
    assert (conv.in_channels, conv.out_channels, conv.stride) == (16, 128, (2, 2))


def test_dropped_layers_narrow_the_next_input(paper_space):
    sample = {**paper_space.preset("s_nas_m"), "layer1/op": "zero"}
    layer2 = dict(paper_space.freeze(sample).named_children())["layer2"]
    assert isinstance(layer2, ResBlock) and layer2.in_channels == 16  # the stem's width
    assert paper_space.block_channels(paper_space.preset("s_nas_s")) == [64, 128, 256, 100]
    assert paper_space.block_channels(sample) == [16, 128, 256, 100]


def test_irrelevant_labels_may_be_omitted_and_are_canonicalised(paper_space):
    short = {"layer1/op": "resblock", "layer1/kernel": 5, "layer1/depth": 6,
             **{f"layer{i}/op": "identity" for i in range(2, 7)}}
    full = paper_space.validate(short)
    assert full["layer2/kernel"] == 3 and full["layer2/depth"] == 2
    noisy = {**full, "layer2/kernel": 5}  # irrelevant for an identity layer
    assert paper_space.validate(noisy) == full
    missing = dict(full)
    del missing["layer1/depth"]
    with pytest.raises(Exception, match=r"missing label 'layer1/depth' \(allowed: 2, 4, 6\)"):
        paper_space.validate(missing)


def test_width_multiplier_and_resolution_are_parameters():
    narrow = build_space("resnet_supernet", width_mult=0.5, input_size=16, num_classes=7)
    student = narrow.freeze(narrow.preset("s_nas_m"))
    rows = [r for _, r in describe_module(student)]
    assert rows[0].out_channels == 8 and rows[-1].out_channels == 7
    assert student(torch.randn(1, 3, 16, 16)).shape == (1, 7)
    with pytest.raises(Exception, match="width_mult must be a number"):
        build_space("resnet_supernet", width_mult=0)
