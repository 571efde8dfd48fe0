"""One writer per output folder: an exclusive ``fcntl.flock`` on ``<folder>/.gtn-nas.lock``
(or on another lock file of the folder: ``gtn-nas profile`` locks ``.<table>.lock`` beside the
table it writes, so tables of several devices can share a folder).

The lock file also says who holds it (pid, host, start time, command), so a second writer is
refused in one line naming the holder. The kernel releases a ``flock`` when its process dies
(``kill -9`` included), so a lock left by a dead process is simply taken over; the new holder
says so in one line. Locks are re-entrant within a process (a distill job's lock, then the
training loop's on the same folder).

Two hosts: ``flock`` is shared between hosts only on file systems that support it (NFSv4
emulates it with POSIX locks; some cluster file systems do not). So a holder also keeps a
*heartbeat*: a thread touches every lock file the process holds every :data:`HEARTBEAT_S`
seconds. A lock file naming a holder on another host that is not released and was touched less
than :data:`STALE_S` seconds ago refuses the writer even when ``flock`` succeeded; one touched
longer ago is taken over (its holder stopped beating: dead, or its host down), said in one line.
On one host ``flock`` alone decides (a killed holder's lock is taken over at once).

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
import threading
import time
from pathlib import Path
from typing import Iterator

from gtn_nas.errors import ConfigError, ResourceError

_log = logging.getLogger(__name__)

LOCK_NAME = ".gtn-nas.lock"
HEARTBEAT_S = 10.0  # how often a holder touches its lock files
STALE_S = 120.0  # a lock of another host untouched this long is taken over

_held: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, depth), this process's locks
_beating = threading.Event()  # the heartbeat thread runs


class FolderBusy(ResourceError):
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


def _heartbeat() -> None:
    """Touches every lock file this process holds, every :data:`HEARTBEAT_S` seconds."""
    while True:
        time.sleep(HEARTBEAT_S)
        for path in list(_held):
            try:
                os.utime(path)
            except OSError:  # a folder removed under a holder: nothing to keep alive
                pass


def _start_heartbeat() -> None:
    if not _beating.is_set():
        _beating.set()
        threading.Thread(target=_heartbeat, name="gtn-nas lock heartbeat", daemon=True).start()


def _live_elsewhere(path: Path, holder: dict) -> float | None:
    """Seconds since the heartbeat of ``holder``, a holder on another host whose lock is not
    released and not stale; None otherwise (free, ours to take over)."""
    if not holder.get("pid") or holder.get("released") \
            or holder.get("host") in (None, socket.gethostname()):
        return None
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return None
    return age if age < STALE_S else None


def try_lock(folder: str | os.PathLike, what: str, name: str = LOCK_NAME) -> bool:
    """Takes the folder's lock (the lock file ``name`` in it) if it is free (True) or already
    this process's; False when another live process holds it."""
    folder = Path(folder).resolve()
    path = folder / name
    if path in _held:
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
        return True
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
    except OSError as exc:  # ENOLCK: an NFS mount without a lock service
        os.close(fd)
        raise ConfigError(f"cannot lock {path}: {exc.strerror or exc} (this file system gives "
                          f"no file locks); choose an --out on a local or lock-serving "
                          f"file system") from exc
    previous = _holder(path)
    if _live_elsewhere(path, previous) is not None:  # flock not shared with that host
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        return False
    if previous.get("pid") and not previous.get("released"):
        if previous.get("host") == socket.gethostname():
            _log.warning("%s: took over the lock of %s, which is no longer running", folder,
                         _describe(previous))
        else:
            _log.warning("%s: took over the lock of %s, whose heartbeat stopped over %.0f s "
                         "ago", folder, _describe(previous), STALE_S)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "what": what, "argv": sys.argv[:6]}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)  # another host reads the record through the file system
    except OSError as exc:  # a full disk or quota: refused in one line, nothing held
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        from gtn_nas.fileio import DiskFullError, _FULL

        error = DiskFullError if exc.errno in _FULL else ConfigError
        raise error(f"cannot write the lock file {path}: {exc.strerror or exc}"
                    + ("; free space and run the same command again"
                       if exc.errno in _FULL else "")) from exc
    _held[path] = (fd, 1)
    _start_heartbeat()
    return True


def release(folder: str | os.PathLike, name: str = LOCK_NAME) -> None:
    """Releases one level of this process's lock on ``folder`` (its lock file ``name``)."""
    path = Path(folder).resolve() / name
    fd, depth = _held[path]
    if depth > 1:
        _held[path] = (fd, depth - 1)
        return
    del _held[path]
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        holder["released"] = time.time()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
    except (OSError, ValueError):
        pass
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def busy_message(folder: str | os.PathLike, name: str = LOCK_NAME,
                 target: str | os.PathLike | None = None) -> str:
    """The one line that refuses a second writer of ``target`` (default: ``folder``)."""
    path = Path(folder) / name
    holder = _holder(path)
    age = _live_elsewhere(path, holder)
    beat = "" if age is None else \
        f", heartbeat {age:.0f} s ago (taken over after {STALE_S:.0f} s without one)"
    return (f"{target or folder} is being written by {_describe(holder)}{beat}; wait for it "
            f"to finish or choose another --out")


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str, name: str = LOCK_NAME,
                target: str | os.PathLike | None = None) -> Iterator[None]:
    """Holds ``folder``'s lock (its lock file ``name``) for the block; ``target`` is what the
    refusal names (default: the folder).

    Raises:
        FolderBusy: another live process holds it (one line naming the holder).
    """
    if not try_lock(folder, what, name):
        raise FolderBusy(busy_message(folder, name, target))
    try:
        yield
    finally:
        release(folder, name)
