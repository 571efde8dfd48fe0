"""``gtn-nas list``: what is installed at each extension point, and where each comes from.

Five kinds can be extended by installing a package that declares an entry point: search spaces
(``gtn_nas.search_spaces``), teachers (``gtn_nas.teachers``), distillers
(``gtn_nas.distillers``), datasets (``gtn_nas.datasets``) and hardware profiles
(``gtn_nas.profiles``). Listing imports no plugin; ``--check`` imports each one (running the
code of the packages installed) and fails in one line naming those that break.

Example:
    $ gtn-nas list teachers
    $ gtn-nas list --check
"""

from __future__ import annotations

import argparse

from gtn_nas.cli.common import out

KINDS = ("spaces", "teachers", "distillers", "datasets", "profiles")
GROUPS = {"spaces": "gtn_nas.search_spaces", "teachers": "gtn_nas.teachers",
          "distillers": "gtn_nas.distillers", "datasets": "gtn_nas.datasets",
          "profiles": "gtn_nas.profiles"}


def _registry(kind: str):
    """The registry of ``kind`` (imported here: these modules pull in torch and NNI)."""
    if kind == "spaces":
        from gtn_nas.space.plugins import SPACES

        return SPACES
    if kind == "teachers":
        from gtn_nas.teacher.net import TEACHERS
        from gtn_nas.teacher import zoo  # noqa: F401  (registers the zoo and reads its group)

        return TEACHERS
    if kind == "distillers":
        from gtn_nas.distill.distillers import DISTILLERS

        return DISTILLERS
    if kind == "datasets":
        from gtn_nas.data import DATASETS

        return DATASETS
    from gtn_nas.hardware.profiles import PROFILE_PLUGINS

    return PROFILE_PLUGINS


def rows_of(kind: str, check: bool = False) -> tuple[list[list[str]], list[str]]:
    """``[name, from]`` rows of one kind, and the one-line problems found (conflicts; with
    ``check`` also plugins that fail to import, or profiles that fail to load)."""
    registry = _registry(kind)
    rows, problems = [], []
    if kind == "profiles":
        from gtn_nas.hardware.profiles import PROFILES_DIR, load_profile, profile_names

        bundled = profile_names()
        for name in bundled:
            rows.append([name, f"built-in ({PROFILES_DIR / (name + '.yaml')})"])
            if check:
                problems += _tried(lambda n=name: load_profile(n), f"profile '{name}'")
    for entry in registry.entries():
        where = entry.where
        if entry.problem:
            problems.append(f"{registry.kind} '{entry.name}' is {entry.problem}")
            where += f"; CONFLICT: {entry.problem}"
        elif kind == "profiles" and entry.name in bundled:
            where += "; ignored: a bundled profile has this name"
        elif check:
            if kind == "profiles":
                from gtn_nas.hardware.profiles import load_profile

                found = _tried(lambda n=entry.name: load_profile(n), "")
            else:
                found = _tried(lambda n=entry.name: registry.get(n), "")
            if found:
                problems.append(found[0])
                where += f"; BROKEN: {found[0]}"
        rows.append([entry.name, where])
    rows.sort(key=lambda row: row[0])
    return rows, problems


def _tried(action, label: str) -> list[str]:
    from gtn_nas.errors import GtnNasError

    try:
        action()
    except GtnNasError as exc:
        text = str(exc).strip().splitlines()
        return [f"{label}: {text[0]}" if label else text[0]] if text else [label]
    return []


def cmd_list(args: argparse.Namespace) -> int:
    from gtn_nas.errors import PluginError
    from gtn_nas.report import text_table

    kinds = [args.kind] if args.kind else list(KINDS)
    problems: list[str] = []
    for index, kind in enumerate(kinds):
        rows, found = rows_of(kind, check=args.check)
        problems += found
        if index:
            out("")
        out(text_table([kind[:-1] if kind != "spaces" else "space", "from"], rows)
            if rows else f"no {kind} installed")
        out(f"(packages add {kind} through the entry-point group {GROUPS[kind]})")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more"
                                            if len(problems) > 3 else "")
        raise PluginError(f"{len(problems)} plugin problem(s): {shown}")
    return 0


def register(commands) -> None:
    lst = commands.add_parser("list", help="installed spaces, teachers, distillers, datasets "
                                           "and hardware profiles, and where each comes from")
    lst.add_argument("kind", nargs="?", choices=KINDS, help="one kind (default: all)")
    lst.add_argument("--check", action="store_true",
                     help="import every plugin (runs the code of the installed packages) and "
                          "fail in one line naming those that break")
    lst.set_defaults(func=cmd_list)
