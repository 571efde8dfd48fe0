"""Command-line flags derived from the configuration dataclasses: a field is declared once, and
its flag, type, choices, help and default come from that declaration.

:func:`add_config_flags` adds a flag per field of a configuration (nested sections such as
``train`` and ``data`` included, their fields under dotted keys ``train.epochs``): the flag is
``--field-name`` unless the field's ``metadata["flag"]`` (or the command's ``names``) renames it;
its help is ``metadata["help"]`` (or the command's ``helps``) with ``{default}`` replaced by
the default of the configuration the command starts from. Types:

- ``int``, ``float``, ``str``: one value; a ``Literal``'s values are its choices (shown in
  the help; another value is refused in one line as a config file's is);
- ``bool``: ``--name`` sets it (default False), ``--no-name`` clears it (default True), both
  for an optional one or with ``metadata["negatable"]``;
- ``tuple``: several values (``--students a b``), ``metadata["repeat"]`` one per flag (``--hw a
  --hw b``), ``metadata["comma"]`` comma-separated (``--seeds 0,1,2``);
- ``dict``: ``KEY=VALUE`` values (YAML scalars), repeatable;
- ``metadata["null"]``: a word that sets null (``--labelled all``).

Every flag's argparse default is None, meaning "not given": :func:`given` maps the parsed
arguments back to the configuration's keys, leaving out what was not given, so a ``--config``
file's values stand unless a flag overrides them. Nothing here imports torch.

Example:
    >>> import argparse
    >>> from gtn_nas.config import DataConfig
    >>> parser = argparse.ArgumentParser()
    >>> flags = add_config_flags(parser, DataConfig(), prefix="data")
    >>> [flag.option for flag in flags]
    ['--data', '--data-root', '--data-option', '--download', '--image-size', '--limit']
    >>> given(parser.parse_args(["--data", "synthetic", "--data-option", "num_classes=4"]), flags)
    {'data': {'name': 'synthetic', 'options': {'num_classes': 4}}}
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping

from gtn_nas.cli.common import key_values
from gtn_nas.config import NULL
from gtn_nas.errors import ConfigError


@dataclass(frozen=True)
class Flag:
    """One derived flag: the configuration key it sets (dotted), its option and dest."""

    key: str
    option: str
    dest: str
    options: bool = False
    """A ``KEY=VALUE`` flag (a dict field)."""
    convert: Callable[[str], Any] | None = None
    """Turns the flag's text into the value (comma lists, a null word), raising ConfigError:
    bad input fails when the command runs, in one line, as a bad config value does."""


def add_config_flags(parser: argparse.ArgumentParser | Any, defaults: Any, *,
                     prefix: str = "", exclude: Collection[str] = (),
                     only: Collection[str] | None = None, names: Mapping[str, str] | None = None,
                     helps: Mapping[str, str] | None = None) -> list[Flag]:
    """Adds a flag per field of the dataclass instance ``defaults`` to ``parser`` (a parser or
    an argument group); returns them for :func:`given`.

    Args:
        defaults: The configuration the command starts from: its values are the defaults the
            help texts show.
        prefix: The dotted key of ``defaults`` in the command's configuration.
        exclude: Dotted keys that are no flags (a section's key leaves out all of it).
        only: If given, only these dotted keys (and everything in the sections named) are.
        names: Dotted key -> option, where the command names a flag differently.
        helps: Dotted key -> help text, where the command says more than the field.

    Raises:
        TypeError: a field of a type no flag can take, or without a help text.
    """
    flags: list[Flag] = []
    hints = _hints(type(defaults))
    for field in dataclasses.fields(defaults):
        key = f"{prefix}.{field.name}" if prefix else field.name
        value = getattr(defaults, field.name)
        if _excluded(key, exclude) or (only is not None and not _wanted(key, only)):
            continue
        if dataclasses.is_dataclass(value):
            flags += add_config_flags(parser, value, prefix=key, exclude=exclude, only=only,
                                      names=names, helps=helps)
            continue
        if only is not None and not _excluded(key, only):  # a section named, not this field
            continue
        flags.append(_add(parser, key, field, hints[field.name], value, names or {},
                          helps or {}))
    seen: dict[str, str] = {}
    for flag in flags:
        if seen.setdefault(flag.dest, flag.key) != flag.key:
            raise TypeError(f"{flag.option} names both {seen[flag.dest]} and {flag.key}")
    return flags


def given(args: argparse.Namespace, flags: list[Flag], *, dotted: bool = False
          ) -> dict[str, Any]:
    """The values of the ``flags`` given in ``args``, by configuration key: nested mappings
    (``{"train": {"epochs": 3}}``), or dotted keys (``{"train.epochs": 3}``).

    Raises:
        ConfigError: a ``KEY=VALUE`` value that is not one.
    """
    found: dict[str, Any] = {}
    for flag in flags:
        value = getattr(args, flag.dest, None)
        if value is None:
            continue
        if flag.options:
            value = key_values(value, flag.option)
        elif flag.convert is not None:
            value = flag.convert(value)
        if dotted:
            found[flag.key] = value
            continue
        node = found
        *parents, last = flag.key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return found


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """The evaluated annotations of ``cls`` (once per class: several commands share one)."""
    return typing.get_type_hints(cls)


def _excluded(key: str, keys: Collection[str]) -> bool:
    """``key`` or a section above it is in ``keys``."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in keys for i in range(1, len(parts) + 1))


def _wanted(key: str, only: Collection[str]) -> bool:
    """``key`` is in ``only``, lies in a section there, or holds a field there."""
    return _excluded(key, only) or any(name.startswith(key + ".") for name in only)


def _add(parser, key: str, field: dataclasses.Field, annotation: Any, default: Any,
         names: Mapping[str, str], helps: Mapping[str, str]) -> Flag:
    meta = field.metadata
    option = names.get(key) or meta.get("flag") or "--" + field.name.replace("_", "-")
    text = helps.get(key, meta.get("help"))
    if not text:
        raise TypeError(f"configuration field {key} has no help text (metadata['help'])")
    text = text.replace("{default}", _show(default)).replace("%", "%%")
    kind, nullable = _unwrap(annotation)
    origin = typing.get_origin(kind)
    kwargs: dict[str, Any] = {"help": text, "default": None}
    is_options = kind is dict or origin is dict
    convert = None
    if kind is bool:
        if nullable or meta.get("negatable"):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif default is True:
            option = names.get(key) or meta.get("flag") or "--no-" + field.name.replace("_", "-")
            kwargs.update(action="store_const", const=False)
        else:
            kwargs["action"] = "store_true"
    elif is_options:
        kwargs.update(action="append", metavar="KEY=VALUE")
    elif origin in (tuple, list):
        item = (typing.get_args(kind) or (str,))[0]
        if meta.get("comma"):
            convert = _comma_list(item, option)
        elif meta.get("repeat"):
            kwargs.update(action="append", type=item)
        else:
            kwargs.update(nargs="+", type=item)
    elif origin is typing.Literal:  # shown as choices, checked with the config (one line,
        values = typing.get_args(kind)  # the same whether a flag or a file gave the value)
        kwargs.update(type=type(values[0]), metavar="{" + ",".join(map(str, values)) + "}")
    elif kind in (int, float, str):
        kwargs["type"] = kind
    else:
        raise TypeError(f"configuration field {key}: no flag for type {annotation!r}")
    if meta.get("null"):
        convert = _or_null(kwargs.pop("type", str), meta["null"], option)
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    dest = option.lstrip("-").replace("-", "_")
    parser.add_argument(option, dest=dest, **kwargs)
    return Flag(key, option, dest, options=is_options, convert=convert)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, ``(X, False)`` for ``X``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _show(value: Any) -> str:
    """A default as a help text says it."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(_show, value))
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def _comma_list(item: type, option: str) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            values = [item(part) for part in text.split(",") if part.strip() != ""]
        except ValueError:
            what = {int: "integers", float: "numbers"}.get(item, "values")
            raise ConfigError(f"{option} must be comma-separated {what} (e.g. 0,1,2), got "
                              f"'{text}'") from None
        if not values:
            raise ConfigError(f"{option} must name at least one value, got '{text}'")
        return values
    return parse


def _or_null(base: Callable[[str], Any], word: str, option: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if text == word:
            return NULL
        try:
            return base(text)
        except ValueError:
            raise ConfigError(f"{option} must be a number or {word}, got '{text}'") from None
    return parse
