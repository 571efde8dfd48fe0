"""gtn-nas installs like a library: the wheel holds the code, the built-in spaces and the
bundled profiles; every third-party package the code imports is a declared dependency; the
command line starts without the heavy libraries; ``python -m gtn_nas`` is the command line.

The whole installed wheel is exercised by ``./dev wheel-check`` (CI runs it after the tests).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "nni", "pytorch_lightning", "lightning_fabric", "lightning")


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {normalised(re.split(r"[ ;<>=!~\[]", dep.strip(), maxsplit=1)[0])
            for dep in project["dependencies"]}


def third_party_imports() -> dict[str, str]:
    """Top-level modules imported by gtn_nas and search_spaces (at any depth, in functions
    too) that are neither the standard library nor the project: module -> a file importing it."""
    found: dict[str, str] = {}
    for package in ("gtn_nas", "search_spaces"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("gtn_nas",
                                                                         "search_spaces"):
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_a_declared_dependency():
    owners = importlib.metadata.packages_distributions()
    undeclared = []
    for module, where in sorted(third_party_imports().items()):
        distributions = {normalised(d) for d in owners.get(module, [])}
        assert distributions, f"{module} (imported in {where}) belongs to no installed package"
        if not distributions & declared():
            undeclared.append(f"{module} ({where}; from {', '.join(sorted(distributions))})")
    assert not undeclared, "imported but not in pyproject's dependencies: " + "; ".join(undeclared)


def test_the_lock_pins_every_declared_dependency_with_hashes():
    text = (ROOT / "requirements.lock").read_text()
    pinned = {normalised(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==\S+", text,
                                                          re.MULTILINE)}
    assert declared() | {"pytest", "pip", "setuptools", "wheel"} <= pinned
    requirements = [block for block in re.split(r"\n(?=[A-Za-z])", text)
                    if re.match(r"[A-Za-z]", block)]
    assert requirements and all("--hash=sha256:" in block for block in requirements)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from this checkout (no build isolation: the locked setuptools)."""
    out = tmp_path_factory.mktemp("dist")
    source = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    wanted = ("pyproject.toml", "README.md", "LICENSE", "gtn_nas/", "search_spaces/")
    for name in (f for f in files if f.startswith(wanted)):
        path = ROOT / name
        if path.is_file() and not path.is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(path.read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "-w", str(out),
                    str(source)], check=True, capture_output=True)
    (path,) = out.glob("gtn_nas-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_the_package_the_spaces_and_the_bundled_profiles(wheel):
    names = set(wheel.namelist())
    for profile in ("host_cpu", "jetson", "raspberry_pi4"):
        assert f"gtn_nas/hw_profiles/{profile}.yaml" in names
    assert "gtn_nas/hw_profiles/README.md" in names
    assert {"gtn_nas/__main__.py", "gtn_nas/cli/__init__.py",
            "search_spaces/resnet_supernet.py"} <= names
    assert not [n for n in names if n.endswith((".json", ".png", ".lock"))]  # no machine data
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "gtn-nas = gtn_nas.cli:main" in text and "[gtn_nas.search_spaces]" in text


def heavy_modules_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    return done.stdout.split()


def test_the_command_line_modules_import_no_heavy_library():
    modules = ["gtn_nas.cli", "gtn_nas.cli.common", "gtn_nas.cli.space_cmds",
               "gtn_nas.cli.teacher_cmd", "gtn_nas.cli.distill_cmds", "gtn_nas.cli.run_cmd",
               "gtn_nas.hardware.profiles"]
    assert heavy_modules_after("\n".join(f"import {m}" for m in modules)) == []


def test_building_the_parser_imports_no_heavy_library():
    """``gtn-nas --help`` and ``--version`` build the whole parser: no command may import
    torch, NNI or Lightning before it runs."""
    assert heavy_modules_after("from gtn_nas.cli import build_parser\nbuild_parser()") == []


def test_python_dash_m_gtn_nas_is_the_command_line(tmp_path):
    from gtn_nas import __version__

    done = subprocess.run([sys.executable, "-m", "gtn_nas", "--version"], capture_output=True,
                          text=True, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stdout.strip() == f"gtn-nas {__version__}"
    done = subprocess.run([sys.executable, "-m", "gtn_nas", "spaces", "--bogus"],
                          capture_output=True, text=True, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
