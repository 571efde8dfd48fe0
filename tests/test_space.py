"""The search-space contract, checked on every registered space and the example plugin."""

from __future__ import annotations

import pytest
import torch
from nni.nas.nn.pytorch import ModelSpace

from gtn_nas.errors import ConfigError, SampleError
from gtn_nas.space.export import check_parity, export_onnx
from gtn_nas.space.students import load_student, save_student

SEEDS = range(6)


def _storages(module: torch.nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in module.state_dict().values() if t.numel()}


def test_space_is_an_nni_model_space(small_space):
    assert isinstance(small_space, ModelSpace)
    labels = list(small_space.simplify())
    assert labels == list(small_space.choices())
    assert all("/" in label for label in labels), "labels are hierarchical (scope/name)"
    sample = small_space.sample(0)
    assert small_space.contains(sample)
    # NNI's own sampling API goes through our freeze and yields a plain student.
    model = small_space.random()
    assert isinstance(model, torch.nn.Sequential)


def test_nni_execution_engine_evaluates_the_sampled_students(small_space):
    """NNI's strategies rebuild the space under model_context(sample): they must get that
    student (fresh weights), not the whole supernet on a default path."""
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.space import SimplifiedModelSpace

    seen = []

    def evaluate(model):
        seen.append(model)

    simplified = SimplifiedModelSpace.from_model(small_space, FunctionalEvaluator(evaluate))
    for seed in (1, 2):
        sample = small_space.sample(seed)
        model = simplified.freeze(sample).executable_model()
        assert isinstance(model, torch.nn.Sequential)
        expected = small_space.freeze(sample)
        assert list(dict(model.named_children())) == list(dict(expected.named_children()))
        assert {k: v.shape for k, v in model.state_dict().items()} == {
            k: v.shape for k, v in expected.state_dict().items()}


def test_seeded_sampling_is_reproducible(small_space):
    first = [small_space.sample(seed) for seed in range(20)]
    again = [small_space.sample(seed) for seed in range(20)]
    assert first == again
    assert len({tuple(s.items()) for s in first}) > 10, "different seeds give different students"
    for sample in first:
        assert small_space.validate(sample) == sample, "samples come out canonical"


@pytest.mark.parametrize("seed", SEEDS)
def test_student_trains_forward_and_backward(small_space, seed):
    sample = small_space.sample(seed)
    student = small_space.freeze(sample, seed=seed).train()
    x = torch.randn(4, small_space.in_channels, small_space.input_size, small_space.input_size)
    logits = student(x)
    assert logits.shape == (4, small_space.num_classes)
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(4) % small_space.num_classes)
    loss.backward()
    assert torch.isfinite(loss)
    for name, param in student.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("seed", SEEDS)
def test_supernet_path_equals_inheriting_student(small_space, seed):
    """Weight sharing is real: the supernet's path and the frozen student compute the same."""
    small_space.eval()
    sample = small_space.sample(seed)
    student = small_space.freeze(sample, inherit_weights=True).eval()
    x = torch.randn(3, small_space.in_channels, small_space.input_size, small_space.input_size)
    with torch.no_grad():
        torch.testing.assert_close(student(x), small_space(x, sample), rtol=0, atol=1e-5)


def test_students_share_nothing(small_space):
    a = small_space.freeze(small_space.sample(1), inherit_weights=True)
    b = small_space.freeze(small_space.sample(1), inherit_weights=True)
    space_storage = _storages(small_space)
    assert not _storages(a) & space_storage
    assert not _storages(a) & _storages(b)
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    assert not torch.equal(next(a.parameters()), next(b.parameters()))


def test_fresh_students_are_seeded_and_leave_global_rng_alone(small_space):
    sample = small_space.sample(2)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = small_space.freeze(sample, seed=7)
    after = torch.rand(1)
    b = small_space.freeze(sample, seed=7)
    c = small_space.freeze(sample, seed=8)
    assert torch.equal(before, after), "freeze(seed=...) must not consume the global RNG"
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_save_reload_weights_only(small_space, tmp_path):
    sample = small_space.sample(3)
    student = small_space.freeze(sample, seed=0).eval()
    path = save_student(tmp_path / "student.pt", student, small_space, sample)
    payload = torch.load(path, weights_only=True)  # no pickled modules inside
    assert payload["sample"] == sample
    loaded = load_student(path, space=small_space)
    assert loaded.sample == sample
    x = torch.randn(2, small_space.in_channels, small_space.input_size, small_space.input_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), student(x), rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 4])
def test_onnx_export_matches_pytorch(small_space, tmp_path, seed):
    sample = small_space.sample(seed)
    student = small_space.freeze(sample, seed=seed).eval()
    generator = torch.Generator().manual_seed(seed)
    for module in student.modules():  # trained-looking BN statistics, not the identity ones
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    path = export_onnx(student, tmp_path / "student.onnx", small_space.example_input())
    x = torch.randn(5, small_space.in_channels, small_space.input_size, small_space.input_size)
    assert check_parity(student, path, x) <= 1e-4  # batch 5 also checks the dynamic batch axis


def test_presets_validate_and_build(small_space):
    for name in small_space.presets:
        sample = small_space.preset(name)
        assert small_space.freeze(sample) is not None
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        small_space.preset("nope")


def test_four_blocks_cover_the_units_in_order(small_space):
    small_space.check_blocks()
    widths = small_space.block_channels(small_space.sample(0))
    assert len(widths) == 4 and widths[-1] == small_space.num_classes


def test_validation_names_label_value_and_choices(small_space):
    sample = small_space.sample(0)
    label = next(iter(sample))
    allowed = small_space.choices()[label]
    with pytest.raises(SampleError, match=rf"{label}: 'bogus' is not allowed \(allowed: "):
        small_space.validate({**sample, label: "bogus"})
    with pytest.raises(SampleError, match="unknown label 'nolayer/op'"):
        small_space.validate({**sample, "nolayer/op": allowed[0]})
    with pytest.raises(SampleError, match="a sample is a mapping"):
        small_space.validate(["not", "a", "mapping"])
    with pytest.raises(SampleError):
        small_space.validate({**sample, label: True})  # a bool is not a choice value


def test_size_counts_distinct_students_by_enumeration():
    """Brute force on spaces small enough to enumerate: every raw label combination,
    canonicalised, counted once."""
    import itertools

    from gtn_nas.space.plugins import build_space
    from conftest import EXAMPLE_PLUGIN

    tiny = build_space(EXAMPLE_PLUGIN, width_mult=0.25)
    reduced = build_space("resnet_supernet", width_mult=0.25, kernels=(3,), depths=(2, 4))
    for space, expected in ((tiny, 3 ** 3), (reduced, (1 + 1 + 2) ** 6)):
        choices = space.choices()
        distinct = {tuple(space._canonical(dict(zip(choices, values))).items())
                    for values in itertools.product(*choices.values())}
        assert len(distinct) == expected == space.size()
