"""One writer per output folder: an exclusive ``fcntl.flock`` on ``<folder>/.gtn-nas.lock``.

The lock file also says who holds it (pid, host, start time, command), so a second writer is
refused in one line naming the holder. The kernel releases a ``flock`` when its process dies
(``kill -9`` included), so a lock left by a dead process is simply taken over; the new holder
says so in one line. Locks are re-entrant within a process (a distill job's lock, then the
training loop's on the same folder). ``flock`` works across processes on one machine and on
file systems that support it (local disks; NFSv4 emulates it with POSIX locks); where it is
not shared between hosts, two hosts are not kept apart.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with folder_lock(folder, "example"):
    ...     pass
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from gtn_nas.errors import ConfigError

_log = logging.getLogger(__name__)

LOCK_NAME = ".gtn-nas.lock"

_held: dict[Path, tuple[int, int]] = {}  # folder -> (fd, depth), this process's locks


class FolderBusy(ConfigError):
    """Another live process writes this folder."""


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {when} "
            f"({holder.get('what', '?')})")


def try_lock(folder: str | os.PathLike, what: str) -> bool:
    """Takes the folder's lock if it is free (True) or already this process's; False when
    another live process holds it."""
    folder = Path(folder).resolve()
    if folder in _held:
        fd, depth = _held[folder]
        _held[folder] = (fd, depth + 1)
        return True
    path = folder / LOCK_NAME
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a run directory; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:  # a path under a file, a read-only folder
        raise ConfigError(f"cannot create the run directory {folder}: "
                          f"{exc.strerror or exc}; choose another --out") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    previous = _holder(path)
    if previous.get("pid") and previous.get("host") == socket.gethostname() \
            and not previous.get("released"):
        _log.warning("%s: took over the lock of %s, which is no longer running", folder,
                     _describe(previous))
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "what": what, "argv": sys.argv[:6]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _held[folder] = (fd, 1)
    return True


def release(folder: str | os.PathLike) -> None:
    """Releases one level of this process's lock on ``folder``."""
    folder = Path(folder).resolve()
    fd, depth = _held[folder]
    if depth > 1:
        _held[folder] = (fd, depth - 1)
        return
    del _held[folder]
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        holder["released"] = time.time()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
    except (OSError, ValueError):
        pass
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Holds ``folder``'s lock for the block.

    Raises:
        FolderBusy: another live process holds it (one line naming the holder).
    """
    if not try_lock(folder, what):
        holder = _describe(_holder(Path(folder) / LOCK_NAME))
        raise FolderBusy(f"{folder} is being written by {holder}; wait for it to finish or "
                         f"choose another --out")
    try:
        yield
    finally:
        release(folder)
