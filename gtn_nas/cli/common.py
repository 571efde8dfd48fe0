"""What every ``gtn-nas`` command shares: printing, space options, ``KEY=VALUE`` parsing and
progress bars. Commands live one per module beside this one; each has ``register(commands)``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence

import yaml

from gtn_nas.errors import ConfigError

log = logging.getLogger("gtn_nas")


def out(text: str) -> None:
    """Prints one line (or block) to stdout."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def prepare_output_dir(path: str) -> None:
    """Creates ``path`` (a directory) now, so a bad ``--out`` fails before the work, not after.

    Raises:
        ConfigError: ``path`` is a file, lies under a file, or cannot be created or written.
    """
    import os
    from pathlib import Path

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not an output directory; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output directory {folder}: "
                          f"{exc.strerror or exc}; choose another --out") from exc
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"cannot write to the output directory {folder}; choose another --out")


def space_options(args: argparse.Namespace) -> dict[str, Any]:
    """The common space options given on the command line (None values dropped)."""
    options = {"num_classes": args.num_classes, "in_channels": args.in_channels,
               "input_size": args.input_size, "width_mult": args.width_mult}
    return {k: v for k, v in options.items() if v is not None}


def add_space_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("search space")
    group.add_argument("--space",
                       help="registered name (see `gtn-nas spaces`) or path/to/file.py:factory "
                            "(default: resnet_supernet, or the registered one a --sample file "
                            "names; a plugin file runs only when named here)")
    group.add_argument("--width-mult", type=float, help="channel width multiplier")
    group.add_argument("--num-classes", type=int, help="classifier outputs")
    group.add_argument("--input-size", type=int, help="input resolution (square)")
    group.add_argument("--in-channels", type=int, help="input image channels")


def build_space_from_args(args: argparse.Namespace):
    from gtn_nas.space.plugins import DEFAULT_SPACE, build_space

    return build_space(args.space or DEFAULT_SPACE, **space_options(args))


def key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["a=1", "b=none"]`` -> ``{"a": 1, "b": "none"}`` (values parsed as YAML scalars).

    Raises:
        ConfigError: an item without ``=``, or a value that is not valid YAML (one line).
    """
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag}: expected KEY=VALUE, got '{item}'")
        try:
            parsed[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{flag} {key}: value '{value}' is not valid YAML ({problem})") \
                from exc
    return parsed


def progress_bar(description: str):
    """A tqdm bar driven by ``(done, total)`` or ``(phase, done, total)`` callbacks; silent
    when stderr is not a terminal."""
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    def update(*args) -> None:
        phase, done, total = args if len(args) == 3 else (description, *args)
        bar = bars.get(phase)
        if bar is None:
            bar = bars[phase] = tqdm(total=total, desc=phase, leave=False, disable=None)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def space_for_profile(args: argparse.Namespace, profile):
    """The space of ``--space`` at the profile's input shape (command-line options win)."""
    from gtn_nas.space.plugins import DEFAULT_SPACE, build_space

    channels, size, _ = profile.input.shape
    options = {"in_channels": channels, "input_size": size, **space_options(args)}
    return build_space(args.space or DEFAULT_SPACE, **options)


def val_accuracies(record: dict) -> str:
    """``acc=0.912  branch1_acc=0.40 ...`` from an epoch record's ``val/*acc`` entries."""
    return "  ".join(f"{k[4:]}={v:.3f}" for k, v in record.items()
                     if k.startswith("val/") and k.endswith("acc") and isinstance(v, float))
