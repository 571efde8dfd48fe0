"""The generic registry and the plugin mechanisms built on it."""

from __future__ import annotations

from importlib import metadata

import pytest

from gtn_nas.errors import ConfigError, PluginError
from gtn_nas.registry import Registry


def test_duplicates_refused_and_unknown_names_get_suggestions():
    reg: Registry[int] = Registry("widget")
    reg.add("alpha", 1)
    reg.register("beta")(2)
    with pytest.raises(ConfigError, match="widget 'alpha' is already registered"):
        reg.add("alpha", 3)
    with pytest.raises(ConfigError, match=r"unknown widget 'alpah' \(did you mean: alpha\?\); "
                                          r"known: alpha, beta"):
        reg.get("alpah")
    assert reg.names() == ["alpha", "beta"] and "beta" in reg and len(reg) == 2


def _entry_points(*specs):
    return [metadata.EntryPoint(name, value, "test.group") for name, value in specs]


def test_entry_points_load_lazily_and_broken_ones_are_named(monkeypatch):
    eps = _entry_points(("good", "json:dumps"), ("broken", "no_such_module_xyz:thing"))
    monkeypatch.setattr(metadata, "entry_points", lambda group: eps)
    reg = Registry("gizmo", "test.group")
    assert reg.names() == ["broken", "good"]           # listed without importing
    import json
    assert reg.get("good") is json.dumps
    assert reg.origin("good") == "entry point json:dumps"
    with pytest.raises(PluginError, match=r"gizmo plugin 'broken' \(no_such_module_xyz:thing\) "
                                          r"failed to import: ModuleNotFoundError"):
        reg.get("broken")
    with pytest.raises(ConfigError, match="already registered"):
        reg.add("good", 1)


def test_two_packages_claiming_one_name(monkeypatch):
    eps = _entry_points(("same", "json:dumps"), ("same", "json:loads"))
    monkeypatch.setattr(metadata, "entry_points", lambda group: eps)
    reg = Registry("gizmo", "test.group")
    with pytest.raises(PluginError, match="declared twice"):
        reg.get("same")


def test_built_in_spaces_come_through_the_public_entry_point_group():
    from gtn_nas.space.plugins import SPACES

    assert {"resnet_supernet", "mbconv"} <= set(SPACES.names())
    assert SPACES.origin("resnet_supernet") == (
        "entry point search_spaces.resnet_supernet:build_resnet_supernet")
