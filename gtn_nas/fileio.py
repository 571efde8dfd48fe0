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

import io
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from gtn_nas.errors import ConfigError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (creating its folder); returns the path.

    Raises:
        ConfigError: the destination cannot be written (named, with the reason).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
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
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, fmt: str, what: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a gtn-nas file whose ``format`` must be ``fmt``.

    Raises:
        ConfigError: the file is missing, unreadable, or not a ``what``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: corrupt or unreadable {what} ({type(exc).__name__})") \
            from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ConfigError(f"{path}: not a gtn-nas {what} (format {fmt} expected)")
    return payload
