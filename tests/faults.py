"""Fault injection: kill -9 a ``gtn-nas`` command at a random moment, resume it until it
completes, and compare everything it left with an uninterrupted run of the same command.

A :class:`Stage` says how to start a command into an output directory, how to resume it, which
files show that it made progress (``markers``, globs under the output directory) and the range
of kill delays after a marker appears. :func:`kill_and_resume` runs one trial with a seeded RNG:
it starts the command in its own process group, waits for a randomly chosen marker (or for the
start, marker ``""``), sleeps a random delay, sends SIGKILL to the group (a process that has
already finished is an acceptable trial: ``killed`` is then False), then resumes until the
command exits 0. :func:`compare_runs` then checks the trial's directory against a reference:

- weights: every tensor of every ``*.pt`` file (``teacher.pt``, ``branches.pt``, ``last.pt``,
  ``student_last.pt``, ``student_best.pt``), loaded with ``torch.load(weights_only=True)``,
  equal bit for bit (a file that does not load is a corrupt checkpoint);
- metrics: ``metrics.jsonl`` and ``metrics.csv`` equal without the timing field ``seconds``;
- summaries: every ``*.json`` and ``*.yaml`` equal without timing fields (seconds, measured
  latencies, machine load), so the summary and report numbers (accuracies, params, MFLOPs,
  picks, scores) are the same;
- files: the same set of files, and no ``.*.tmp`` temporaries left behind.

Both runs must use the same thread count for bit-for-bit equality: :func:`subprocess_env`
pins ``OMP_NUM_THREADS=1`` (and MKL's) for every process started here.

Example:
    >>> stage = teacher_stage(["--method", "standard", "--epochs", "2"])  # doctest: +SKIP
    >>> reference = run_to_completion(stage, tmp / "ref" / "out")           # doctest: +SKIP
    >>> trial = kill_and_resume(stage, tmp / "cut" / "out", random.Random(0))  # doctest: +SKIP
    >>> compare_runs(tmp / "ref" / "out", tmp / "cut" / "out").ok          # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
# Keys whose values are wall-clock measurements (or depend on them): never compared. The
# distill stage's ``teacher_digest`` (and the job ``digest`` over it) hashes teacher.pt's bytes,
# which hold the teacher's last epoch record, ``seconds`` included.
TIMING_KEY = re.compile(r"^(seconds|build_seconds|load|noise|trusted|measured|remeasurement|"
                        r"reference_rounds|rounds_ms|spread|machine|digest|teacher_digest)$"
                        r"|_seconds$|_ms($|_)|^latency")


# The source tree the commands run from: the checkout, or a snapshot of it (see snapshot()).
_source: list[Path] = [ROOT]


def snapshot(dest: Path) -> Path:
    """Copies the package, the built-in spaces and the bundled profiles to ``dest`` and runs
    every later command from that copy: files edited in the checkout while trials run (other
    work in the same tree) cannot make a reference and its trial run different code."""
    for name in ("gtn_nas", "search_spaces", "hw_profiles"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _source[0] = dest
    return dest


def subprocess_env(threads: int = 1) -> dict[str, str]:
    """The environment of every process started here: fixed thread counts, the source tree
    (the checkout or its snapshot) first on ``PYTHONPATH``, no progress bars."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "PYTHONHASHSEED": "0", "TQDM_DISABLE": "1",
                "PYTHONPATH": os.pathsep.join([str(_source[0]), env.get("PYTHONPATH", "")])
                .rstrip(os.pathsep)})
    return env


