"""Persisting students: sample files (YAML/JSON) and student checkpoints (sample + weights).

A student is never pickled as a module. A checkpoint holds the space's name and options, the
sample and the ``state_dict``; loading rebuilds the space, freezes the sample and loads the
weights with ``torch.load(..., weights_only=True)``.

Example:
    >>> save_student("runs/x/student.pt", student, space, sample)   # doctest: +SKIP
    >>> loaded = load_student("runs/x/student.pt")                   # doctest: +SKIP
    >>> loaded.model(x)                                              # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml
from torch import nn

from gtn_nas.config import read_yaml
from gtn_nas.errors import ConfigError, SampleError
from gtn_nas.fileio import atomic_torch_save, atomic_write_text, load_checkpoint
from gtn_nas.space.plugins import resolve_spec
from gtn_nas.space.supernet import Sample, SupernetSpace

CHECKPOINT_FORMAT = "gtn-nas-student/1"


def space_spec_of_file(data: Any, path: str | os.PathLike, trusted: str | None) -> str | None:
    """The space a sample file (or any data file) names, if it may be built.

    A data file never runs code: when it names a plugin *file* (``x.py:factory``), that plugin
    is built only if the user named the same plugin on the command line (``trusted``, the value
    of ``--space``). Registered names (built-ins and installed entry points) are returned as
    they are.

    Args:
        data: The file's parsed content (a mapping with an optional ``space`` key).
        path: The file, for the message.
        trusted: The ``--space`` the user gave, or None.

    Returns:
        The space spec the file names (None when it names none).

    Raises:
        ConfigError: the file names a plugin file the user did not name.
    """
    from gtn_nas.space.plugins import is_file_spec

    declared = data.get("space") if isinstance(data, Mapping) else None
    if declared is None:
        return None
    if not isinstance(declared, str):
        raise ConfigError(f"{path}: 'space' must be a space name, got {declared!r}")
    if is_file_spec(declared) and (trusted is None or resolve_spec(trusted) !=
                                   resolve_spec(declared)):
        raise ConfigError(f"{path} names the plugin file {declared}; plugin code runs only "
                          f"when you name it: pass --space {declared} to trust it")
    return declared


def load_sample_file(path: str | os.PathLike, space: SupernetSpace) -> Sample:
    """Reads a sample file and validates it against ``space``.

    The file holds either the label -> value mapping itself or a mapping with a ``sample`` key
    (as written by :func:`save_sample_file`; its ``space`` key, if any, must name ``space``).

    Raises:
        ConfigError: missing or malformed file, or a file for another space.
        SampleError: labels or values outside the space (naming the file).
    """
    data = read_yaml(path, "sample file")
    if data is None:
        raise SampleError(f"{path}: the file is empty (expected a mapping label -> value)")
    if isinstance(data, Mapping) and "sample" in data:
        declared = data.get("space")
        if declared is not None and resolve_spec(str(declared)) != space.spec:
            raise ConfigError(f"{path}: sample of space '{declared}', not '{space.spec}' "
                              f"(pass --space {declared})")
        data = data["sample"]
    if not isinstance(data, Mapping):
        raise SampleError(f"{path}: expected a mapping label -> value, got "
                          f"{type(data).__name__}")
    return space.validate(data, where=str(path))


def save_sample_file(path: str | os.PathLike, sample: Mapping[str, Any], space: SupernetSpace,
                     **extra: Any) -> Path:
    """Writes ``{space, options, sample, **extra}`` as YAML, atomically."""
    payload = {"space": space.spec, "options": _plain(space.options), **extra,
               "sample": dict(space.validate(sample))}
    return atomic_write_text(path, yaml.safe_dump(payload, sort_keys=False))


def save_student(path: str | os.PathLike, student: nn.Module, space: SupernetSpace,
                 sample: Mapping[str, Any], **extra: Any) -> Path:
    """Saves ``student`` as space + sample + weights (atomically)."""
    payload = {"format": CHECKPOINT_FORMAT, "space": space.spec,
               "options": _plain(space.options), "sample": dict(space.validate(sample)),
               "state_dict": student.state_dict(), **extra}
    return atomic_torch_save(payload, path)


@dataclass
class LoadedStudent:
    """A student rebuilt from a checkpoint."""

    model: nn.Module
    sample: Sample
    space: SupernetSpace
    extra: dict[str, Any]


def load_student(path: str | os.PathLike, space: SupernetSpace | None = None) -> LoadedStudent:
    """Loads a checkpoint written by :func:`save_student` (``weights_only=True``).

    Args:
        path: The checkpoint.
        space: The space to rebuild the student in. Without it, the checkpoint's space is built
            by name; a checkpoint naming a *file* plugin is refused (loading a checkpoint must
            not run code the user did not name): build that space yourself and pass it.

    Raises:
        ConfigError: missing, corrupt or foreign file, or an untrusted plugin file.
    """
    from gtn_nas.space.plugins import build_space, is_file_spec

    path = Path(path)
    payload = load_checkpoint(path, CHECKPOINT_FORMAT, "student checkpoint")
    spec, options = payload.get("space"), payload.get("options")
    if not isinstance(spec, str) or not isinstance(options, Mapping) or not isinstance(
            payload.get("sample"), Mapping) or not isinstance(payload.get("state_dict"), Mapping):
        raise ConfigError(f"{path}: damaged student checkpoint (space, options, sample and "
                          f"state_dict are required)")
    if space is None:
        if is_file_spec(spec):
            raise ConfigError(f"{path} was made with the plugin file {spec}; it is not run "
                              f"implicitly: build that space and pass it (CLI: --space {spec})")
        space = build_space(spec, **options)
    model = space.freeze(space.validate(payload["sample"], where=str(path)))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not match the student's architecture: "
                          f"{str(exc).splitlines()[0]}") from exc
    extra = {k: v for k, v in payload.items()
             if k not in ("format", "space", "options", "sample", "state_dict")}
    return LoadedStudent(model, space.validate(payload["sample"], where=str(path)), space, extra)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so options serialise as plain YAML."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
