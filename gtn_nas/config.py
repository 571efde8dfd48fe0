"""Typed, validated configurations: dataclasses filled from YAML files and command-line values.

:func:`read_yaml` reads any YAML/JSON file safely with one-line errors.
:func:`from_mapping` builds a dataclass from a mapping, refusing unknown keys and values of the
wrong type with one line naming the key, the value and what is expected. :func:`load_config`
reads a YAML file (``yaml.safe_load``) and applies overrides on top.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Opt:
    ...     lr: float = 0.1
    ...     epochs: int = 3
    >>> from_mapping(Opt, {"lr": 0.05})
    Opt(lr=0.05, epochs=3)
    >>> from_mapping(Opt, {"lr": "fast"})
    Traceback (most recent call last):
    ...
    gtn_nas.errors.ConfigError: config: lr: 'fast' is not a float
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from gtn_nas.errors import ConfigError

T = TypeVar("T")


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | os.PathLike, what: str = "file") -> Any:
    """Safely loads YAML (JSON is YAML too) with one-line errors; duplicate keys are errors."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML/JSON: {problem}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason})") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _coerce(key: str, value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: {key}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key}: {value!r} is not allowed (allowed: "
                              f"{', '.join(map(str, args))})")
        return value
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key}: {value!r} is not a mapping")
        return dict(value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key}: {value!r} is not a list")
        item = args[0] if args else Any
        return tuple(_coerce(key, v, item, where) for v in value)
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):
        if dataclasses.is_dataclass(value) and isinstance(value, annotation):
            return value
        return from_mapping(annotation, value, f"{where}: {key}")
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key}: {value!r} is not true/false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key}: {value!r} is not an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key}: {value!r} is not a float")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key}: {value!r} is not a string")
        return value
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Builds dataclass ``cls`` from ``data``; unknown keys and wrongly typed values are errors."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of options, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{where}: unknown option '{key}'{hint}")
        default = fields[key].default_factory  # type: ignore[misc]
        if isinstance(value, Mapping) and default is not dataclasses.MISSING:
            # a partial section keeps the field's own defaults for what it leaves out (a
            # stage's ``train: {epochs: 4}`` keeps that stage's learning rate and schedule,
            # not the plain TrainConfig's)
            base = default()
            if dataclasses.is_dataclass(base):
                value = {**{f.name: to_plain(getattr(base, f.name))
                            for f in dataclasses.fields(base) if f.init and f.name not in value},
                         **value}
        values[key] = _coerce(key, value, hints[key], where)
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where}: {exc}") from exc


def load_config(cls: type[T], path: str | os.PathLike | None = None,
                overrides: Mapping[str, Any] | None = None) -> T:
    """``cls`` from the YAML file at ``path`` (if any) with ``overrides`` (None values skipped)."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        loaded = read_yaml(path, "config file")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping of options, got "
                              f"{type(loaded).__name__}")
        data.update(loaded)
        where = str(path)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    config = from_mapping(cls, data, where)
    check_finite(config, where)
    return config


def check_finite(config: Any, where: str = "config") -> None:
    """Refuses nan and infinite numbers anywhere in ``config`` (its fields, nested dataclasses,
    option mappings and lists): no option means anything with them.

    Raises:
        ConfigError: one line naming the dotted option and the value.

    Example:
        >>> check_finite({"alpha": float("nan")}, "teacher")
        Traceback (most recent call last):
        ...
        gtn_nas.errors.ConfigError: teacher: alpha must be a finite number, got nan
    """
    for name, value in _numbers(config):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be a finite number, got {value}")


def _numbers(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    elif isinstance(obj, Mapping):
        items = list(obj.items())
    elif isinstance(obj, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(obj)]
    elif isinstance(obj, float):
        return [(prefix.rstrip("."), obj)]
    else:
        return []
    found: list[tuple[str, float]] = []
    for key, value in items:
        found += _numbers(value, f"{prefix}{key}.")
    return found


def to_plain(obj: Any) -> Any:
    """A dataclass (or nested values) as plain dicts/lists for YAML and JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
