"""Atomic file writes: a temporary file in the destination folder, then a rename.

A reader (or a resumed run) never sees a half-written checkpoint, export or report.

Example:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> _ = atomic_write_bytes(target, b"done")
    >>> target.read_bytes()
    b'done'
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import re
import socket
import uuid
from pathlib import Path
from typing import Any

import torch

from gtn_nas.errors import ConfigError, ResourceError


_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(ResourceError):
    """A write failed for lack of space (``ENOSPC``) or quota (``EDQUOT``): the previous
    complete file is kept, no temporary is left, and ``--resume`` continues once space is
    back."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (creating its folder); returns the path.

    Raises:
        DiskFullError: the disk or the quota is full (one line; the previous file is kept).
        ConfigError: the destination cannot be written (named, with the reason).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{_HOST}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 lets the process umask set the permissions, as open() would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        if exc.errno in _FULL:
            kept = (f"the previous {path.name} is unchanged" if path.exists()
                    else f"nothing was written to {path.name}")
            raise DiskFullError(f"cannot write {path}: {exc.strerror or 'no space left'} "
                                f"({kept}); free space and run the same command again (with "
                                f"--resume for train-teacher and run): finished work is "
                                f"kept") from exc
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: Path) -> None:
    """Removes a temporary file if it is there; a folder that cannot hold it (a path under a
    regular file, a read-only folder) is no error: the caller reports the real one."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def safe_torch_load(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors.

    A file that holds pickled Python objects (code could run while they are unpickled) is
    refused, never retried unsafely: the message says what the file should hold instead.

    Raises:
        ConfigError: the file is missing, a directory, truncated or corrupt, or unsafe.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or "This file can still be loaded" in str(exc):
            raise ConfigError(f"{path}: {what} holds pickled Python objects, which gtn-nas "
                              f"never loads (they can run code); save plain tensors (a "
                              f"state_dict) instead") from exc
        raise ConfigError(f"{path}: corrupt or unreadable {what} (UnpicklingError)") from exc
    except Exception as exc:
        raise ConfigError(f"{path}: corrupt or unreadable {what} ({type(exc).__name__})") \
            from exc


_TEMPORARY = re.compile(r"^\..+\.(\d+)(?:-([0-9a-f]{6}))?\.[0-9a-f]{8}\.tmp$")
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
"""This host in the names of temporaries: a pid means something on its own host only (two
hosts writing one shared folder)."""


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Deletes temporary files of :func:`atomic_write_bytes` left under ``folder`` by a killed
    process (``.NAME.PID-HOST.XXXXXXXX.tmp`` of this host whose PID is not running); returns
    what was removed.

    Files of live processes (another run writing into the same folder) are left alone, and so
    are those of another host (their names carry the writer's host; a pid says nothing about
    a process there): that host's next run removes them. With ``name``, only the temporaries
    of that one file directly in ``folder`` (``gtn-nas profile`` writes one table into a
    folder that may hold anything).
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(f".{name}.*.tmp") if name else folder.rglob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        if match is None or not path.is_file() or match.group(2) not in (None, _HOST) \
                or _process_alive(int(match.group(1))):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_checkpoint(path: str | os.PathLike, fmt: str, what: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a gtn-nas file whose ``format`` must be ``fmt``.

    Raises:
        ConfigError: the file is missing, unreadable, unsafe, or not a ``what``.
    """
    path = Path(path)
    payload = safe_torch_load(path, what)
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ConfigError(f"{path}: not a gtn-nas {what} (format {fmt} expected)")
    return payload
