"""One generic name -> object registry, used for spaces, datasets and every other pluggable kind.

A :class:`Registry` refuses duplicate names, answers unknown names with close matches and the
full list, and can pull extra entries from a Python entry-point group (for third-party packages)
the first time it is read. Entries of a group are listed without importing them; a plugin's
code runs only when its name is asked for (:meth:`Registry.get`), so one broken package fails
only the command that names it.

A built-in registered in code may also be declared in its group (``pyproject.toml`` does so for
every built-in, so the groups document themselves): an entry point whose value is exactly the
built-in's ``module:qualname`` *is* that built-in. Any other entry point claiming a taken name
makes the name unusable until one of the two is removed (:class:`PluginError` naming both).

Example:
    >>> colours = Registry("colour")
    >>> @colours.register("red")
    ... def make_red():
    ...     return (255, 0, 0)
    >>> colours.get("red")()
    (255, 0, 0)
    >>> colours.get("rde")
    Traceback (most recent call last):
    ...
    gtn_nas.errors.ConfigError: unknown colour 'rde' (did you mean: red?); known: red
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, TypeVar

from gtn_nas.errors import ConfigError, PluginError

T = TypeVar("T")
_log = logging.getLogger(__name__)

OWN_DISTRIBUTION = "gtn-nas"
"""The distribution whose entry points are this package's built-ins."""


@dataclass(frozen=True)
class RegistryEntry:
    """Where one registered name comes from (what ``gtn-nas list`` prints).

    Attributes:
        name: The registered name.
        builtin: Registered by this package (in code, or by its own entry point).
        entry_point: ``module:attr`` of the entry point declaring it, if any.
        distribution: ``name version`` of the distribution declaring that entry point.
        loaded: Whether its code has been imported in this process.
        problem: Why the name cannot be used (two declarations), else None.
    """

    name: str
    builtin: bool
    entry_point: str | None = None
    distribution: str | None = None
    loaded: bool = True
    problem: str | None = None

    @property
    def where(self) -> str:
        """One phrase: ``built-in``, ``built-in (gtn-nas 0.1.0, entry point m:f)``, ``pkg 1.0
        (entry point m:f)``."""
        point = f"entry point {self.entry_point}" if self.entry_point else None
        if self.builtin:
            details = ", ".join(part for part in (self.distribution, point) if part)
            return f"built-in ({details})" if details else "built-in"
        if self.distribution and point:
            return f"{self.distribution} ({point})"
        return self.distribution or point or "registered at run time"


