"""Typed, validated configurations: dataclasses filled from YAML files and command-line values.

:func:`read_yaml` reads any YAML/JSON file safely with one-line errors.
:func:`from_mapping` builds a dataclass from a mapping, refusing unknown keys and values of the
wrong type with one line naming the key, the value and what is expected. :func:`load_config`
reads a YAML file (``yaml.safe_load``) and applies overrides on top (nested sections merged
key by key; :data:`NULL` sets a key to null). A dataclass may declare
``upgrade_keys(data, where)``, a static method rewriting the keys older files use; both apply
it first. :class:`DataConfig` is the ``data`` section every run configuration shares.

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
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

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


def option(default: Any = dataclasses.MISSING, *, help: str,  # noqa: A002 - argparse's word
           factory: Callable[[], Any] | None = None, **flag: Any) -> Any:
    """A dataclass field with its help text, from which the command line derives its flag
    (:mod:`gtn_nas.cli.flags`; ``{default}`` in ``help`` is the default in use); ``flag``
    holds the rest of what the flag needs (``flag="--data"``, ``repeat=True``, ...).

    Example:
        >>> @dataclasses.dataclass
        ... class Opt:
        ...     epochs: int = option(3, help="training epochs (default: {default})")
        >>> dataclasses.fields(Opt)[0].metadata["help"]
        'training epochs (default: {default})'
    """
    metadata = {"help": help, **flag}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Builds dataclass ``cls`` from ``data``; unknown keys and wrongly typed values are errors."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of options, got {type(data).__name__}")
    data = _upgraded(cls, data, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {}
    for key, value in data.items():
        if key not in fields:
            import difflib  # only for the error: the command line imports this module

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


class _Null:
    """The type of :data:`NULL`."""

    def __repr__(self) -> str:
        return "NULL"


NULL: Any = _Null()
"""An override value that sets its key to null (an override of None means "not given")."""


def _upgraded(cls: type, data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    upgrade = getattr(cls, "upgrade_keys", None)
    return upgrade(data, where) if callable(upgrade) else data


def _section_type(annotation: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), else None."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (
        typing.Union, types.UnionType) else (annotation,)
    found = [a for a in options if dataclasses.is_dataclass(a)]
    return found[0] if len(found) == 1 else None


def merge_overrides(cls: type, data: Mapping[str, Any], overrides: Mapping[str, Any],
                    where: str = "config") -> dict[str, Any]:
    """``data`` (the mapping of a ``cls``) with ``overrides`` on top: a mapping given for a
    nested dataclass section (``train``, ``data``) is merged into that section key by key,
    anything else replaces the value; None values are skipped (not given) and :data:`NULL`
    sets null.

    Example:
        >>> @dataclasses.dataclass
        ... class Run:
        ...     data: DataConfig = dataclasses.field(default_factory=DataConfig)
        ...     seed: int | None = 0
        >>> merge_overrides(Run, {"data": {"name": "digits", "limit": 300}},
        ...                 {"data": {"image_size": 16, "root": None}, "seed": NULL})
        {'data': {'name': 'digits', 'limit': 300, 'image_size': 16}, 'seed': None}
    """
    merged = dict(_upgraded(cls, data, where))
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    for key, value in _upgraded(cls, overrides, where).items():
        if value is None:
            continue
        section = _section_type(hints.get(key))
        if section is not None and isinstance(value, Mapping):
            base = merged.get(key)
            if base is None or dataclasses.is_dataclass(base):
                base = to_plain(base) if base is not None else {}
            if not isinstance(base, Mapping):
                raise ConfigError(f"{where}: {key} must be a mapping, got {base!r}")
            merged[key] = merge_overrides(section, base, value, f"{where}: {key}")
        else:
            merged[key] = None if value is NULL else value
    return merged


def load_config(cls: type[T], path: str | os.PathLike | None = None,
                overrides: Mapping[str, Any] | None = None) -> T:
    """``cls`` from the YAML file at ``path`` (if any) with ``overrides`` on top
    (:func:`merge_overrides`: None values skipped, nested sections merged)."""
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
    data = merge_overrides(cls, data, overrides or {}, where)
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


# ----------------------------------------------------------------------------- the data
@dataclass
class DataConfig:
    """The data a run trains on: the ``data`` section of every run configuration (``gtn-nas
    run``'s, ``train-teacher``'s, ``distill``'s), its flags ``--data``, ``--data-root``,
    ``--data-option``, ``--download``, ``--image-size``, ``--limit``.

    ``name`` is a registered dataset (``gtn-nas list datasets``), ``root`` its folder,
    ``options`` its own extras (e.g. ``synthetic``'s ``num_classes``, or ``val_fraction``),
    ``download`` lets torchvision fetch a missing one, ``image_size`` resizes its images and
    ``limit`` keeps that many training images (seeded, stratified). In YAML, ``data: NAME`` is
    short for ``data: {name: NAME}``.

    Example:
        >>> splits = DataConfig("digits", limit=300).load(seed=0)
        >>> len(splits.train), splits.image_size
        (300, 8)
    """

    name: str = option("digits", flag="--data", help=(
        "dataset (default: {default}; also fashion-mnist, cifar100, imagefolder, synthetic: "
        "`gtn-nas list datasets`)"))
    root: str | None = option(None, flag="--data-root", help=(
        "dataset folder (default: Debian's package for fashion-mnist, else "
        "$XDG_CACHE_HOME/gtn-nas/data)"))
    options: dict[str, Any] = option(factory=dict, flag="--data-option", help=(
        "dataset option (e.g. num_classes=5 for synthetic, val_fraction=0.2); repeatable"))
    download: bool = option(False, help=(
        "fetch a missing fashion-mnist or cifar100 with torchvision into --data-root or "
        "$XDG_CACHE_HOME/gtn-nas/data (needs internet)"))
    image_size: int | None = option(None, help="resize images to this size (default: their own)")
    limit: int | None = option(None, help="use at most this many training images (default: all)")

    def load(self, seed: int = 0, *, augment: bool = True):
        """The seeded train/val/test splits (:func:`gtn_nas.data.load_dataset`; ``augment``:
        random crops and flips on the train split).

        Raises:
            ConfigError, DataError: an unknown dataset or option, missing data.
        """
        from gtn_nas.data import load_dataset

        return load_dataset(self.name, root=self.root, image_size=self.image_size, seed=seed,
                            limit=self.limit, augment=augment, download=self.download,
                            **self.options)


_FLAT_DATA_KEYS = {"data_root": "root", "data_options": "options", "download": "download",
                   "image_size": "image_size", "limit": "limit"}
"""Flat key of a run configuration before the ``data`` section -> its key in the section."""


def upgrade_data_keys(data: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """A run configuration's mapping with its data keys in the ``data`` section (each run
    configuration's ``upgrade_keys``): ``data: NAME`` becomes ``data: {name: NAME}``, and the
    flat keys of files written before the section existed (``data_root``, ``data_options``,
    ``download``, ``image_size``, ``limit`` beside ``data``) move into it.

    Raises:
        ConfigError: a flat key and its ``data.*`` key both given.

    Example:
        >>> upgrade_data_keys({"data": "digits", "limit": 300, "seed": 0})
        {'data': {'name': 'digits', 'limit': 300}, 'seed': 0}
    """
    data = dict(data)
    section = data.get("data")
    if isinstance(section, str):
        section = {"name": section}
    moved = {new: (old, data.pop(old)) for old, new in _FLAT_DATA_KEYS.items() if old in data}
    if moved:
        section = {} if section is None else section
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: data: expected a dataset name or a mapping, got "
                              f"{section!r}")
        for new, (old, _) in moved.items():
            if new in section:
                raise ConfigError(f"{where}: {old} and data.{new} are the same option; "
                                  f"give data.{new} only")
        section = {**section, **{new: value for new, (_, value) in moved.items()}}
    if section is not None:
        data["data"] = section
    return data


def flat_data_keys(value: Any) -> Any:
    """``value`` (plain, as :func:`to_plain` returns) with every ``data`` section written as
    the flat keys that came before it (``data: NAME``, ``data_root``, ``data_options``,
    ``download``, ``image_size``, ``limit``): run identities are digested in that shape, so a
    run or checkpoint started before the section existed resumes.

    Example:
        >>> flat_data_keys({"data": {"name": "digits", "root": None, "options": {},
        ...                          "download": False, "image_size": None, "limit": 300}})
        {'data': 'digits', 'data_root': None, 'data_options': {}, 'download': False, \
'image_size': None, 'limit': 300}
    """
    if isinstance(value, list):
        return [flat_data_keys(item) for item in value]
    if not isinstance(value, Mapping):
        return value
    out = {key: flat_data_keys(item) for key, item in value.items()}
    section = out.get("data")
    names = [f.name for f in dataclasses.fields(DataConfig)]
    if isinstance(section, Mapping) and sorted(section) == sorted(names):
        flat = {old: section[new] for old, new in _FLAT_DATA_KEYS.items()}
        out = {**{k: v for k, v in out.items() if k != "data"}, "data": section["name"], **flat}
    return out
