"""Where hardware profiles and their latency tables live on disk.

The bundled profiles are package data (``gtn_nas/hw_profiles/*.yaml``), found through
:mod:`importlib.resources`, so they load the same from a checkout, an editable install or an
installed wheel. A latency table is machine data, never package data: the table of a bundled
profile lives in the user's cache, ``$XDG_CACHE_HOME/gtn-nas/latency/`` (default
``~/.cache/gtn-nas/latency/``), where ``gtn-nas profile`` writes it; a table shipped beside a
bundled profile in the package is read from there until this machine has its own. The table of
a profile given as a file lives beside that file, relative to its folder.

Example:
    >>> (bundled_dir() / "jetson.yaml").is_file()
    True
    >>> latency_cache_dir().parts[-2:]
    ('gtn-nas', 'latency')
"""

from __future__ import annotations

import atexit
import importlib.resources
import os
import shutil
import tempfile
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path

PACKAGE = "gtn_nas"
FOLDER = "hw_profiles"


@cache
def bundled_dir() -> Path:
    """The folder of the bundled profiles, as a file system path.

    Installed packages (wheel or editable) keep their data as files; a package imported from a
    zip archive has its profiles copied once to a temporary folder that lives as long as the
    process.
    """
    folder = importlib.resources.files(PACKAGE).joinpath(FOLDER)
    if isinstance(folder, Path):
        return folder
    return _materialised(folder)


def _materialised(folder: Traversable) -> Path:
    target = Path(tempfile.mkdtemp(prefix="gtn-nas-profiles-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    if folder.is_dir():
        for item in folder.iterdir():
            if item.is_file():
                (target / item.name).write_bytes(item.read_bytes())
    return target


def is_bundled(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file in the bundled profiles' folder (package data).

    Example:
        >>> is_bundled(bundled_dir() / "host_cpu.yaml"), is_bundled("my_board.yaml")
        (True, False)
    """
    try:
        return Path(path).resolve().parent == bundled_dir().resolve()
    except OSError:
        return False


def user_cache_dir() -> Path:
    """gtn-nas's folder in the user's cache: ``$XDG_CACHE_HOME/gtn-nas`` when that variable is an
    absolute path (the XDG base-directory rule), else ``~/.cache/gtn-nas``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "gtn-nas"


def latency_cache_dir() -> Path:
    """Where the latency tables of bundled profiles are built and read on this machine."""
    return user_cache_dir() / "latency"


def latency_table_location(source: str | os.PathLike, table: str | os.PathLike, *,
                           writable: bool = False) -> Path:
    """The file of the relative latency table ``table`` named by the profile file ``source``.

    Args:
        source: The profile's file.
        table: Its ``latency_table`` (a relative path).
        writable: Where a new table is written: never into the package.

    Returns:
        Beside ``source`` for a profile file of the user's; for a bundled profile the table in
        the user cache, or (when reading and this machine has built none) the one shipped
        beside the profile in the package, if any.

    Example:
        >>> latency_table_location("boards/pi.yaml", "pi.latency.json").as_posix()
        'boards/pi.latency.json'
        >>> latency_table_location(bundled_dir() / "host_cpu.yaml", "host_cpu.latency.json") \\
        ...     == latency_cache_dir() / "host_cpu.latency.json"
        True
    """
    source, table = Path(source), Path(table)
    if not is_bundled(source):
        return source.parent / table
    cached = latency_cache_dir() / table
    shipped = source.parent / table
    if not writable and shipped.is_file() and not cached.is_file():
        return shipped
    return cached
