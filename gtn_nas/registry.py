"""One generic name -> object registry, used for spaces, datasets and every other pluggable kind.

A :class:`Registry` refuses duplicate names, answers unknown names with close matches and the
full list, and can pull extra entries from a Python entry-point group (for third-party packages)
the first time it is read.

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
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

from gtn_nas.errors import ConfigError, PluginError

T = TypeVar("T")
_log = logging.getLogger(__name__)


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
        self._conflicts: dict[str, str] = {}
        self._entry_points_discovered = entry_point_group is None

    def add(self, name: str, obj: T, origin: str = "built-in") -> T:
        """Registers ``obj`` under ``name``; a name already taken is an error."""
        if not name or not isinstance(name, str):
            raise ConfigError(f"{self.kind} name must be a non-empty string, got {name!r}")
        self._discover_entry_points()
        if name in self._entries or name in self._lazy:
            raise ConfigError(
                f"{self.kind} '{name}' is already registered (by {self.origin(name)}); "
                f"choose another name"
            )
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
            other = self._lazy.get(ep.name)
            if other is not None and other.value != ep.value:
                self._conflicts[ep.name] = f"{other.value} and {ep.value}"
            self._lazy[ep.name] = ep

    def _load(self, name: str) -> T:
        if name in self._conflicts:
            raise PluginError(f"{self.kind} '{name}' is declared twice, by entry points "
                              f"{self._conflicts[name]}; uninstall one")
        ep = self._lazy[name]
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party package: name it, do not crash
            raise PluginError(
                f"{self.kind} plugin '{name}' ({ep.value}) failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        del self._lazy[name]
        self._entries[name] = obj
        self._origins[name] = f"entry point {ep.value}"
        return obj
