"""Search-space plugins: the space registry, entry points and ``file.py:factory`` plugins.

Built-in spaces (``search_spaces/``) are registered through the entry-point group
``gtn_nas.search_spaces``, the same one third-party packages use. A single file can also be named
directly as ``path/to/file.py:factory`` (plugin code runs only when the user names it).

A factory is a callable taking the keyword options ``num_classes``, ``in_channels``,
``input_size`` and ``width_mult`` (others are its own) and returning a
:class:`~gtn_nas.space.supernet.SupernetSpace`.

Example:
    >>> space = build_space("resnet_supernet", width_mult=0.25)   # doctest: +SKIP
    >>> space = build_space("examples/custom_space_plugin.py:build_tiny_space")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

from gtn_nas.errors import ConfigError, PluginError
from gtn_nas.registry import Registry
from gtn_nas.space.supernet import SupernetSpace

ENTRY_POINT_GROUP = "gtn_nas.search_spaces"

SPACES: Registry[Callable[..., SupernetSpace]] = Registry("search space", ENTRY_POINT_GROUP)
"""Registered space factories (entry points are read on first use)."""

DEFAULT_SPACE = "resnet_supernet"


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names a file plugin (``something.py:factory``)."""
    path, sep, _ = spec.rpartition(":")
    return bool(sep) and path.endswith(".py")


def resolve_spec(spec: str) -> str:
    """A registered name unchanged; a file plugin with its file as an absolute path."""
    if not is_file_spec(spec):
        return spec
    path, _, attr = spec.rpartition(":")
    return f"{Path(path).expanduser().resolve()}:{attr}"


def load_file_factory(spec: str) -> Callable[..., SupernetSpace]:
    """Imports ``path/to/file.py`` and returns its attribute ``factory``.

    Raises:
        PluginError: the file is missing, fails to import, or lacks a callable ``factory``.
    """
    path_text, _, attr = spec.rpartition(":")
    path = Path(path_text).expanduser()
    if not attr:
        raise PluginError(f"plugin '{spec}': name the factory after the colon (file.py:factory)")
    if not path.is_file():
        raise PluginError(f"plugin '{spec}': no such file {path}")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"gtn_nas_plugin_{path.stem}_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise PluginError(f"plugin '{spec}': cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # a plugin must not end the process silently
            del sys.modules[module_name]
            raise PluginError(f"plugin '{spec}' failed to import: {type(exc).__name__}: {exc}") \
                from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise PluginError(f"plugin '{spec}': {path} has no callable '{attr}'")
    return factory


def get_factory(spec: str) -> Callable[..., SupernetSpace]:
    """The factory of a registered name or a ``file.py:factory`` plugin."""
    return load_file_factory(spec) if is_file_spec(spec) else SPACES.get(spec)


def build_space(spec: str = DEFAULT_SPACE, **options: Any) -> SupernetSpace:
    """Builds the space named ``spec`` with ``options`` and checks it honours the contract.

    Args:
        spec: A registered name (``gtn-nas spaces`` lists them) or ``path/to/file.py:factory``.
        **options: Keyword options of the factory (``num_classes``, ``width_mult``, ...).

    Raises:
        ConfigError: unknown name or option.
        PluginError: the plugin fails or returns something that is not a search space.
    """
    spec = resolve_spec(spec)
    factory = get_factory(spec)
    check_common_options(options)
    _check_options(spec, factory, options)
    try:
        space = factory(**options)
    except (ConfigError, PluginError):
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"search space '{spec}': {exc}") from exc
    except (Exception, SystemExit) as exc:
        raise PluginError(f"search space '{spec}' failed to build: {type(exc).__name__}: {exc}") \
            from exc
    if not isinstance(space, SupernetSpace):
        raise PluginError(f"search space '{spec}' returned {type(space).__name__}, not a "
                          f"gtn_nas.space.supernet.SupernetSpace")
    space.spec = spec
    try:
        check_contract(space)
    except Exception as exc:
        raise PluginError(f"search space '{spec}' breaks the contract: {exc}") from exc
    return space


# Bounds of the options every space takes: wide enough for any real use, narrow enough that a
# typo fails with a message instead of an allocation error deep inside torch.
COMMON_OPTION_BOUNDS = {"num_classes": (1, 1_000_000), "in_channels": (1, 64),
                        "input_size": (1, 4096), "width_mult": (1e-3, 16.0)}


def check_common_options(options: dict[str, Any]) -> None:
    """Validates ``num_classes``, ``in_channels``, ``input_size``, ``width_mult`` once, for all
    spaces."""
    for key, (low, high) in COMMON_OPTION_BOUNDS.items():
        if key not in options:
            continue
        value = options[key]
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key != "width_mult" and not isinstance(value, int):
            numeric = False
        if not numeric or not low <= value <= high:
            kind = "a number" if key == "width_mult" else "an integer"
            raise ConfigError(f"{key} must be {kind} in [{low}, {high}], got {value!r}")


def check_contract(space: SupernetSpace) -> None:
    """What every space must satisfy beyond its type (raises with the first violation)."""
    space.check_blocks()
    declared = list(space.choices())
    owned = [label for unit in space.units.values() for label in unit.labels()]
    if sorted(declared) != sorted(owned):
        stray = sorted(set(declared) - set(owned))
        raise ValueError(f"every choice must belong to a unit (registered with the unit's "
                         f"add_mutable); not owned by a unit: {', '.join(stray) or '-'}")
    for name, sample in space.presets.items():
        space.validate(sample, where=f"preset {name}")


def _check_options(spec: str, factory: Callable[..., Any], options: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in options:
        if key not in params:
            raise ConfigError(f"search space '{spec}' has no option '{key}'; options: "
                              f"{', '.join(params) or 'none'}")
