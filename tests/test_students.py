"""Sample files and student checkpoints: round trips and every bad-input path."""

from __future__ import annotations

import pytest
import torch
import yaml

from gtn_nas.errors import ConfigError, SampleError
from gtn_nas.space.plugins import build_space
from gtn_nas.space.students import load_sample_file, load_student, save_sample_file, save_student


@pytest.fixture
def space():
    return build_space("resnet_supernet", width_mult=0.25, num_classes=10, input_size=16)


def test_sample_file_round_trip_yaml_and_json(space, tmp_path):
    sample = space.sample(11)
    path = save_sample_file(tmp_path / "s.yaml", sample, space, seed=11)
    assert load_sample_file(path, space) == sample
    bare = tmp_path / "bare.json"
    bare.write_text(__import__("json").dumps(sample))
    assert load_sample_file(bare, space) == sample


@pytest.mark.parametrize("content, error, message", [
    ("layer1/op: [unclosed", ConfigError, r"bad\.yaml:1: malformed YAML/JSON"),
    ("- just\n- a list\n", SampleError, "expected a mapping label -> value"),
    ("layer1/op: conv\n", SampleError, r"bad\.yaml: layer1/op: 'conv' is not allowed"),
    ("layer7/op: zero\n", SampleError, "unknown label 'layer7/op'"),
    ("space: mbconv\nsample: {}\n", ConfigError, "sample of space 'mbconv'"),
])
def test_bad_sample_files(space, tmp_path, content, error, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(error, match=message):
        load_sample_file(path, space)


def test_missing_sample_file(space, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sample_file(tmp_path / "none.yaml", space)


def test_checkpoint_errors(space, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_student(tmp_path / "none.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ConfigError, match="corrupt or unreadable student checkpoint"):
        load_student(corrupt)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "gtn-nas-student/1", "model": torch.nn.Linear(2, 2)}, unsafe)
    with pytest.raises(ConfigError, match="holds pickled Python objects") as excinfo:
        load_student(unsafe)
    assert "weights_only=False" not in str(excinfo.value) and "\n" not in str(excinfo.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ConfigError, match="not a gtn-nas student checkpoint"):
        load_student(foreign)
    sample = space.preset("s_nas_s")
    path = save_student(tmp_path / "s.pt", space.freeze(sample), space, sample)
    payload = torch.load(path, weights_only=True)
    payload["sample"] = space.preset("s_nas_m")  # weights of s, architecture of m
    torch.save(payload, path)
    with pytest.raises(ConfigError, match="weights do not match"):
        load_student(path)


def test_checkpoint_keeps_extra_fields(space, tmp_path):
    sample = space.sample(0)
    path = save_student(tmp_path / "s.pt", space.freeze(sample), space, sample, accuracy=0.5)
    assert load_student(path).extra == {"accuracy": 0.5}
    assert yaml.safe_load(save_sample_file(tmp_path / "x.yaml", sample, space).read_text())[
        "options"]["kernels"] == [3, 5]


def test_checkpoints_of_file_plugins_do_not_run_code_implicitly(tmp_path):
    from conftest import EXAMPLE_PLUGIN

    space = build_space(EXAMPLE_PLUGIN, width_mult=0.25)
    sample = space.preset("all_conv3")
    path = save_student(tmp_path / "s.pt", space.freeze(sample), space, sample)
    with pytest.raises(ConfigError, match="is not run implicitly"):
        load_student(path)
    assert load_student(path, space=space).sample == sample
    # the spec is stored resolved, so the same file works from any working directory
    assert torch.load(path, weights_only=True)["space"].startswith("/")


def test_damaged_checkpoint_fields(space, tmp_path):
    sample = space.sample(0)
    path = save_student(tmp_path / "s.pt", space.freeze(sample), space, sample)
    payload = torch.load(path, weights_only=True)
    del payload["options"]
    torch.save(payload, path)
    with pytest.raises(ConfigError, match="damaged student checkpoint"):
        load_student(path)
