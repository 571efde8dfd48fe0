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

import torch
import yaml
from torch import nn

from gtn_nas.errors import ConfigError, SampleError
from gtn_nas.fileio import atomic_torch_save, atomic_write_text
from gtn_nas.space import Sample, SupernetSpace

CHECKPOINT_FORMAT = "gtn-nas-student/1"


def read_yaml(path: str | os.PathLike, what: str = "file") -> Any:
    """``yaml.safe_load`` of ``path`` (JSON is YAML too) with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML/JSON: {problem}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason})") from exc


def load_sample_file(path: str | os.PathLike, space: SupernetSpace) -> Sample:
    """Reads a sample file and validates it against ``space``.

    The file holds either the label -> value mapping itself or a mapping with a ``sample`` key
    (as written by :func:`save_sample_file`; its ``space`` key, if any, must name ``space``).

    Raises:
        ConfigError: missing or malformed file, or a file for another space.
        SampleError: labels or values outside the space (naming the file).
    """
    data = read_yaml(path, "sample file")
    if isinstance(data, Mapping) and "sample" in data:
        declared = data.get("space")
        if declared is not None and declared != space.spec:
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


def load_student(path: str | os.PathLike) -> LoadedStudent:
    """Loads a checkpoint written by :func:`save_student` (``weights_only=True``).

    Raises:
        ConfigError: missing, corrupt or foreign file.
    """
    from gtn_nas.plugins import build_space  # plugins import space; avoid a cycle at import

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"student checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable student checkpoint "
                          f"({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not a gtn-nas student checkpoint (format "
                          f"{CHECKPOINT_FORMAT} expected)")
    space = build_space(payload["space"], **payload["options"])
    model = space.freeze(payload["sample"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not match the student's architecture: "
                          f"{str(exc).splitlines()[0]}") from exc
    extra = {k: v for k, v in payload.items()
             if k not in ("format", "space", "options", "sample", "state_dict")}
    return LoadedStudent(model, space.validate(payload["sample"]), space, extra)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so options serialise as plain YAML."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
