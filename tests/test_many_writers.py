"""Two processes on one output folder (two terminals, a re-submitted cluster job, a job array
without --shard): a second training writer of a folder is refused in one line naming the first
(pid, host, start time); N copies of one ``distill`` command share its jobs like a work queue,
each job trained exactly once; a lock left by a killed process is taken over, said in one line.
Real processes (``gtn_nas.locks``: ``fcntl.flock``, released by the kernel when a process dies).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from faults import subprocess_env
from gtn_nas.locks import LOCK_NAME, folder_lock, try_lock, release

TEACHER = ["train-teacher", "--method", "standard", "--teacher", "tiny", "--data", "digits",
           "--epochs", "3", "--batch-size", "32"]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gtn_nas.cli", *args], cwd=cwd,
                            env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_lock(folder: Path, timeout: float = 120.0) -> None:
    """Until a process holds ``folder``'s lock (its lock file names a live pid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            holder = json.loads((folder / LOCK_NAME).read_text() or "{}")
            if holder.get("pid") and not holder.get("released"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"no process took the lock of {folder}")


def test_a_second_trainer_on_the_same_folder_is_refused_naming_the_first(tmp_path):
    # far longer than the second process needs to start, however slow the machine (a
    # 12-epoch first run once finished before the second looked); stopped once it answered
    command = [*TEACHER, "--epochs", "1000", "--out", "out"]
    first = start(command, tmp_path)
    try:
        wait_for_lock(tmp_path / "out")
        second = start([*command, "--resume"], tmp_path)  # a re-submitted job
        _, err = second.communicate(timeout=300)
        assert first.poll() is None, "the first writer stopped before the second answered"
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert second.returncode == 75  # busy, not bad input: the same command works later
    line = err.strip()
    assert line.count("\n") == 0, err
    assert re.search(rf"is being written by pid {first.pid} on \S+ since \d{{4}}-\d\d-\d\d "
                     rf"\d\d:\d\d:\d\d \(training\)", line), line


def test_copies_of_one_distill_command_share_its_jobs(tmp_path):
    import torch

    from gtn_nas.teacher.zoo import build_teacher, save_teacher

    torch.manual_seed(0)  # an untrained teacher is enough to distil from (no process start)
    save_teacher(tmp_path / "teacher" / "teacher.pt", build_teacher("tiny", num_classes=10),
                 image_size=8)
    command = ["distill", "--teacher", "teacher/teacher.pt", "--students", "s_nas_s",
               "s_nas_m", "--seeds", "0,1", "--data", "digits", "--limit", "600", "--epochs",
               "2", "--batch-size", "32", "--no-export", "--out", "shared"]
    copies = [start(command, tmp_path) for _ in range(2)]
    outputs = [copy.communicate(timeout=600) for copy in copies]
    assert all(copy.returncode == 0 for copy in copies), [err for _, err in outputs]
    trained = sum(out.count("epochs -> ") for out, _ in outputs)
    assert trained == 4, "every job trained exactly once: " + " | ".join(o for o, _ in outputs)
    results = sorted((tmp_path / "shared").glob("*/seed*/result.json"))
    assert len(results) == 4


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, caplog):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from gtn_nas.locks import try_lock; try_lock(sys.argv[2], 'training');"
        "print('locked', flush=True); time.sleep(60)"),
        str(Path(__file__).resolve().parents[1]), str(folder)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert not try_lock(folder, "training"), "a live holder keeps its lock"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with caplog.at_level(logging.WARNING, logger="gtn_nas.locks"):
        with folder_lock(folder, "training"):
            assert try_lock(folder, "again") and release(folder) is None  # re-entrant
    taken = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert len(taken) == 1 and f"pid {holder.pid}" in taken[0], taken
    assert json.loads((folder / LOCK_NAME).read_text())["released"]


