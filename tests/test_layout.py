"""The package layout stays true: imports run one way, stage by stage, without cycles.

Order (each may import what is to its right): cli -> run -> search -> hardware | distill ->
teacher -> space -> the common floor (config, errors, fileio, registry, engine, data, report).
``hardware`` and ``distill`` are one level: neither imports the other. ``testing`` (the plugin
contract checks, which build spaces, teachers, distillers, data and profiles) sits at ``search``'s
level, above every stage it checks. Every ``import`` counts, at module level or inside a
function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gtn_nas"
LEVEL = {"floor": 0, "space": 1, "teacher": 2, "hardware": 3, "distill": 3, "search": 4,
         "run": 5, "cli": 6, "testing": 6, "package": 0}
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"  # gtn_nas/__init__.py: the version, imports nothing
    if parts[1] == "__main__":
        return "cli"  # python -m gtn_nas: the command line's entry, above every stage
    return parts[1] if parts[1] in LEVEL else "floor"


def imports_of(path: Path, module: str) -> set[str]:
    """The gtn_nas modules ``path`` imports (a ``from pkg import name`` counts ``pkg.name``
    when that is a module)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("gtn_nas"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("gtn_nas"):
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {dep for dep in imports_of(path, name) if dep in paths and dep != name}
            for name, path in paths.items()}


def test_every_import_follows_the_stage_order():
    wrong = []
    for module, deps in graph().items():
        mine = stage_of(module)
        for dep in deps:
            theirs = stage_of(dep)
            if theirs == mine:
                continue
            if LEVEL[theirs] >= LEVEL[mine]:
                wrong.append(f"{module} ({mine}) imports {dep} ({theirs})")
    assert not wrong, "imports against the stage order:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    edges = graph()
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(edges[node]):
            if dep.startswith(node + ".") or node.startswith(dep + "."):
                continue  # a package and its own modules (registration imports)
            if state.get(dep) == "open":
                cycles.append(" -> ".join(trail[trail.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, trail + [dep])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_python_dash_m_gtn_nas_sits_at_the_command_line_level():
    assert stage_of("gtn_nas.__main__") == "cli"
    assert "gtn_nas.cli" in graph()["gtn_nas.__main__"]


def test_bundled_profiles_are_package_data():
    """The top-level ``hw_profiles`` of the layout is a link to the package's folder, so the
    profiles a checkout shows are those a wheel installs."""
    root = PACKAGE.parent
    assert sorted(p.name for p in (PACKAGE / "hw_profiles").glob("*.yaml")) == \
        ["host_cpu.yaml", "jetson.yaml", "raspberry_pi4.yaml"]
    if (root / "hw_profiles").exists():
        assert (root / "hw_profiles").resolve() == (PACKAGE / "hw_profiles").resolve()


def test_no_module_over_500_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("planted, message", [
    ({"gtn_nas.space.costs": {"gtn_nas.teacher.zoo"}}, "against the stage order"),
    ({"gtn_nas.hardware.latency": {"gtn_nas.distill.jobs"}}, "against the stage order"),
])
def test_the_order_check_catches_a_planted_violation(monkeypatch, planted, message):
    real = graph()

    def with_planted():
        edges = {k: set(v) for k, v in real.items()}
        for module, deps in planted.items():
            edges[module] |= deps
        return edges

    monkeypatch.setitem(globals(), "graph", with_planted)
    with pytest.raises(AssertionError, match=message):
        test_every_import_follows_the_stage_order()


def test_the_cycle_check_catches_a_planted_cycle(monkeypatch):
    real = graph()
    edges = {k: set(v) for k, v in real.items()}
    edges["gtn_nas.hardware.latency_predictor"].add("gtn_nas.hardware.latency")
    edges["gtn_nas.hardware.latency"].add("gtn_nas.hardware.latency_predictor")
    monkeypatch.setitem(globals(), "graph", lambda: edges)
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()