@dataclass(frozen=True)
class Stage:
    """A ``gtn-nas`` command under test.

    Attributes:
        name: Shown in tables (``teacher``, ``distill``, ``run``).
        argv: The command's arguments for an output directory (after ``gtn-nas``).
        resume_argv: The arguments that resume it (default: ``argv``).
        markers: Globs under the output directory that show progress; ``""`` is the start.
        The command runs in the output directory's parent, and gets the output directory by
        its name: keep the reference's and the trial's names equal (``ref/out``, ``cut/out``),
        since runs record their paths (the distill stage's teacher path, for one).
        delay: (low, high) seconds of the random kill delay after the marker.
        delays: Per-marker (low, high), e.g. from a reference's :attr:`Completed.marker_times`.
        measured: The command writes measurements (``profile``'s latency table): a trial is
        compared with the reference by the structure of its files, not their values.
    """

    name: str
    argv: Callable[[Path], list[str]]
    resume_argv: Callable[[Path], list[str]] | None = None
    markers: tuple[str, ...] = ("",)
    delay: tuple[float, float] = (0.0, 5.0)
    delays: dict[str, tuple[float, float]] | None = None  # per marker, overriding ``delay``
    measured: bool = False  # its files hold timings: compared by structure (see compare_runs)

    def command(self, out: Path, resume: bool = False) -> list[str]:
        """The command line for ``out``, which is given relative to its parent folder (the
        working directory), so that two runs in folders of the same name record the same
        paths."""
        args = (self.resume_argv if resume and self.resume_argv else self.argv)(Path(out.name))
        return [sys.executable, "-m", "gtn_nas.cli", *args]


def teacher_stage(options: Sequence[str], delay: tuple[float, float] = (0.0, 6.0)) -> Stage:
    """``gtn-nas train-teacher OPTIONS --out OUT``, resumed with ``--resume``."""
    return Stage("teacher", lambda out: ["train-teacher", *options, "--out", str(out)],
                 lambda out: ["train-teacher", *options, "--out", str(out), "--resume"],
                 markers=("", "metrics.jsonl"), delay=delay)


def distill_stage(options: Sequence[str], delay: tuple[float, float] = (0.0, 6.0)) -> Stage:
    """``gtn-nas distill OPTIONS --out OUT``, resumed by running it again."""
    return Stage("distill", lambda out: ["distill", *options, "--out", str(out)],
                 markers=("", "config.yaml", "*/seed*/metrics.jsonl"), delay=delay)


def run_stage(config: Path, delay: tuple[float, float] = (0.0, 12.0)) -> Stage:
    """``gtn-nas run --config CONFIG --out OUT``, resumed with ``--resume``."""
    return Stage("run", lambda out: ["run", "--config", str(config), "--out", str(out)],
                 lambda out: ["run", "--config", str(config), "--out", str(out), "--resume"],
                 markers=("", "run.json", "teacher/metrics.jsonl", "search/*/students/*.yaml",
                          "distill/*/*/seed*/metrics.jsonl"), delay=delay)


def search_stage(options: Sequence[str], delay: tuple[float, float] = (0.0, 4.0)) -> Stage:
    """``gtn-nas search OPTIONS --out OUT``, resumed by running it again (a search starts
    over; seeded, it writes the same files)."""
    return Stage("search", lambda out: ["search", *options, "--out", str(out)],
                 markers=("", "students/*.yaml"), delay=delay)


def profile_stage(options: Sequence[str], delay: tuple[float, float] = (0.0, 8.0)) -> Stage:
    """``gtn-nas profile OPTIONS --out OUT/table.json``, resumed by running it again (a
    killed build starts over and writes its table once, at the end)."""
    return Stage("profile", lambda out: ["profile", *options, "--out", str(out / "table.json")],
                 markers=("",), delay=delay, measured=True)


@dataclass
class Completed:
    """One process: its exit code, how long it ran, the end of its stderr, and when (seconds
    after the start) each of the stage's markers first appeared."""

    returncode: int
    seconds: float
    stderr: str = ""
    marker_times: dict[str, float] = field(default_factory=dict)


