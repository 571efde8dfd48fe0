"""Which students a distillation run trains: preset names, sample files and search output
directories (their ``students/*.yaml``) resolved into :class:`StudentSpec` s."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from gtn_nas.config import read_yaml
from gtn_nas.errors import ConfigError
from gtn_nas.space.supernet import Sample, SupernetSpace


@dataclass
class StudentSpec:
    """One student to distil: its name, space, sample and what the search said about it."""

    name: str
    space: SupernetSpace
    sample: Sample
    source: str
    info: dict[str, Any] = field(default_factory=dict)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "student"


def resolve_students(items: tuple[str, ...], *, num_classes: int, in_channels: int,
                     input_size: int, space_flag: str | None = None,
                     width_mult: float = 0.25) -> list[StudentSpec]:
    """Turns ``--students`` items into :class:`StudentSpec` s for data of the given shape.

    Items are a preset name of ``space_flag`` (default ``resnet_supernet``) at ``width_mult``,
    a sample file (its space and options; a plugin file only when ``space_flag`` names it), or
    a search output directory (``students/*.yaml``, one student per tier).

    Raises:
        ConfigError: a missing or empty students directory, a student of another class count,
            channel count or input size than the data, a duplicate name, an untrusted plugin.
    """
    from gtn_nas.space.plugins import DEFAULT_SPACE, build_space
    from gtn_nas.space.students import load_sample_file, space_spec_of_file

    data_options = {"num_classes": num_classes, "in_channels": in_channels,
                    "input_size": input_size}
    specs: list[StudentSpec] = []
    default_space = None
    for item in items:
        path = Path(item)
        if path.is_dir():
            folder = path / "students" if (path / "students").is_dir() else path
            files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
            if not files:
                raise ConfigError(f"students directory {path} holds no students/*.yaml "
                                  f"(expected a search output directory)")
            entries = [(f, f.stem) for f in files]
        elif path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
            entries = [(path, path.stem)]
        else:
            if default_space is None:
                default_space = build_space(space_flag or DEFAULT_SPACE,
                                            width_mult=width_mult, **data_options)
            sample = default_space.preset(item)
            specs.append(StudentSpec(_safe_name(item), default_space, sample,
                                     f"preset {item}"))
            continue
        for file, name in entries:
            data = read_yaml(file, "sample file")
            declared = space_spec_of_file(data, file, trusted=space_flag)
            options = dict(data.get("options") or {}) if isinstance(data, Mapping) else {}
            for key, wanted in data_options.items():
                if key in options and options[key] != wanted:
                    raise ConfigError(f"{file}: a student for {key} {options[key]}, but the "
                                      f"data has {wanted}")
            options.update(data_options)
            if "width_mult" not in options:
                options["width_mult"] = width_mult
            space = build_space(space_flag or declared or DEFAULT_SPACE, **options)
            sample = load_sample_file(file, space)
            info = {k: data[k] for k in ("tier", "profile", "score", "latency_ms",
                                         "latency_source", "measured")
                    if isinstance(data, Mapping) and k in data}
            specs.append(StudentSpec(_safe_name(name), space, sample, str(file), info))
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"two students are named {', '.join(duplicates)}; give each a "
                          f"distinct file name")
    return specs
