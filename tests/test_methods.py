"""Standard, SFTN and GTN methods: loss terms, branch wiring, path sampling, warm-up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gtn_nas.errors import ConfigError
from gtn_nas.losses import conditioning_loss, sftn_loss
from gtn_nas.methods.grafting import transform_layer
from gtn_nas.methods.gtn import GTNMethod
from gtn_nas.methods.path_sampler import PathSampler
from gtn_nas.methods.sftn import SFTNMethod
from gtn_nas.methods.standard import StandardMethod
from gtn_nas.plugins import build_space
from gtn_nas.teachers import build_teacher

SIZE = 16


@pytest.fixture
def space():
    return build_space("resnet_supernet", width_mult=0.25, num_classes=10, input_size=SIZE)


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(6, 3, SIZE, SIZE), torch.tensor([0, 1, 2, 3, 4, 5])


def _teacher(name="resnet32"):
    torch.manual_seed(0)
    return build_teacher(name, num_classes=10)


def test_standard_is_cross_entropy(batch):
    x, y = batch
    method = StandardMethod(_teacher("tiny"))
    out = method(x, y)
    assert torch.equal(out["loss"], F.cross_entropy(out["logits"], y))


def test_transform_layers_follow_sftn():
    assert [type(m).__name__ for m in transform_layer(16, 8, 8, 8)[0]] == [
        "Conv2d", "BatchNorm2d", "ReLU"]
    shrink = transform_layer(16, 8, 16, 4)
    assert shrink(torch.zeros(1, 16, 16, 16)).shape == (1, 8, 4, 4)
    assert all(block.conv.stride == (2, 2) and block.conv.kernel_size == (3, 3)
               for block in shrink)
    grow = transform_layer(16, 8, 4, 8)
    assert grow(torch.zeros(1, 16, 4, 4)).shape == (1, 8, 8, 8)
    assert grow[0].kernel_size == (4, 4)
    with pytest.raises(ConfigError, match="sizes must differ by a power of two"):
        transform_layer(16, 8, 12, 8)


def test_sftn_branches_are_the_students_later_blocks(space, batch):
    x, y = batch
    sample = space.preset("s_nas_m")
    method = SFTNMethod.build(_teacher(), space, sample, SIZE)
    names = [[n for n, _ in body.layers.named_children()] for body in method.branches.bodies]
    # s_nas_m's blocks: [stem, layer1] [layer2, layer3] [layer4, layer5] [layer6, head]
    assert [len(n) for n in names] == [6, 4, 2]
    out = method(x, y)
    expected = sftn_loss(out["logits"], [out[f"branch{k}_logits"] for k in (1, 2, 3)], y)
    for key in ("loss", "teacher_ce", "branch_kl", "branch_ce"):
        assert torch.equal(out[key], expected[key])
    out["loss"].backward()
    assert all(p.grad is not None for p in method.teacher.parameters()), \
        "SFTN's gradients reach the teacher"
    # branch 3 = transform of the teacher's 3rd feature, then the student's layer6 and head
    _, features = method.teacher.forward_with_features(x)
    body = method.branches.bodies[2].layers
    manual = body(method.branches.transforms[2](features[2]))
    torch.testing.assert_close(manual, out["branch3_logits"])


def test_sftn_student_must_fit_the_teachers_cuts(space):
    odd = build_space("resnet_supernet", width_mult=0.25, num_classes=10, input_size=12)
    with pytest.raises(ConfigError, match="power of two"):
        SFTNMethod.build(_teacher(), odd, odd.preset("s_nas_s"), 20)


def test_gtn_draws_one_valid_path_per_batch_shared_by_all_branches(space, batch, monkeypatch):
    x, y = batch
    method = GTNMethod(_teacher(), space, PathSampler(space, "uniform", seed=0), SIZE)
    seen = []
    body_type = type(method.branches.bodies[0])
    original = body_type.forward

    def spy(self, x, sample, gates=None):
        seen.append(sample)
        return original(self, x, sample, gates)

    monkeypatch.setattr(body_type, "forward", spy)
    method.on_epoch_start(0, 1)
    samples = []
    for _ in range(5):
        out = method(x, y)
        assert len(seen) == 3 and seen[0] is seen[1] is seen[2], "one path for all branches"
        assert space.validate(seen[0]) == seen[0]
        samples.append(tuple(seen[0].items()))
        expected = conditioning_loss(out["logits"], [out[f"branch{k}_logits"] for k in (1, 2, 3)],
                                     y, alpha=3.0)
        assert torch.equal(out["loss"], expected["loss"])
        seen.clear()
    assert len(set(samples)) > 1, "a new path per mini-batch"
    method.on_epoch_start(0, 1)  # same epoch seed -> same sequence of paths
    method(x, y)
    assert tuple(seen[0].items()) == samples[0]


@pytest.mark.parametrize("kind", ["learned", "adversarial"])
def test_learning_samplers_move_the_distribution_uniform_does_not(space, batch, kind):
    x, y = batch
    uniform = PathSampler(space, "uniform", seed=0)
    learner = PathSampler(space, kind, seed=0, arch_lr=0.05)
    for sampler in (uniform, learner):
        method = GTNMethod(_teacher(), space, sampler, SIZE)
        arch = {id(p) for p in sampler.parameters()}
        assert all(id(p) not in arch for g in method.param_groups() for p in g["params"])
        method.on_epoch_start(0, 1)
        for _ in range(4):
            out = method(x, y)
            out["loss"].backward()
            method.after_optimizer_step(x, y, out)
            method.zero_grad(set_to_none=True)
    assert all(torch.equal(p, torch.zeros_like(p)) for p in uniform.parameters())
    moved = [p.abs().max().item() for p in learner.parameters()]
    assert max(moved) > 1e-3
    probs = learner.summary()["sampler/probs"]["layer4/op"]
    assert set(probs) == {"zero", "identity", "resblock"}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)


def test_gates_are_one_in_value_and_reach_the_logits(space):
    sampler = PathSampler(space, "learned", seed=1)
    sample, gates = sampler.draw()
    assert gates, "a learned sampler gates the grafted units"
    for gate in gates.values():
        assert gate.item() == pytest.approx(1.0, abs=1e-6)
    total = sum(gates.values())
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in sampler.parameters())


def test_cost_aware_sampler_pulls_expected_flops_down(space):
    sampler = PathSampler(space, "learned", seed=0, arch_lr=0.1, entropy_weight=0.0,
                          cost_target_mflops=0.05, cost_weight=10.0)
    start = sampler.expected_mflops().item()
    for _ in range(20):
        sampler.step()
    assert sampler.expected_mflops().item() < 0.8 * start
    with pytest.raises(ConfigError, match="needs a sampler that learns"):
        PathSampler(space, "uniform", cost_target_mflops=1.0)
    with pytest.raises(ConfigError, match="unknown sampler 'greedy'"):
        PathSampler(space, "greedy")


def test_expected_flops_is_exact_for_a_one_hot_distribution(space):
    from gtn_nas.costs import count_flops

    sampler = PathSampler(space, "learned", seed=0, cost_target_mflops=1.0)
    reference = space.reference_sample
    with torch.no_grad():
        for label, values in space.choices().items():
            logits = sampler.logits[label.replace("/", "__")]
            logits.fill_(-50.0)
            logits[values.index(reference[label])] = 50.0
    student = space.freeze(reference)
    expected = count_flops(student, space.example_input()) / 1e6
    assert sampler.expected_mflops().item() == pytest.approx(expected, rel=1e-4)


def test_warmup_freezes_the_teacher_only(space, batch):
    x, y = batch
    method = SFTNMethod.build(_teacher(), space, space.preset("s_nas_s"), SIZE, warmup_epochs=1)
    teacher_before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    method.train()
    method.on_epoch_start(0, 2)
    out = method(x, y)
    out["loss"].backward()
    optimizer.step()
    after = method.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], after[k]) for k in after), \
        "weights and BN statistics of a frozen teacher stay put"
    assert all(p.grad is None for p in method.teacher.parameters())
    assert any(p.grad is not None for p in method.branches.parameters())
    method.on_epoch_start(1, 2)
    optimizer.zero_grad(set_to_none=True)
    method(x, y)["loss"].backward()
    assert all(p.grad is not None for p in method.teacher.parameters())