def hold_lock(folder: Path, what: str, name: str = LOCK_NAME, heartbeat_s: float = 10.0
              ) -> subprocess.Popen:
    """A live process holding ``folder``'s lock (``name``) until killed."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); import gtn_nas.locks as locks;"
        "locks.HEARTBEAT_S = float(sys.argv[5]);"
        "locks.try_lock(sys.argv[2], sys.argv[3], sys.argv[4]);"
        "print('locked', flush=True); time.sleep(120)"),
        str(Path(__file__).resolve().parents[1]), str(folder), what, name, str(heartbeat_s)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_search_and_profile_refuse_a_second_writer(tmp_path, capsys):
    from gtn_nas.cli import main

    search_out, table = tmp_path / "search", tmp_path / "tables" / "cpu.json"
    holders = [hold_lock(search_out, "gtn-nas search"),
               hold_lock(table.parent, "gtn-nas profile", f".{table.name}.lock")]
    try:
        tiny = ["--width-mult", "0.25", "--input-size", "8"]
        assert main(["search", "--hw", "jetson", *tiny, "--latency-mode", "estimate",
                     "--budget-evals", "6", "--out", str(search_out)]) == 75
        search_err = capsys.readouterr().err.strip()
        assert main(["profile", "--hw", "host_cpu", *tiny, "--out", str(table)]) == 75
        profile_err = capsys.readouterr().err.strip()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    assert search_err.count("\n") == 0 and profile_err.count("\n") == 0
    assert f"{search_out} is being written by pid {holders[0].pid} on " in search_err
    assert "(gtn-nas search)" in search_err
    assert f"{table} is being written by pid {holders[1].pid} on " in profile_err
    assert "(gtn-nas profile)" in profile_err
    assert list(search_out.iterdir()) == [search_out / LOCK_NAME]  # nothing written
    assert not table.exists()
    # another device's table in the same folder is not blocked by that lock
    assert try_lock(table.parent, "profile", ".other.json.lock")
    release(table.parent, ".other.json.lock")


def test_a_holder_keeps_its_heartbeat(tmp_path):
    folder = tmp_path / "run"
    holder = hold_lock(folder, "training", heartbeat_s=0.1)
    try:
        os.utime(folder / LOCK_NAME, (0, 0))  # as if its last beat were long ago
        deadline = time.monotonic() + 30
        while (folder / LOCK_NAME).stat().st_mtime < time.time() - 60:
            assert time.monotonic() < deadline, "the holder never touched its lock file"
            time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_on_another_host_is_kept_by_its_heartbeat_and_taken_over_without_it(
        tmp_path, caplog):
    """Where flock is not shared between hosts, the lock file's heartbeat (its mtime) keeps a
    holder on another host; past STALE_S without a beat its lock is taken over."""
    import gtn_nas.locks as locks

    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / LOCK_NAME
    path.write_text(json.dumps({"pid": 4242, "host": "node-17", "started": time.time() - 600,
                                "what": "training"}))
    assert not try_lock(folder, "training"), "a fresh heartbeat on another host keeps the lock"
    try:
        with folder_lock(folder, "training"):
            raise AssertionError("the lock was taken")
    except locks.FolderBusy as exc:
        message = str(exc)
    assert re.search(r"is being written by pid 4242 on node-17 since .* \(training\), "
                     r"heartbeat \d+ s ago \(taken over after 120 s without one\)", message)
    old = time.time() - locks.STALE_S - 5
    os.utime(path, (old, old))
    with caplog.at_level(logging.WARNING, logger="gtn_nas.locks"):
        with folder_lock(folder, "training"):
            assert json.loads(path.read_text())["pid"] == os.getpid()
    taken = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert len(taken) == 1 and "pid 4242 on node-17" in taken[0] and "heartbeat stopped" \
        in taken[0], taken
    # a released lock of another host is free at once
    path.write_text(json.dumps({"pid": 4242, "host": "node-17", "released": time.time()}))
    assert try_lock(folder, "training")
    release(folder)


def test_a_lock_file_that_cannot_be_locked_or_written_is_one_line(tmp_path, monkeypatch):
    """ENOLCK (an NFS mount without a lock service) and a full disk while writing the holder's
    record: one line naming the lock file, nothing held, no descriptor left open."""
    import errno

    import pytest

    from gtn_nas import locks
    from gtn_nas.errors import ConfigError
    from gtn_nas.fileio import DiskFullError

    opened = len(os.listdir("/proc/self/fd"))

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    with monkeypatch.context() as patch:
        patch.setattr(locks.fcntl, "flock", no_locks)
        with pytest.raises(ConfigError, match=r"cannot lock .*\.gtn-nas\.lock: No locks "
                                              r"available \(this file system gives no file"):
            try_lock(tmp_path / "a", "test")

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(locks.os, "pwrite", full)
        with pytest.raises(DiskFullError, match="cannot write the lock file .*No space left"):
            try_lock(tmp_path / "b", "test")
    assert len(os.listdir("/proc/self/fd")) == opened
    assert try_lock(tmp_path / "b", "test"), "nothing held: the folder can be locked after"
    release(tmp_path / "b")


def test_a_killed_writers_temporaries_are_removed_on_its_host_only(tmp_path):
    """A temporary's name carries its writer's pid and host: this host's dead writers' are
    removed, a live writer's and another host's (whose pid means nothing here) are kept."""
    import hashlib
    import socket

    from gtn_nas.fileio import atomic_write_text, remove_stale_temporaries

    here = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
    other = "000000" if here != "000000" else "111111"
    dead = 999_999_999  # above pid_max: no such process
    files = {"dead here": tmp_path / f".last.pt.{dead}-{here}.0123abcd.tmp",
             "dead, old name": tmp_path / f".last.pt.{dead}.0123abcd.tmp",
             "live here": tmp_path / f".last.pt.{os.getpid()}-{here}.0123abcd.tmp",
             "other host": tmp_path / "sub" / f".last.pt.{dead}-{other}.0123abcd.tmp"}
    for path in files.values():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([files["dead here"], files["dead, old name"]])
    assert files["live here"].exists() and files["other host"].exists()
    table = tmp_path / f".lat.json.{dead}-{here}.0123abcd.tmp"
    table.write_bytes(b"half")
    (tmp_path / "sub" / f".lat.json.{dead}-{here}.0123abcd.tmp").write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path, name="lat.json") == [table], \
        "a profile's sweep: its own table's temporaries in its own folder only"
    written = []
    real_replace = os.replace

    def spy(src, dst):
        written.append(Path(src).name)
        real_replace(src, dst)

    os.replace = spy
    try:
        atomic_write_text(tmp_path / "x.txt", "x")
    finally:
        os.replace = real_replace
    assert re.fullmatch(rf"\.x\.txt\.{os.getpid()}-{here}\.[0-9a-f]{{8}}\.tmp", written[0])
