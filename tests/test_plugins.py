"""File plugins (path.py:factory) and the checks build_space makes on any plugin."""

from __future__ import annotations

import textwrap

import pytest

from conftest import EXAMPLE_PLUGIN
from gtn_nas.errors import ConfigError, PluginError
from gtn_nas.space.plugins import build_space, is_file_spec


def _write(tmp_path, body: str) -> str:
    path = tmp_path / "plugin.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_example_plugin_loads_from_its_file():
    space = build_space(EXAMPLE_PLUGIN, num_classes=5)
    assert space.spec == EXAMPLE_PLUGIN and space.size() == 27
    assert set(space.presets) == {"all_conv3", "all_sep3"}
    assert is_file_spec(EXAMPLE_PLUGIN) and not is_file_spec("resnet_supernet")


@pytest.mark.parametrize("body, message", [
    ("raise RuntimeError('boom')\n", r"plugin\.py:factory' failed to import: RuntimeError: boom"),
    ("x = 1\n", "has no callable 'factory'"),
    ("def factory(**kw):\n    return 42\n", "returned int, not a gtn_nas.space.supernet.SupernetSpace"),
    ("import torch\ndef factory(**kw):\n    return torch.nn.Linear(1, 1)\n",
     "returned Linear, not a gtn_nas.space.supernet.SupernetSpace"),
    ("def factory(**kw):\n    raise KeyError('inner')\n", "failed to build: KeyError"),
])
def test_broken_plugins_are_named(tmp_path, body, message):
    spec = _write(tmp_path, body) + ":factory"
    with pytest.raises(PluginError, match=message):
        build_space(spec)


def test_plugin_breaking_the_block_contract(tmp_path):
    spec = _write(tmp_path, """
        from gtn_nas.space.supernet import SupernetSpace
        from gtn_nas.space.units import StemUnit, ClassifierHeadUnit

        class Two(SupernetSpace):
            def __init__(self):
                super().__init__()
                self.units["stem"] = StemUnit(3, 8)
                self.units["head"] = ClassifierHeadUnit(8, 16, 10)
                self.block_units = (("stem",), ("head",))

        def factory():
            return Two()
    """) + ":factory"
    with pytest.raises(PluginError, match="breaks the contract: .*4 consecutive groups"):
        build_space(spec)


def test_missing_file_and_missing_factory_name(tmp_path):
    with pytest.raises(PluginError, match="no such file"):
        build_space(str(tmp_path / "nope.py") + ":factory")
    with pytest.raises(PluginError, match="name the factory after the colon"):
        build_space(str(tmp_path / "nope.py") + ":")


def test_unknown_space_and_option():
    with pytest.raises(ConfigError, match=r"unknown search space 'resnet_supernt' \(did you mean: "
                                          r"resnet_supernet\?\)"):
        build_space("resnet_supernt")
    with pytest.raises(ConfigError, match="has no option 'depth_mult'"):
        build_space("resnet_supernet", depth_mult=2)
    with pytest.raises(ConfigError, match=r"num_classes must be an integer in \[1, 1000000\]"):
        build_space("resnet_supernet", num_classes=0)


def test_choices_outside_units_break_the_contract(tmp_path):
    spec = _write(tmp_path, """
        import nni
        from nni.mutable import label_scope
        from nni.nas.nn.pytorch import LayerChoice
        from torch import nn
        from gtn_nas.space.supernet import SupernetSpace
        from gtn_nas.space.units import StemUnit, ClassifierHeadUnit

        class Stray(SupernetSpace):
            def __init__(self, **kw):
                super().__init__()
                self.units["stem"] = StemUnit(3, 8)
                self.units["a"] = StemUnit(8, 8)
                self.units["b"] = StemUnit(8, 8)
                self.units["head"] = ClassifierHeadUnit(8, 16, 10)
                self.block_units = (("stem",), ("a",), ("b",), ("head",))
                self.extra = LayerChoice([nn.Identity(), nn.ReLU()], label="blk")

        def factory(**kw):
            return Stray()
    """) + ":factory"
    with pytest.raises(PluginError, match="not owned by a unit: blk"):
        build_space(spec)


def test_common_options_are_checked_for_every_space():
    for spec in ("resnet_supernet", "mbconv", EXAMPLE_PLUGIN):
        with pytest.raises(ConfigError, match="num_classes must be an integer"):
            build_space(spec, num_classes=0)
        with pytest.raises(ConfigError, match="width_mult must be a number"):
            build_space(spec, width_mult=-1)