def qualified_name(obj: Any) -> str | None:
    """``module:qualname`` of a function or class (how an entry point names it), else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{qualname}" if isinstance(module, str) and isinstance(qualname, str) \
        else None


def _distribution(ep: metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    try:
        return f"{dist.name} {dist.version}"
    except Exception:  # noqa: BLE001 - malformed metadata of a foreign package: name nothing
        return None


def _is_own(ep: metadata.EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    try:
        name = dist.name if dist is not None else ""
    except Exception:  # noqa: BLE001
        return False
    return str(name).lower().replace("_", "-") == OWN_DISTRIBUTION


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class Registry(Generic[T]):
    """Maps names to objects (usually factories) of one kind.

    Args:
        kind: What the entries are, used in messages (``"search space"``, ``"dataset"``).
        entry_point_group: Optional entry-point group whose entries are added on first read.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._lazy: dict[str, metadata.EntryPoint] = {}
        self._declared: dict[str, metadata.EntryPoint] = {}  # loaded names an entry point declares
        self._conflicts: dict[str, str] = {}
        self._entry_points_discovered = entry_point_group is None

    def use_entry_point_group(self, group: str) -> None:
        """Reads ``group`` too, for a registry created before its group was chosen.

        Raises:
            ValueError: the registry already reads another group.
        """
        if self.entry_point_group not in (None, group):
            raise ValueError(f"{self.kind} registry already reads entry points of "
                             f"{self.entry_point_group}, not {group}")
        if self.entry_point_group is None:
            self.entry_point_group = group
            self._entry_points_discovered = False

    def add(self, name: str, obj: T, origin: str = "built-in") -> T:
        """Registers ``obj`` under ``name``; a name already taken is an error.

        Entry points are not read here (registering built-ins at import stays cheap); an entry
        point found later that claims the same name is reported by :meth:`get`.
        """
        if not name or not isinstance(name, str):
            raise ConfigError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ConfigError(f"{self.kind} '{name}' is already registered (by "
                              f"{self._origins[name]}); choose another name")
        ep = self._lazy.get(name)
        if ep is not None:
            if ep.value != qualified_name(obj):
                raise ConfigError(f"{self.kind} '{name}' is already registered (by entry point "
                                  f"{ep.value}); choose another name")
            del self._lazy[name]  # the entry point declares exactly this object
            self._declared[name] = ep
        self._entries[name] = obj
        self._origins[name] = origin
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorator(obj: T) -> T:
            return self.add(name, obj)

        return decorator

    def get(self, name: str) -> T:
        """Returns the entry named ``name`` or raises :class:`ConfigError` with suggestions.

        Entries from entry points are imported here, on first use, so one broken plugin fails
        only when it is asked for (with :class:`PluginError` naming it).
        """
        self._discover_entry_points()
        if name in self._conflicts:
            raise PluginError(f"{self.kind} '{name}' is declared twice, by "
                              f"{self._conflicts[name]}; uninstall one")
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            return self._load(name)
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        listing = ", ".join(known) if known else "none"
        raise ConfigError(f"unknown {self.kind} '{name}'{hint}; known: {listing}")

    def origin(self, name: str) -> str:
        """Where the entry comes from: ``built-in`` or ``entry point <module:attr>``."""
        self._discover_entry_points()
        if name in self._lazy:
            return f"entry point {self._lazy[name].value}"
        self.get(name)
        return self._origins[name]

    def names(self) -> list[str]:
        """All registered names (entry points included, not imported), sorted."""
        self._discover_entry_points()
        return sorted(set(self._entries) | set(self._lazy))

    def entries(self) -> list[RegistryEntry]:
        """Every name with where it comes from, sorted by name; imports nothing.

        Example:
            >>> reg = Registry("widget")
            >>> _ = reg.add("a", len)
            >>> [(e.name, e.where) for e in reg.entries()]
            [('a', 'built-in')]
        """
        self._discover_entry_points()
        rows = []
        for name in self.names():
            ep = self._lazy.get(name) or self._declared.get(name)
            # ours whether or not it was imported yet: the bundled spaces come through the
            # public group, so loading one must not turn it into a third-party entry
            builtin = (self._origins.get(name) == "built-in" and name in self._entries) or (
                ep is not None and _is_own(ep))
            problem = (f"declared twice, by {self._conflicts[name]}"
                       if name in self._conflicts else None)
            rows.append(RegistryEntry(
                name=name, builtin=builtin, entry_point=ep.value if ep is not None else None,
                distribution=_distribution(ep) if ep is not None else None,
                loaded=name in self._entries, problem=problem))
        return rows

    def name_of(self, obj: object) -> str | None:
        """The name ``obj`` is registered under, among the entries already loaded (so asking
        never imports a plugin); None if it is not one of them."""
        return next((name for name, entry in self._entries.items() if entry is obj), None)

    def rescan(self) -> None:
        """Forgets the entry points not imported yet and reads the group again on next use
        (after a package was installed or removed while this process runs)."""
        if self.entry_point_group is None:
            return
        self._lazy.clear()
        self._conflicts.clear()
        self._entry_points_discovered = False

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _discover_entry_points(self) -> None:
        if self._entry_points_discovered:
            return
        self._entry_points_discovered = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name in self._entries:
                obj = self._entries[ep.name]
                if ep.value == qualified_name(obj):
                    self._declared.setdefault(ep.name, ep)  # a built-in declared in its group
                else:
                    self._conflicts[ep.name] = (f"{self._origins[ep.name]} "
                                                f"{qualified_name(obj) or type(obj).__name__} "
                                                f"and entry point {ep.value}")
                continue
            other = self._lazy.get(ep.name)
            if other is not None and other.value != ep.value:
                self._conflicts[ep.name] = f"entry points {other.value} and {ep.value}"
            self._lazy[ep.name] = ep

    def _load(self, name: str) -> T:
        ep = self._lazy[name]
        try:
            obj = ep.load()
        except (Exception, SystemExit) as exc:  # a broken package: name it, do not crash
            raise PluginError(f"{self.kind} plugin '{name}' ({ep.value}) failed to import: "
                              f"{_first_line(exc)}") from exc
        if name in self._entries:  # importing it registered it: a built-in declared in its group
            return self._entries[name]
        del self._lazy[name]
        self._entries[name] = obj
        self._origins[name] = f"entry point {ep.value}"
        self._declared[name] = ep
        return obj
