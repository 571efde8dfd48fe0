"""Standard, SFTN and GTN methods: loss terms, branch wiring, path sampling, warm-up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gtn_nas.errors import ConfigError
from gtn_nas.teacher.losses import conditioning_loss, sftn_loss
from gtn_nas.teacher.methods.grafting import transform_layer
from gtn_nas.teacher.methods.gtn import GTNMethod
from gtn_nas.teacher.methods.path_sampler import PathSampler
from gtn_nas.teacher.methods.sftn import SFTNMethod
from gtn_nas.teacher.methods.standard import StandardMethod
from gtn_nas.space.plugins import build_space
from gtn_nas.teacher.zoo import build_teacher

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

    def spy(self, x, sample):
        seen.append(sample)
        return original(self, x, sample)

    monkeypatch.setattr(body_type, "forward", spy)
    method.on_epoch_start(0, 1)
    samples = []
    for _ in range(5):
        out = method(x, y)
        assert len(seen) == 4 and all(s is seen[0] for s in seen), "one path for all branches"
        assert space.validate(seen[0]) == seen[0]
        samples.append(tuple(seen[0].items()))
        expected = conditioning_loss(out["logits"], [out[f"branch{k}_logits"] for k in (1, 2, 3)],
                                     y, alpha=3.0)
        full = expected["loss"] + out["full_ce"] + 3.0 * out["full_kl"]
        torch.testing.assert_close(out["loss"], full)
        seen.clear()
    assert len(set(samples)) > 1, "a new path per mini-batch"
    method.on_epoch_start(0, 1)  # same epoch seed -> same sequence of paths
    method(x, y)
    assert tuple(seen[0].items()) == samples[0]


def test_full_branch_runs_layer1_and_does_not_pull_the_teacher(space, batch):
    x, y = batch
    method = GTNMethod(_teacher(), space, PathSampler(space, "uniform", seed=0), SIZE)
    assert "layer1" in method.branches.branch_units()["full"]
    assert all("layer1" not in units for name, units in method.branches.branch_units().items()
               if name != "full")
    sample = space.preset("s_nas_m")
    out = method.branches.full_path(x, sample)
    out.sum().backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert method.branches.full.units["layer1"].resblocks["k3"][0].conv1.conv.weight.grad \
        is not None


def _planted_losses(sample, generator, scale=1.0):
    """Branch losses of a planted problem: layer 1 should be a resblock (only the full-path
    branch runs it) and layer 4 an identity (every branch but the last runs it)."""
    a = scale * float(sample["layer1/op"] != "resblock")
    b = scale * float(sample["layer4/op"] != "identity")

    def noise():
        return 0.3 * float(torch.randn((), generator=generator))

    return {"full": 1 + a + b + noise(), "branch1": 1 + b + noise(),
            "branch2": 1 + b + noise(), "branch3": 1 + noise()}


def _branch_units(space):
    units = list(space.units)  # stem, layer1..6, head; blocks as in docs/methods.md section 1
    return {"full": units, "branch1": units[2:], "branch2": units[4:], "branch3": units[6:]}


@pytest.mark.parametrize("kind", ["learned", "adversarial"])
def test_samplers_find_a_planted_op_in_every_layer_including_layer1(space, kind):
    sampler = PathSampler(space, kind, seed=0, branch_units=_branch_units(space))
    generator = torch.Generator().manual_seed(1)
    for _ in range(300):
        sample = sampler.draw()
        sampler.step(sample, _planted_losses(sample, generator))
    probs = sampler.probabilities()
    layer1 = float(probs["layer1/op"][2])   # resblock
    layer4 = float(probs["layer4/op"][1])   # identity
    if kind == "learned":
        assert layer1 > 0.8 and layer4 > 0.8, (layer1, layer4)
    else:
        assert layer1 < 0.1 and layer4 < 0.1, (layer1, layer4)


def test_the_estimator_reaches_every_layers_logits(space):
    sampler = PathSampler(space, "learned", seed=0, entropy_weight=0.0,
                          branch_units=_branch_units(space))
    everything = {f"layer{i}/{part}": value for i in range(1, 7)
                  for part, value in (("op", "resblock"), ("kernel", 3), ("depth", 2))}
    sample = space.validate(everything)
    sampler.step(sample, {"full": 1.0, "branch1": 1.0, "branch2": 1.0, "branch3": 1.0})
    before = {k: v.detach().clone() for k, v in sampler.logits.items()}
    sampler.step(sample, {"full": 2.0, "branch1": 2.0, "branch2": 2.0, "branch3": 2.0})
    for label in space.choices():
        key = label.replace("/", "__")
        assert not torch.equal(before[key], sampler.logits[key].detach()), label
    # a worse-than-baseline loss makes the drawn values less likely
    assert sampler.probabilities()["layer1/op"][2] < 1 / 3


def test_entropy_bonus_keeps_noise_from_collapsing_onto_zero(space):
    sampler = PathSampler(space, "learned", seed=0, branch_units=_branch_units(space))
    assert sampler.entropy_weight == 0.1, "the default bonus"
    generator = torch.Generator().manual_seed(3)
    for _ in range(300):
        sample = sampler.draw()
        sampler.step(sample, _planted_losses(sample, generator, scale=0.0))
    probs = sampler.probabilities()
    assert all(float(probs[f"layer{i}/op"][0]) < 0.5 for i in range(1, 7))


def test_learning_samplers_step_inside_gtn_training_uniform_does_not(space, batch):
    x, y = batch
    uniform = PathSampler(space, "uniform", seed=0)
    learner = PathSampler(space, "learned", seed=0)
    for sampler in (uniform, learner):
        method = GTNMethod(_teacher(), space, sampler, SIZE)
        arch = {id(p) for p in sampler.parameters()}
        assert all(id(p) not in arch for g in method.param_groups() for p in g["params"])
        method.on_epoch_start(0, 1)
        for _ in range(3):
            out = method(x, y)
            out["loss"].backward()
            logged = method.after_optimizer_step(x, y, out)
            method.zero_grad(set_to_none=True)
    assert "sampler/entropy" in logged
    assert all(torch.equal(p, torch.zeros_like(p)) for p in uniform.parameters())
    assert max(p.abs().max().item() for p in learner.parameters()) > 1e-3
    probs = learner.summary()["sampler/probs"]["layer4/op"]
    assert set(probs) == {"zero", "identity", "resblock"}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)


def test_student_prior_draws_each_layer_configuration_equally(space):
    sampler = PathSampler(space, "uniform", seed=0, prior="student")
    probs = sampler.probabilities()["layer2/op"]
    torch.testing.assert_close(probs, torch.tensor([1 / 8, 1 / 8, 6 / 8]))


def test_logged_branch_accuracy_averages_k_fixed_paths(space, monkeypatch):
    torch.manual_seed(0)
    method = GTNMethod(_teacher(), space, PathSampler(space, "uniform", seed=0), SIZE,
                       eval_paths=3, eval_recalibration_batches=0)
    gen = torch.Generator().manual_seed(0)
    val = [(torch.randn(5, 3, SIZE, SIZE, generator=gen), torch.arange(5) % 10),
           (torch.randn(4, 3, SIZE, SIZE, generator=gen), torch.arange(4) % 10)]
    paths = method.validation_paths()
    assert len(paths) == 3 and len({tuple(p.items()) for p in paths}) == 3
    assert paths == method.validation_paths(), "the same K paths every epoch"
    method.eval()
    expected = []
    for sample in paths:
        correct = sum(int((method.branch_logits(x, sample)["branch1"].argmax(1) == y).sum())
                      for x, y in val)
        expected.append(correct / 9)
    method.train()
    seen = []
    original = GTNMethod._branch_outputs

    def spy(self, x, features, sample):
        seen.append(tuple(sample.items()))
        return original(self, x, features, sample)

    monkeypatch.setattr(GTNMethod, "_branch_outputs", spy)
    logged = method.validate(val)
    assert len(set(seen)) == 3 and logged["paths"] == 3
    assert logged["branch1_acc"] == pytest.approx(sum(expected) / 3)
    assert logged["branch1_acc_min"] == pytest.approx(min(expected))
    assert method.training, "the mode is restored"


def test_evaluation_recalibrates_each_path_and_restores_the_shared_statistics(space, batch):
    x, y = batch
    method = GTNMethod(_teacher(), space, PathSampler(space, "uniform", seed=0), SIZE,
                       eval_paths=2, eval_recalibration_batches=2)
    method.on_epoch_start(0, 1)
    method(x, y)["loss"].backward()
    shared = {k: v.clone() for k, v in method.branches.state_dict().items()}
    with_recal = method.validate([(x, y)])
    after = method.branches.state_dict()
    assert all(torch.equal(after[k], shared[k]) for k in shared)
    method.eval_recalibration_batches, method._recent = 0, []
    assert method.validate([(x, y)]).keys() == with_recal.keys()


def test_one_pass_validation_equals_one_pass_per_path(space):
    """validate() runs the teacher once per batch and swaps each path's recalibrated BN
    statistics in; the numbers are exactly those of recalibrating and evaluating path by path
    with the engine's teacher pass beside (how validation ran before)."""
    from gtn_nas.engine import evaluate
    from gtn_nas.teacher.recalibration import recalibrated

    torch.manual_seed(0)
    method = GTNMethod(_teacher(), space, PathSampler(space, "uniform", seed=0), SIZE,
                       eval_paths=3, eval_recalibration_batches=2, full_branch=True)
    gen = torch.Generator().manual_seed(1)
    train = [(torch.randn(6, 3, SIZE, SIZE, generator=gen), torch.arange(6) % 10)
             for _ in range(3)]
    val = [(torch.randn(7, 3, SIZE, SIZE, generator=gen), torch.arange(7) % 10),
           (torch.randn(5, 3, SIZE, SIZE, generator=gen), torch.arange(5) % 10)]
    method.on_epoch_start(0, 1)
    optimizer = torch.optim.SGD(method.param_groups(), lr=0.1)
    for x, y in train:  # trained statistics differ from any path's own
        optimizer.zero_grad()
        method(x, y)["loss"].backward()
        optimizer.step()
    expected = evaluate(method, val)
    method.eval()
    per_path: dict[str, list[float]] = {}
    for sample in method.validation_paths():
        def run(sample=sample):
            for x in method._recent:
                method.branch_logits(x, sample)

        with recalibrated(method.branches, run):
            correct: dict[str, int] = {}
            for x, y in val:
                for name, z in method.branch_logits(x, sample).items():
                    correct[name] = correct.get(name, 0) + int((z.argmax(1) == y).sum())
        for name, count in correct.items():
            per_path.setdefault(name, []).append(count / 12)
    method.train()
    for name, accs in per_path.items():
        expected.update({f"{name}_acc": sum(accs) / len(accs), f"{name}_acc_min": min(accs),
                         f"{name}_acc_max": max(accs)})
    expected["paths"] = 3.0
    shared = {k: v.clone() for k, v in method.branches.state_dict().items()}
    assert method.validate(val) == expected
    assert set(per_path) == {"branch1", "branch2", "branch3", "full"}
    assert all(torch.equal(v, shared[k]) for k, v in method.branches.state_dict().items())
    assert method.training


def test_sandwich_and_inplace_distillation_add_terms(space, batch):
    x, y = batch
    method = GTNMethod(_teacher(), space, PathSampler(space, "uniform", seed=0), SIZE,
                       sandwich=True, inplace_distill=1.0)
    largest, smallest = method.extremes
    assert all(largest[f"layer{i}/op"] == "resblock" and largest[f"layer{i}/depth"] == 6
               for i in range(1, 7))
    assert all(smallest[f"layer{i}/op"] == "zero" for i in range(1, 7))
    method.on_epoch_start(0, 1)
    out = method(x, y)
    assert out["inplace_distill"] > 0
    out["loss"].backward()
    assert method.branches.full.units["layer1"].resblocks["k5"][2].conv1.conv.weight.grad \
        is not None, "the largest student trained"


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
    from gtn_nas.space.costs import count_flops

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
