"""gtn_nas.testing: the contract checks pass on the built-ins and catch what they promise to
catch (each planted fault fails with its own message)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import EXAMPLE_PLUGIN, image_tree
from gtn_nas import testing
from gtn_nas.data import DATASETS
from gtn_nas.distill.distillers import DISTILLERS, KDDistiller
from gtn_nas.hardware.profiles import profile_names
from gtn_nas.teacher.resnets import tiny
from gtn_nas.teacher.zoo import TEACHERS


@pytest.fixture
def scratch(monkeypatch):
    """Registers test-only entries in a registry and forgets them afterwards."""
    def add(registry, name, obj):
        for attr in ("_entries", "_origins"):
            monkeypatch.setattr(registry, attr, dict(getattr(registry, attr)))
        registry.add(name, obj, origin="test")

    return add


# ------------------------------------------------------------------------------ the built-ins

@pytest.mark.parametrize("name", DISTILLERS.names())
def test_every_built_in_distiller_passes(name):
    distiller = testing.check_distiller(name, steps=10)
    assert DISTILLERS.name_of(type(distiller)) in (name, None)  # gpd: a factory, not a class


@pytest.mark.parametrize("name", ["tiny", "resnet8x4"])
def test_built_in_teachers_pass(name):
    assert testing.check_teacher(name, input_size=16).name == name


def test_built_in_datasets_pass(tmp_path):
    assert testing.check_dataset("digits").num_classes == 10
    assert testing.check_dataset("synthetic", num_classes=3, num_examples=60).num_classes == 3
    image_tree(tmp_path, {"train": 4, "val": 2, "test": 2})
    assert testing.check_dataset("imagefolder", root=tmp_path).num_classes == 3


@pytest.mark.parametrize("name", profile_names())
def test_bundled_profiles_pass(name):
    assert testing.check_profile(name, space=None).tiers() == ["s", "m", "l"]


@pytest.mark.parametrize("spec", ["resnet_supernet", EXAMPLE_PLUGIN])
def test_spaces_pass(spec):
    assert testing.check_space(spec, seeds=[0, 1]).num_classes == 10


# ----------------------------------------------------------------------------- planted faults

def test_a_teacher_whose_features_are_not_its_blocks_fails(scratch):
    def swapped(num_classes, in_channels=3):
        teacher = tiny(num_classes, in_channels)

        def forward_with_features(x):
            logits, features = type(teacher).forward_with_features(teacher, x)
            return logits, features[::-1]

        teacher.forward_with_features = forward_with_features
        return teacher

    scratch(TEACHERS, "swapped", swapped)
    with pytest.raises(testing.PluginContractError) as info:
        testing.check_teacher("swapped", input_size=16)
    assert str(info.value) == ("teacher swapped: forward_with_features must return the "
                               "outputs of blocks 1, 2 and 3")


def test_a_teacher_returning_a_plain_module_fails(scratch):
    scratch(TEACHERS, "plain", lambda num_classes, in_channels=3: torch.nn.Linear(1, 1))
    with pytest.raises(testing.PluginContractError, match="^teacher plain: the builder "
                                                          "returned Linear, not a TeacherNet$"):
        testing.check_teacher("plain")


class _LeakyKD(KDDistiller):
    """Lets the teacher learn: what a distiller must never do."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for p in self.teacher.parameters():
            p.requires_grad_(True)

    def param_groups(self):
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]


def test_a_distiller_training_its_teacher_fails(scratch):
    scratch(DISTILLERS, "leaky", _LeakyKD)
    with pytest.raises(testing.PluginContractError) as info:
        testing.check_distiller("leaky", steps=2)
    assert str(info.value) == ("distillation method leaky: its parameter groups must hold the "
                               "student's parameters and never the teacher's")


class _TeacherLogitsKD(KDDistiller):
    """Reports the teacher's logits as the student's in eval mode (validation would lie)."""

    def forward(self, x, y):
        if not self.training:
            logits = self.teacher(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, y), "logits": logits}
        return super().forward(x, y)


def test_a_distiller_validating_another_model_fails(scratch):
    scratch(DISTILLERS, "liar", _TeacherLogitsKD)
    with pytest.raises(testing.PluginContractError, match="in eval mode 'logits' must be "
                                                          "those of the exported student"):
        testing.check_distiller("liar", steps=2)


def test_a_dataset_with_labels_beyond_its_classes_fails(scratch):
    def two_classes(request):
        splits = DATASETS.get("synthetic")(request)
        return dataclasses.replace(splits, num_classes=2, class_names=("a", "b"))

    scratch(DATASETS, "mislabelled", two_classes)
    with pytest.raises(testing.PluginContractError, match=r"^dataset mislabelled: train\[\d+\]:"
                                                          r" label \d+ is not an int in 0\.\.1$"):
        testing.check_dataset("mislabelled", num_examples=60)


def test_a_dataset_ignoring_the_requested_size_fails(scratch):
    def fixed_size(request):
        return DATASETS.get("synthetic")(dataclasses.replace(request, image_size=None,
                                                             channels=3))

    scratch(DATASETS, "stubborn", fixed_size)
    with pytest.raises(testing.PluginContractError) as info:
        testing.check_dataset("stubborn", num_examples=60)
    assert str(info.value) == ("dataset stubborn: channels=1, image_size=12 are not "
                               "honoured")
