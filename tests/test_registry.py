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


def builtin_factory():
    """A stand-in built-in (its entry point value is this module's name and qualname)."""
    return "built"


def test_a_built_in_declared_in_its_group_is_that_built_in(monkeypatch):
    value = f"{__name__}:builtin_factory"
    eps = _entry_points(("mine", value), ("theirs", "json:dumps"))
    monkeypatch.setattr(metadata, "entry_points", lambda group: eps)
    reg = Registry("gizmo", "test.group")
    reg.add("mine", builtin_factory)
    assert reg.names() == ["mine", "theirs"] and reg.get("mine") is builtin_factory
    rows = {row.name: row for row in reg.entries()}
    assert rows["mine"].builtin and rows["mine"].entry_point == value and rows["mine"].loaded
    assert rows["mine"].where == f"built-in (entry point {value})"
    assert not rows["theirs"].builtin and not rows["theirs"].loaded
    assert rows["theirs"].where == "entry point json:dumps"
    # read first, registered after (an import the entry point itself triggers): still one entry
    late = Registry("gizmo", "test.group")
    assert late.names() == ["mine", "theirs"]
    late.add("mine", builtin_factory)
    assert late.get("mine") is builtin_factory and late.origin("mine") == "built-in"


def test_a_plugin_claiming_a_built_in_name_makes_it_unusable_until_one_goes(monkeypatch):
    monkeypatch.setattr(metadata, "entry_points",
                        lambda group: _entry_points(("mine", "json:dumps")))
    reg = Registry("gizmo", "test.group")
    reg.add("mine", builtin_factory)
    with pytest.raises(PluginError) as info:
        reg.get("mine")
    assert str(info.value) == (f"gizmo 'mine' is declared twice, by built-in {__name__}:"
                               f"builtin_factory and entry point json:dumps; uninstall one")
    assert reg.entries()[0].problem.startswith("declared twice, by built-in ")


def test_registering_reads_no_entry_points_and_listing_imports_no_plugin(monkeypatch):
    def refuse(group):
        raise AssertionError("entry points read while registering a built-in")

    monkeypatch.setattr(metadata, "entry_points", refuse)
    reg = Registry("gizmo", "test.group")
    reg.add("mine", builtin_factory)                     # cheap: no metadata scan at import
    eps = _entry_points(("broken", "no_such_module_xyz:thing"))
    monkeypatch.setattr(metadata, "entry_points", lambda group: eps)
    assert [row.name for row in reg.entries()] == ["broken", "mine"]   # listed, not imported
    assert reg.name_of(builtin_factory) == "mine" and reg.name_of(object()) is None


def test_a_plugin_failing_with_a_long_message_is_one_line(monkeypatch, tmp_path):
    (tmp_path / "loud_plugin_xyz.py").write_text(
        "raise RuntimeError('first line\\nsecond line\\nthird line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(metadata, "entry_points",
                        lambda group: _entry_points(("loud", "loud_plugin_xyz:f")))
    reg = Registry("gizmo", "test.group")
    with pytest.raises(PluginError) as info:
        reg.get("loud")
    assert str(info.value) == ("gizmo plugin 'loud' (loud_plugin_xyz:f) failed to import: "
                               "RuntimeError: first line")


def test_a_group_chosen_later_and_a_rescan(monkeypatch):
    found = _entry_points(("good", "json:dumps"))
    monkeypatch.setattr(metadata, "entry_points", lambda group: found if group == "g" else [])
    reg = Registry("gizmo")
    reg.add("mine", builtin_factory)
    assert reg.names() == ["mine"]
    reg.use_entry_point_group("g")
    assert reg.names() == ["good", "mine"]
    with pytest.raises(ValueError, match="already reads entry points of g"):
        reg.use_entry_point_group("other")
    found = []                                            # the package was uninstalled
    reg.rescan()
    assert reg.names() == ["mine"]


def test_a_bundled_space_is_listed_as_built_in_before_and_after_it_is_loaded():
    """The bundled spaces come through the public entry-point group; loading one (any test or
    command that builds it) must not turn it into a third-party entry in `gtn-nas list`."""
    from gtn_nas.space.plugins import SPACES, build_space

    def listed() -> bool:
        return next(e for e in SPACES.entries() if e.name == "resnet_supernet").builtin

    before = listed()
    build_space("resnet_supernet", width_mult=0.25, num_classes=10)
    assert before and listed()
