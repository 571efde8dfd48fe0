"""Extension points (issue 28, item 5): a throw-away distribution written here (a package and
its ``*.dist-info`` with ``entry_points.txt``, put on ``sys.path``; no network, no pip) declares
a space, a teacher, a distiller, a dataset and a hardware profile. `gtn-nas list` shows them
without importing them, each loads by name, passes the same checks as the built-ins
(:mod:`gtn_nas.testing`), and a broken one is one line and exit 2."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from gtn_nas.cli import main

PLUGIN_SOURCE = '''
"""A third-party package extending gtn-nas (written by tests/test_plugin_entry_points.py)."""
import dataclasses
from pathlib import Path

from gtn_nas.data import DATASETS
from gtn_nas.distill.distillers import KDDistiller
from gtn_nas.teacher.resnets import tiny
from search_spaces.mbconv_example import build_mbconv_space as demo_space

PROFILE = Path(__file__).with_name("demo_board.yaml")


def demo_teacher(num_classes, in_channels=3):
    teacher = tiny(num_classes, in_channels)
    teacher.name = "demo_teacher"
    return teacher


class DemoKD(KDDistiller):
    """KD at a temperature of its own."""


def demo_data(request):
    return DATASETS.get("synthetic")(dataclasses.replace(request, name="demo-data"))
'''


def _write_distribution(root: Path, module: str, dist: str, source: str,
                        entry_points: dict[str, dict[str, str]]) -> None:
    package = root / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in names.items()) + "\n"
        for group, names in entry_points.items()))


def _registries():
    from gtn_nas.data import DATASETS
    from gtn_nas.distill.distillers import DISTILLERS
    from gtn_nas.hardware.profiles import PROFILE_PLUGINS
    from gtn_nas.space.plugins import SPACES
    from gtn_nas.teacher.zoo import TEACHERS

    return [SPACES, TEACHERS, DISTILLERS, DATASETS, PROFILE_PLUGINS]


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Installs a distribution by putting it on sys.path; every registry reads its group again
    and is restored afterwards (so other tests never see the plugins)."""
    for registry in _registries():
        for attr in ("_entries", "_origins", "_lazy", "_declared", "_conflicts"):
            monkeypatch.setattr(registry, attr, dict(getattr(registry, attr)))
        monkeypatch.setattr(registry, "_entry_points_discovered",
                            registry._entry_points_discovered)
    modules: list[str] = []

    def install(source: str, entry_points: dict[str, dict[str, str]],
                dist: str = "gtn-nas-demo-plugin") -> str:
        module = f"gtn_nas_demo_plugin_{uuid.uuid4().hex[:8]}"
        folder = tmp_path / module
        _write_distribution(folder, module, dist, source,
                            {group: {name: value.format(module=module)
                                     for name, value in names.items()}
                             for group, names in entry_points.items()})
        monkeypatch.syspath_prepend(str(folder))
        for registry in _registries():
            registry.rescan()
        modules.append(module)
        return module

    yield install
    for module in modules:
        sys.modules.pop(module, None)


def _demo(install) -> str:
    module = install(PLUGIN_SOURCE, {
        "gtn_nas.search_spaces": {"demo_space": "{module}:demo_space"},
        "gtn_nas.teachers": {"demo_teacher": "{module}:demo_teacher",
                             "broken_teacher": "{module}_missing:nothing"},
        "gtn_nas.distillers": {"demo_kd": "{module}:DemoKD"},
        "gtn_nas.datasets": {"demo-data": "{module}:demo_data"},
        "gtn_nas.profiles": {"demo_board": "{module}:PROFILE"},
    })
    from gtn_nas.hardware.profiles import PROFILES_DIR

    profile = yaml.safe_load((PROFILES_DIR / "jetson.yaml").read_text())
    profile.update(name="demo_board", description="a board of a third-party package")
    profile.pop("latency_table", None)
    folder = next(p for p in map(Path, sys.path) if (p / module).is_dir())
    (folder / module / "demo_board.yaml").write_text(yaml.safe_dump(profile))
    return module


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_plugins_and_built_ins_without_importing_them(installed, capsys):
    module = _demo(installed)
    code, out, err = _run(capsys, "list")
    assert code == 0, err
    where = "gtn-nas-demo-plugin 0.1 (entry point {})"
    lines = {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines()
             if line and not line.startswith(("-", "("))}
    assert lines["demo_space"] == where.format(f"{module}:demo_space")
    assert lines["demo_teacher"] == where.format(f"{module}:demo_teacher")
    assert lines["broken_teacher"] == where.format(f"{module}_missing:nothing")
    assert lines["demo_kd"] == where.format(f"{module}:DemoKD")
    assert lines["demo-data"] == where.format(f"{module}:demo_data")
    assert lines["demo_board"] == where.format(f"{module}:PROFILE")
    assert lines["kd"].startswith("built-in")
    assert lines["resnet_supernet"].startswith("built-in")
    assert lines["jetson"].startswith("built-in (") and lines["jetson"].endswith("jetson.yaml)")
    assert module not in sys.modules, "listing imported the plugin"
    assert "(packages add teachers through the entry-point group gtn_nas.teachers)" in out