def run_to_completion(stage: Stage, out: Path, resume: bool = False, timeout: float = 600.0
                      ) -> Completed:
    """Runs ``stage`` into ``out`` to the end (no kill), noting when its markers appear."""
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {"": 0.0}
    with tempfile.TemporaryFile("w+") as log, subprocess.Popen(
            stage.command(out, resume), cwd=out.parent, env=subprocess_env(),
            stdout=subprocess.DEVNULL, stderr=log, text=True) as proc:
        while proc.poll() is None and time.perf_counter() - started < timeout:
            for marker in stage.markers:
                if marker not in times and any(out.glob(marker)):
                    times[marker] = time.perf_counter() - started
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.seek(0)
        return Completed(proc.returncode, time.perf_counter() - started, log.read()[-2000:],
                         times)


@dataclass
class Trial:
    """What one kill/resume trial did."""

    stage: str
    seed: int
    marker: str
    delay: float
    kills: int = 0  # kills that landed before the process finished
    resumes: int = 0
    returncodes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    stderr: str = ""

    @property
    def killed(self) -> bool:
        return self.kills > 0

    @property
    def completed(self) -> bool:
        return bool(self.returncodes) and self.returncodes[-1] == 0


def _wait_for(out: Path, marker: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while marker and proc.poll() is None and time.monotonic() < deadline:
        if any(out.glob(marker)):
            return
        time.sleep(0.05)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # our own process group (start_new_session)
    except ProcessLookupError:
        pass


def _start_and_kill(command: list[str], out: Path, marker: str, delay: float,
                    timeout: float) -> tuple[int, bool, str]:
    """Runs ``command``; after ``marker`` appears plus ``delay`` seconds, SIGKILLs its process
    group if it is still running. Returns (exit code, killed, end of stderr)."""
    with tempfile.TemporaryFile("w+") as log, subprocess.Popen(
            command, cwd=out.parent, env=subprocess_env(), stdout=subprocess.DEVNULL,
            stderr=log, text=True, start_new_session=True) as proc:
        _wait_for(out, marker, proc, timeout)
        deadline = time.monotonic() + delay
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        killed = proc.poll() is None
        if killed:
            _kill_group(proc)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
        log.seek(0)
        return proc.returncode, killed, log.read()[-2000:]


def kill_and_resume(stage: Stage, out: Path, rng: random.Random, *, seed: int = 0,
                    kills: int = 1, max_resumes: int = 3, timeout: float = 600.0) -> Trial:
    """Starts ``stage`` into ``out``, kills it (SIGKILL) at a random moment drawn from
    ``rng``, then resumes it until it exits 0 (at most ``max_resumes`` times after the
    kills). With ``kills`` > 1 the resumed runs are killed too, each at a moment drawn anew;
    the trial's ``marker`` and ``delay`` are the first kill's."""
    trial = Trial(stage.name, seed, "", 0.0)
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(kills):
        marker = rng.choice(stage.markers)
        delay = round(rng.uniform(*(stage.delays or {}).get(marker, stage.delay)), 3)
        if attempt == 0:
            trial.marker, trial.delay = marker or "(start)", delay
        code, killed, trial.stderr = _start_and_kill(stage.command(out, resume=attempt > 0),
                                                     out, marker, delay, timeout)
        trial.returncodes.append(code)
        trial.kills += killed
        trial.resumes += attempt > 0
        if not killed:
            break
    retries = 0
    while not trial.completed and retries < max_resumes:
        done = run_to_completion(stage, out, resume=True, timeout=timeout)
        retries += 1
        trial.resumes += 1
        trial.returncodes.append(done.returncode)
        trial.stderr = done.stderr
    trial.seconds = round(time.perf_counter() - started, 2)
    return trial


# ----------------------------------------------------------------------------- comparison
@dataclass
class Comparison:
    """Differences between a trial's directory and the reference's, by kind."""

    weights: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    checkpoints: int = 0

    @property
    def ok(self) -> bool:
        return not (self.weights or self.metrics or self.summaries or self.files or self.stray
                    or self.corrupt)

    def problems(self) -> list[str]:
        return [f"{kind}: {item}" for kind in ("weights", "metrics", "summaries", "files",
                                               "stray", "corrupt")
                for item in getattr(self, kind)]


def strip_timing(value: Any) -> Any:
    """``value`` without the entries whose keys are timing measurements (recursively); in
    ``notes``, numbers become ``#`` and notes on latency re-measurement are dropped."""
    if isinstance(value, dict):
        return {k: _numbers_hidden(v) if k == "notes" else strip_timing(v)
                for k, v in value.items() if not (isinstance(k, str) and TIMING_KEY.search(k))}
    if isinstance(value, (list, tuple)):
        return [strip_timing(v) for v in value]
    return value


def _numbers_hidden(value: Any) -> Any:
    """Notes without their numbers; notes about latency re-measurement (whose presence
    depends on the machine's load) dropped."""
    if isinstance(value, str):
        return re.sub(r"\d+(\.\d+)?", "#", value)
    if isinstance(value, list):
        return [_numbers_hidden(v) for v in value
                if not (isinstance(v, str) and "measure" in v)]
    return value


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    import torch

    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and TIMING_KEY.search(key):
                continue
            out.update(_leaves(item, f"{path}/{key}"))
        return out
    if isinstance(value, (list, tuple)):
        out = {}
        for index, item in enumerate(value):
            out.update(_leaves(item, f"{path}[{index}]"))
        return out
    if isinstance(value, torch.Tensor):
        return {path: value}
    return {path: value}


def _equal_leaf(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # nan == nan
    return a == b


def load_weights(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _compare_checkpoint(name: str, ref: Path, new: Path, result: Comparison) -> None:
    try:
        b = load_weights(new)
    except Exception as exc:  # noqa: BLE001 - any failure to load is a corrupt checkpoint
        result.corrupt.append(f"{name} ({type(exc).__name__})")
        return
    result.checkpoints += 1
    a = _leaves(load_weights(ref))
    b = _leaves(b)
    if set(a) != set(b):
        result.weights.append(f"{name}: entries differ ({sorted(set(a) ^ set(b))[:3]} ...)")
        return
    unequal = [key for key in a if not _equal_leaf(a[key], b[key])]
    if unequal:
        result.weights.append(f"{name}: {len(unequal)} entries differ (first {unequal[0]})")


def _metrics_jsonl(path: Path) -> list[Any]:
    return [strip_timing(json.loads(line)) for line in path.read_text().splitlines()
            if line.strip()]


def _metrics_csv(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if not TIMING_KEY.search(k or "")}
            for row in csv.DictReader(io.StringIO(path.read_text()))]


def _structured(path: Path) -> Any:
    import yaml

    text = path.read_text()
    return strip_timing(json.loads(text) if path.suffix == ".json" else yaml.safe_load(text))


def _shape(value: Any, path: str = "") -> set[str]:
    """The key paths of a JSON value (list items by position), without its values."""
    if isinstance(value, dict):
        return {p for key, item in value.items() for p in _shape(item, f"{path}/{key}")}
    if isinstance(value, list):
        return {p for index, item in enumerate(value) for p in _shape(item, f"{path}[{index}]")}
    return {path}


TABLE_FIXED = ("format", "space", "space_options", "profile", "input_shape", "providers",
               "statistic", "protocol")
"""Fields of a latency table that do not depend on the timings (what was measured, how)."""


def _table_identity(data: dict) -> dict:
    """What two builds of one table share whatever the machine's timings: the fixed fields,
    the top-level keys, the unit steps and fused kernels it knows, and how many students it
    was fitted and validated on (the model's form, trees or not, and which students fell
    under 1 ms follow the timings)."""
    return {"keys": sorted(data), **{k: data.get(k) for k in TABLE_FIXED},
            "steps": sorted(data.get("steps", {})), "kernels": sorted(data.get("kernels", {})),
            "fit_students": (data.get("fit") or {}).get("students"),
            "validation_students": (data.get("validation") or {}).get("students")}


def _check_table(path: Path, result: Comparison) -> None:
    """A latency table must load (gtn-nas's own reader, format checked)."""
    from gtn_nas.errors import ConfigError
    from gtn_nas.hardware.latency_predictor import LatencyTable

    try:
        LatencyTable.load(path, check_machine=False)
    except (ConfigError, TypeError, KeyError, ValueError) as exc:
        result.corrupt.append(f"{path.name} (does not load: {exc})")


def compare_runs(reference: Path, trial: Path, measured: bool = False) -> Comparison:
    """Compares every file of ``trial`` with ``reference`` (see the module docstring).

    With ``measured`` (a stage whose files hold timings, :attr:`Stage.measured`), a latency
    table must load and match the reference in what does not depend on timings
    (:func:`_table_identity`); other JSON files are compared by key paths and list lengths."""
    result = Comparison()
    result.stray = sorted(str(p.relative_to(trial)) for p in trial.rglob(".*.tmp"))
    ref_files = {str(p.relative_to(reference)) for p in reference.rglob("*") if p.is_file()
                 and not p.name.endswith(".tmp")}
    new_files = {str(p.relative_to(trial)) for p in trial.rglob("*") if p.is_file()
                 and not p.name.endswith(".tmp")}
    for missing in sorted(ref_files - new_files):
        result.files.append(f"missing {missing}")
    for extra in sorted(new_files - ref_files):
        result.files.append(f"extra {extra}")
    for name in sorted(ref_files & new_files):
        ref, new = reference / name, trial / name
        try:
            if name.endswith(".pt"):
                _compare_checkpoint(name, ref, new, result)
            elif name.endswith("metrics.jsonl"):
                if _metrics_jsonl(ref) != _metrics_jsonl(new):
                    result.metrics.append(name)
            elif name.endswith("metrics.csv"):
                if _metrics_csv(ref) != _metrics_csv(new):
                    result.metrics.append(name)
            elif measured and name.endswith(".json"):
                old, data = json.loads(ref.read_text()), json.loads(new.read_text())
                if isinstance(data, dict) and "gtn-nas-latency" in str(data.get("format")):
                    if _table_identity(old) != _table_identity(data):
                        result.summaries.append(name)
                    _check_table(new, result)
                elif _shape(old) != _shape(data):
                    result.summaries.append(name)
            elif name.endswith((".json", ".yaml", ".yml")):
                if _structured(ref) != _structured(new):
                    result.summaries.append(name)
            elif name.endswith(".onnx"):
                import onnx

                try:
                    onnx.checker.check_model(onnx.load(str(new)))
                except Exception as exc:  # noqa: BLE001 - a broken export is corrupt
                    result.corrupt.append(f"{name} ({type(exc).__name__})")
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            result.corrupt.append(f"{name} ({type(exc).__name__}: {exc})")
    return result


# ----------------------------------------------------------------------------- tables
HEADER = ("trial", "stage", "marker", "kill delay s", "killed", "resumes", "equal weights",
          "equal metrics", "equal summaries", "stray files", "ok")


def table_row(index: int, trial: Trial, comparison: Comparison) -> list[str]:
    """One row of the trial table (see :data:`HEADER`)."""
    ok = trial.completed and comparison.ok
    return [str(index), trial.stage, trial.marker, f"{trial.delay:.2f}",
            (f"yes ({trial.kills}x)" if trial.kills > 1 else "yes") if trial.killed
            else "no (finished)", str(trial.resumes),
            "yes" if not (comparison.weights or comparison.corrupt) else "NO",
            "yes" if not comparison.metrics else "NO",
            "yes" if not (comparison.summaries or comparison.files) else "NO",
            str(len(comparison.stray)), "pass" if ok else "FAIL"]
