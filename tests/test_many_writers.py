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
    # long enough (~15 s) that the second process starts up while the first still trains
    command = [*TEACHER, "--teacher", "resnet32", "--epochs", "12", "--out", "out"]
    first = start(command, tmp_path)
    wait_for_lock(tmp_path / "out")
    second = start([*command, "--resume"], tmp_path)  # a re-submitted job
    _, err = second.communicate(timeout=300)
    first_out, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 2
    line = err.strip()
    assert line.count("\n") == 0, err
    assert re.search(rf"is being written by pid {first.pid} on \S+ since \d{{4}}-\d\d-\d\d "
                     rf"\d\d:\d\d:\d\d \(training\)", line), line
    assert (tmp_path / "out" / "teacher.pt").is_file()


def test_copies_of_one_distill_command_share_its_jobs(tmp_path):
    teacher = start([*TEACHER, "--epochs", "1", "--out", "teacher"], tmp_path)
    assert teacher.wait(timeout=300) == 0
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
