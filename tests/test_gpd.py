"""GPD: inverse reparameterisation, hard parameter sharing, branch folding and the method."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gtn_nas.errors import ConfigError
from gtn_nas.distill.gpd.method import GPDDistiller
from gtn_nas.distill.gpd.cbr import BRANCHES, EXPAND, CBRConv2d
from gtn_nas.distill.gpd.layers import WideBatchNorm2d, WideLinear
from gtn_nas.space.plugins import build_space
from gtn_nas.teacher.zoo import build_teacher

D = torch.float64
SMALL = dict(width_mult=0.25, num_classes=10, input_size=16)
# (space, sample seed): random students that are quick and cover every widened layer kind:
# resnet 143: stem, k3 ResBlock x2 (dense CBR convs, identity shortcuts), pass-through, head;
# resnet 129: 1x1 strided projection, k3 ResBlock with stride 2 (plain strided conv and
# projection shortcut); mbconv 1: depthwise 3x3 stride 1 (grouped CBR), depthwise 5x5 and
# strided (plain grouped), inverted residuals.
STUDENTS = [("resnet_supernet", 143), ("resnet_supernet", 129), ("mbconv", 1)]


@pytest.fixture(scope="module")
def spaces():
    return {name: build_space(name, **SMALL) for name in ("resnet_supernet", "mbconv")}


def make_student(spaces, name: str, seed: int, dtype=D) -> tuple[nn.Module, dict]:
    space = spaces[name]
    sample = space.sample(seed)
    return space.freeze(sample, seed=seed).to(dtype), sample


def batch(dtype=D, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=gen, dtype=dtype), torch.arange(n) % 10


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


# ---------------------------------------------------------------- inverse reparameterisation
@pytest.mark.parametrize("ratio", [2, 3])
@pytest.mark.parametrize("space_name,seed", STUDENTS)
def test_dynamic_teacher_is_the_student_at_init(spaces, space_name, seed, ratio):
    student, _ = make_student(spaces, space_name, seed)
    original = copy.deepcopy(student)
    gpd = GPDDistiller(student, None, ratio=ratio)
    x, y = batch()
    for training in (False, True):
        gpd.train(training)
        reference = copy.deepcopy(original).train(training)(x)
        out = gpd(x, y)
        assert max_diff(out["dt_logits"], reference) <= 1e-5
        assert max_diff(out["logits"], reference) <= 1e-5
    # the r-slice (export at init) is the original student: same classes, keys, shapes, values
    exported = GPDDistiller(original, None, ratio=ratio).export_student()
    assert [type(m) for m in exported.modules()] == [type(m) for m in original.modules()]
    got, want = exported.state_dict(), original.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert got[key].shape == want[key].shape
        assert max_diff(got[key].to(D), want[key].to(D)) <= 1e-5, key
    assert student.state_dict().keys() == want.keys()  # the student passed in is untouched
    assert all(torch.equal(student.state_dict()[k], want[k]) for k in want)


def test_example_plugin_space_widens_too():
    from tests.conftest import EXAMPLE_PLUGIN

    space = build_space(EXAMPLE_PLUGIN, **SMALL)
    student = space.freeze(space.preset("all_sep3"), seed=0).to(D)
    gpd = GPDDistiller(student, None, ratio=2).eval()
    x, y = batch()
    assert max_diff(gpd(x, y)["dt_logits"], student.eval()(x)) <= 1e-5


def test_noise_breaks_symmetry_but_keeps_the_student_exact(spaces):
    student, _ = make_student(spaces, "mbconv", 0)
    gpd = GPDDistiller(student, None, ratio=2, noise=1e-3, seed=3).eval()
    x, y = batch()
    out = gpd(x, y)
    reference = student.eval()(x)
    assert max_diff(out["logits"], reference) <= 1e-10
    assert 0 < max_diff(out["dt_logits"], reference) < 0.5


# ---------------------------------------------------------------- sharing and folding
def test_sharing_rules_and_separate_running_statistics(spaces):
    student, _ = make_student(spaces, "resnet_supernet", 0)
    gpd = GPDDistiller(student, None, ratio=3)
    modules = dict(gpd.dt.named_modules())
    fc, bn = modules["head.fc"], modules["stem.1"]
    assert isinstance(fc, WideLinear) and isinstance(bn, WideBatchNorm2d)
    classes, hidden = student.head.fc.weight.shape
    assert fc.weight.shape == (classes, 3 * hidden)  # logits not widened, input widened
    x, y = batch()
    gpd.train()(x, y)
    exported = gpd.export_student().state_dict()
    # the classifier's input slice is not scaled; hidden dense maps are scaled by r
    assert torch.equal(exported["head.fc.weight"], fc.weight[:, :hidden].detach())
    head_conv = modules["head.conv.0"]
    assert torch.allclose(exported["head.conv.0.weight"],
                          3 * head_conv.weight[:hidden, :head_conv.weight.shape[1] // 3])
    # the student's BN statistics are its own, not the DT's
    width = student.stem[1].num_features
    assert torch.equal(exported["stem.1.running_mean"], bn.student_running_mean)
    assert not torch.allclose(bn.student_running_mean, 3 * bn.running_mean[:width])
    assert int(bn.num_batches_tracked) == int(bn.student_num_batches_tracked) == 1


def test_student_gradients_land_on_the_shared_slice_only(spaces):
    student, _ = make_student(spaces, "resnet_supernet", 0)
    gpd = GPDDistiller(student, None, ratio=2, branches=())
    x, y = batch()
    F.cross_entropy(gpd.student_forward(x), y).backward()
    conv = dict(gpd.dt.named_modules())["head.conv.0"]
    out, inp = conv.weight.shape[0] // 2, conv.weight.shape[1] // 2
    grad = conv.weight.grad
    assert grad[:out, :inp].abs().sum() > 0
    assert grad[out:].abs().sum() == 0 and grad[:, inp:].abs().sum() == 0
    # one step trains both: the DT's loss also reaches the slice, and the two gradients add
    gpd.zero_grad()
    out_all = gpd(x, y)
    total = torch.autograd.grad(out_all["loss"], conv.weight, retain_graph=True)[0]
    parts = [torch.autograd.grad(out_all[k], conv.weight, retain_graph=True)[0]
             for k in ("loss_dt", "loss_s")]
    assert torch.allclose(total, parts[0] + parts[1])
    assert parts[0][:out, :inp].abs().sum() > 0 and parts[1][:out, :inp].abs().sum() > 0


@pytest.mark.parametrize("groups", [1, 4])
def test_branch_folding_equals_running_the_branches(groups):
    """The folded kernel is the sum of the six branches run as real convolutions."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8 if groups == 1 else 4, 3, padding=1, groups=groups, bias=False).to(D)
    cbr = CBRConv2d(conv, 2, True, True, BRANCHES, "scratch", torch.Generator().manual_seed(1))
    with torch.no_grad():  # move off the initial state (the 1x1 of 1x1_kxk starts at zero)
        for p in cbr.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, cbr.origin.shape[1] * cbr.groups, 6, 6, dtype=D)
    g, k, s = cbr.groups, 3, cbr.scales
    channels = x.shape[1]

    def per_channel(kernel: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # depthwise kxk
        return F.conv2d(y, kernel.expand(y.shape[1], 1, k, k), padding=1, groups=y.shape[1])

    parts = {
        "origin": F.conv2d(x, cbr.origin, padding=1, groups=g),
        "avg": per_channel(cbr.avg_kernel.view(1, 1, k, k), F.conv2d(x, cbr.avg_conv, groups=g)),
        "prior": F.conv2d(F.conv2d(x, cbr.prior_conv, groups=g), cbr.prior.unsqueeze(1),
                          padding=1, groups=cbr.prior.shape[0]),
        "1x1_kxk": F.conv2d(F.conv2d(x, cbr.id_conv + cbr.identity, groups=g), cbr.id_kxk,
                            padding=1, groups=g),
        "kxk": F.conv2d(x, cbr.kxk, padding=1, groups=g),
        "dw_pw": F.conv2d(F.conv2d(x, cbr.dw, padding=1, groups=channels), cbr.pw, groups=g),
    }
    expected = sum(parts[b] * s[i].view(1, -1, 1, 1) for i, b in enumerate(BRANCHES))
    assert cbr.dw.shape[0] == EXPAND * channels
    assert max_diff(cbr(x), expected) <= 1e-10


def test_trained_student_is_the_folded_shared_slice_and_exports(spaces, tmp_path):
    from gtn_nas.space.export import check_parity, export_onnx

    student, sample = make_student(spaces, "mbconv", 1, dtype=torch.float32)
    gpd = GPDDistiller(student, None, ratio=2)
    optimizer = torch.optim.SGD(gpd.param_groups(), lr=0.05, momentum=0.9)
    x, y = batch(torch.float32, n=8)
    for _ in range(3):
        optimizer.zero_grad()
        gpd(x, y)["loss"].backward()
        optimizer.step()
    plain = gpd.export_student()
    fresh = spaces["mbconv"].freeze(sample)
    fresh.load_state_dict(plain.state_dict(), strict=True)
    gpd.eval()
    assert max_diff(fresh.eval()(x), gpd(x, y)["logits"]) <= 1e-5
    # folding the DT's branches at the shared slice gives the exported kernel
    for path, module in gpd.dt.named_modules():
        if isinstance(module, CBRConv2d):
            assert torch.allclose(plain.state_dict()[f"{path}.weight"],
                                  module.student_tensors()["weight"].detach())
    path = export_onnx(fresh, tmp_path / "gpd_student.onnx", x[:1])
    assert check_parity(fresh, path, x) <= 1e-4


# ---------------------------------------------------------------- the method
@pytest.mark.parametrize("with_teacher", [False, True])
def test_a_few_gpd_steps_lower_both_losses(spaces, with_teacher):
    torch.manual_seed(0)
    student, _ = make_student(spaces, "resnet_supernet", 143, dtype=torch.float32)
    teacher = build_teacher("tiny", num_classes=10) if with_teacher else None
    gpd = GPDDistiller(student, teacher, ratio=2)
    optimizer = torch.optim.SGD(gpd.param_groups(), lr=0.05, momentum=0.9)
    x, y = batch(torch.float32, n=16)
    first = gpd(x, y)
    assert ("dkd_dt" in first) == ("dkd_s" in first) == ("teacher_logits" in first) \
        == with_teacher
    assert torch.allclose(first["loss"], first["loss_dt"] + first["loss_s"])
    losses = []
    for _ in range(8):
        out = gpd(x, y)
        losses.append((out["loss_dt"].item(), out["loss_s"].item()))
        optimizer.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(gpd.parameters(), gpd.grad_clip)
        optimizer.step()
    assert losses[-1][0] < losses[0][0] and losses[-1][1] < losses[0][1]
    if teacher is not None:
        assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    names = [g["name"] for g in gpd.param_groups()]
    assert names == ["dynamic_teacher", "cbr_scales"]
    grouped = {id(p) for g in gpd.param_groups() for p in g["params"]}
    assert grouped == {id(p) for p in gpd.dt.parameters()}
    gpd.eval()
    out = gpd(x, y)
    assert {"loss", "logits", "dt_logits", "loss_dt", "loss_s"} <= set(out)


@pytest.mark.parametrize("ratio", [1.5, 1, 0, True, "2"])
def test_ratio_must_be_an_integer_of_at_least_two(spaces, ratio):
    student, _ = make_student(spaces, "resnet_supernet", 0)
    with pytest.raises(ConfigError, match=r"ratio must be an integer >= 2") as info:
        GPDDistiller(student, None, ratio=ratio)
    assert "\n" not in str(info.value)


def test_bad_branch_sets_are_refused(spaces):
    student, _ = make_student(spaces, "resnet_supernet", 0)
    with pytest.raises(ConfigError, match=r"include 'origin'"):
        GPDDistiller(student, None, branches=("avg", "kxk"))
    with pytest.raises(ConfigError, match=r"wide.*choose distinct names from: origin"):
        GPDDistiller(student, None, branches=("origin", "wide"))
    gpd = GPDDistiller(student, None, branches=("origin", "dw_pw"), init="student")
    assert all(m.branches == ("origin", "dw_pw") for m in gpd.dt.modules()
               if isinstance(m, CBRConv2d))
    with pytest.raises(ConfigError, match=r"init must be scratch or student"):
        GPDDistiller(student, None, init="pretrained")


class _Gate(nn.Module):
    """Scales each feature by its channel mean: not channel-independent, cannot be widened."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x.mean(1, keepdim=True)


def _net(*middle: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), *middle,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


@pytest.mark.parametrize("middle,where", [
    ((nn.SiLU(),), r"'2' \(SiLU\)"),
    ((nn.GroupNorm(2, 4),), r"'2' \(GroupNorm\)"),
    ((nn.ReLU(), _Gate()), r"'3' \(_Gate\)"),
])
def test_layers_that_cannot_be_widened_are_named(middle, where):
    with pytest.raises(ConfigError, match=r"gpd cannot widen module " + where) as info:
        GPDDistiller(_net(*middle), None)
    assert "\n" not in str(info.value)
    GPDDistiller(_net(nn.ReLU()), None)  # the same network with a ReLU widens


def test_distill_builds_gpd_with_its_options(spaces):
    from gtn_nas.distill.distillers import build_distiller

    space = spaces["resnet_supernet"]
    student = space.freeze(space.preset("s_nas_s"), seed=0)
    gpd = build_distiller("gpd", student, None, space.block_units,
                          options={"ratio": 3, "branches": ["origin", "avg"], "dt_weight": 1.0})
    assert isinstance(gpd, GPDDistiller) and gpd.ratio == 3 and gpd.branches == ("origin", "avg")
    with pytest.raises(ConfigError, match=r"ratio must be an integer >= 2 .*got 2.5"):
        build_distiller("gpd", student, None, space.block_units, options={"ratio": 2.5})