def test_one_kind_and_check_that_names_the_broken_plugin(installed, capsys):
    module = _demo(installed)
    code, out, err = _run(capsys, "list", "teachers")
    assert code == 0 and out.splitlines()[0].split() == ["teacher", "from"]
    assert "demo_kd" not in out and "demo_teacher" in out
    code, out, err = _run(capsys, "list", "teachers", "--check")
    assert code == 2 and err.count("\n") == 1
    assert err == (f"gtn-nas: error: 1 plugin problem(s): teacher plugin 'broken_teacher' "
                   f"({module}_missing:nothing) failed to import: ModuleNotFoundError: No "
                   f"module named '{module}_missing'\n")
    assert "BROKEN: teacher plugin 'broken_teacher'" in out


def test_plugins_load_by_name_and_pass_the_built_ins_checks(installed):
    from gtn_nas import testing
    from gtn_nas.distill.distillers import DISTILLERS
    from gtn_nas.hardware.profiles import load_profile
    from gtn_nas.teacher.zoo import TEACHERS, build_teacher

    module = _demo(installed)
    teacher = testing.check_teacher("demo_teacher")
    assert teacher.name == "demo_teacher" and TEACHERS.origin("demo_teacher") == \
        f"entry point {module}:demo_teacher"
    assert build_teacher("demo_teacher", 4).num_classes == 4
    distiller = testing.check_distiller("demo_kd", steps=5)
    assert type(distiller).__name__ == "DemoKD" and distiller.method_name == "demo_kd"
    assert DISTILLERS.name_of(type(distiller)) == "demo_kd"
    splits = testing.check_dataset("demo-data", num_examples=64)
    assert splits.name == "demo-data" and splits.num_classes == 10
    profile = testing.check_profile("demo_board", space=None)
    assert profile.name == "demo_board" and profile.source.name == "demo_board.yaml"
    assert load_profile("demo_board").source == profile.source
    space = testing.check_space("demo_space", seeds=[0])
    assert space.spec == "demo_space"


def test_commands_take_a_plugin_by_name_and_a_broken_one_is_one_line(installed, capsys,
                                                                     tmp_path):
    module = _demo(installed)
    code, out, err = _run(capsys, "train-teacher", "--method", "standard", "--teacher",
                          "demo_teacher", "--data", "demo-data", "--data-option",
                          "num_examples=64", "--epochs", "1", "--batch-size", "16",
                          "--max-steps-per-epoch", "1", "--out", str(tmp_path / "good"))
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "good" / "config.yaml").read_text())
    assert (saved["teacher"], saved["data"]["name"]) == ("demo_teacher", "demo-data")
    code, out, err = _run(capsys, "train-teacher", "--method", "standard", "--teacher",
                          "broken_teacher", "--data", "synthetic", "--epochs", "1",
                          "--out", str(tmp_path / "broken"))
    assert code == 2 and err.count("\n") == 1
    assert err == (f"gtn-nas: error: teacher plugin 'broken_teacher' ({module}_missing:"
                   f"nothing) failed to import: ModuleNotFoundError: No module named "
                   f"'{module}_missing'\n")


def test_a_plugin_claiming_a_built_in_name_is_refused_in_one_line(installed, capsys):
    module = installed(textwrap.dedent('''
        def kd(*args, **kwargs):
            raise AssertionError("never imported")
    '''), {"gtn_nas.distillers": {"kd": "{module}:kd"}}, dist="gtn-nas-kd-clone")
    code, out, err = _run(capsys, "list", "distillers")
    assert code == 2 and err.count("\n") == 1
    assert err == ("gtn-nas: error: 1 plugin problem(s): distillation method 'kd' is declared "
                   "twice, by built-in gtn_nas.distill.distillers:KDDistiller and entry point "
                   f"{module}:kd\n")
    assert "CONFLICT: declared twice" in out
    from gtn_nas.distill.distillers import DISTILLERS
    from gtn_nas.errors import PluginError

    with pytest.raises(PluginError, match="uninstall one"):
        DISTILLERS.get("kd")
    assert module not in sys.modules


def test_a_profile_plugin_naming_no_file_is_one_line(installed):
    from gtn_nas.errors import PluginError
    from gtn_nas.hardware.profiles import load_profile

    module = installed("MISSING = '/nowhere/board.yaml'\n",
                       {"gtn_nas.profiles": {"lost_board": "{module}:MISSING"}})
    with pytest.raises(PluginError) as info:
        load_profile("lost_board")
    assert str(info.value) == (f"hardware profile plugin 'lost_board' (entry point {module}:"
                               f"MISSING) names /nowhere/board.yaml, which is not a file")
