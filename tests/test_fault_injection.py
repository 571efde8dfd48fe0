"""kill -9 at a random (seeded) moment of teacher training, distillation and ``gtn-nas run``,
resume, and compare with an uninterrupted run: same weights bit for bit, same metrics, same
summary numbers, no stray temporaries, no corrupt checkpoint (harness: tests/faults.py; the
longer version is bench/fault_injection.py).

The three stages run concurrently, each reference beside its trial (distillation from an
untrained tiny teacher), and each trial kills after real progress (the bench adds kills during
start-up and second kills). The file needs about 2 minutes of CPU, most of it the imports of
nine process starts: on 2 cores it took 64 s under a load of 2-3 and 2.7-2.8 minutes under a
load of 8-9 (2026-12-01). All commands run from a snapshot of the source tree, so edits made
meanwhile cannot split a reference from its trial.
"""

from __future__ import annotations

import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from gtn_nas.teacher.zoo import build_teacher, save_teacher

from faults import (Comparison, Trial, compare_runs, distill_stage, kill_and_resume,
                    load_weights, run_stage, run_to_completion, snapshot, strip_timing,
                    teacher_stage)

# Teacher: a standard teacher (the GTN teacher is in the run below), 3 epochs of 3 steps.
TEACHER = ["--method", "standard", "--teacher", "tiny", "--data", "digits", "--limit", "300",
           "--epochs", "3", "--max-steps-per-epoch", "3", "--batch-size", "32"]
DISTILL_ARGS = ["--students", "s_nas_s", "--data", "digits", "--limit", "300", "--epochs", "2",
                "--max-steps-per-epoch", "3", "--batch-size", "32"]
# tests/test_pipeline.py's TINY run without the baseline: GTN teacher, search, KD, export.
RUN = {"data": {"name": "digits", "limit": 300}, "seed": 0,
       "teacher": {"teacher": "tiny", "train": {"epochs": 1, "max_steps_per_epoch": 3,
                                                "batch_size": 32}},
       # estimated latency: measured budgets would follow the machine's load, so the reference
       # and the killed run would search under different budgets
       "search": {"budget_evals": 6, "latency": "estimate", "budget_students": 20,
                  "halving": {"candidates": 3}},
       "distill": {"baselines": [],
                   "train": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 32}}}
SEED = 20261201


def _trial(stage, base: Path, name: str, seed: int) -> tuple[Trial, Comparison, object]:
    """Reference and killed run side by side; returns the trial, its comparison and the
    reference's completion."""
    ref, cut = base / name / "ref" / "out", base / name / "cut" / "out"
    with ThreadPoolExecutor(2) as pool:
        reference = pool.submit(run_to_completion, stage, ref)
        trial = pool.submit(kill_and_resume, stage, cut, random.Random(seed), seed=seed)
        reference, trial = reference.result(), trial.result()
    assert reference.returncode == 0, reference.stderr
    return trial, compare_runs(ref, cut), reference


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    snapshot(base / "src")  # the code under test cannot change while the trials run
    config = base / "run.yaml"
    config.write_text(yaml.safe_dump(RUN))

    torch.manual_seed(0)  # an untrained teacher is enough to distil from
    teacher = save_teacher(base / "teacher.pt", build_teacher("tiny", num_classes=10),
                           image_size=8)
    # Kills after real progress (kills during start-up are the bench's business too), so that
    # the resumed part stays short.
    stages = {
        "teacher": replace(teacher_stage(TEACHER), markers=("metrics.jsonl",),
                           delay=(0.0, 1.5)),
        "distill": replace(distill_stage(["--teacher", str(teacher), *DISTILL_ARGS]),
                           markers=("*/seed*/metrics.jsonl",), delay=(0.0, 3.0)),
        "run": replace(run_stage(config), markers=(
            "teacher/metrics.jsonl", "search/*/students/*.yaml",
            "distill/*/*/seed*/metrics.jsonl"), delay=(0.0, 3.0))}
    with ThreadPoolExecutor(len(stages)) as pool:
        futures = {name: pool.submit(_trial, stage, base, name, SEED + i)
                   for i, (name, stage) in enumerate(stages.items())}
        results = {name: future.result() for name, future in futures.items()}
    return base, results


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["teacher", "distill", "run"])
def test_killed_and_resumed_equals_uninterrupted(trials, stage):
    base, results = trials
    trial, comparison, _ = results[stage]
    assert trial.completed, (trial, trial.stderr)
    assert trial.resumes == (1 if trial.killed else 0)
    assert comparison.ok, (trial, comparison.problems())
    assert not comparison.stray and not comparison.corrupt
    wanted = {"teacher": {"teacher.pt", "last.pt"},
              "distill": {"student_last.pt", "student_best.pt", "last.pt"},
              "run": {"teacher.pt", "student_last.pt", "student_best.pt"}}[stage]
    files = list((base / stage / "cut" / "out").rglob("*.pt"))
    assert wanted <= {p.name for p in files} and comparison.checkpoints == len(files)


@pytest.mark.slow
def test_the_comparison_catches_changed_weights_metrics_and_stray_files(trials, tmp_path):
    """The harness can fail: one changed weight, one changed metric, a stray temporary and a
    truncated checkpoint are each reported."""
    base, _ = trials
    reference = base / "teacher" / "ref" / "out"
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    assert compare_runs(reference, copy).ok
    payload = load_weights(copy / "teacher.pt")
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name] = payload["state_dict"][name].clone()
    payload["state_dict"][name].view(-1)[0] += 1e-7
    torch.save(payload, copy / "teacher.pt")
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    (copy / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # one epoch short
    (copy / ".last.pt.999999999.0123abcd.tmp").write_bytes(b"x")
    (copy / "last.pt").write_bytes((copy / "last.pt").read_bytes()[:1000])  # truncated
    result = compare_runs(reference, copy)
    assert result.weights == [f"teacher.pt: 1 entries differ (first /state_dict/{name})"]
    assert result.metrics == ["metrics.jsonl"]
    assert result.stray == [".last.pt.999999999.0123abcd.tmp"]
    assert len(result.corrupt) == 1 and result.corrupt[0].startswith("last.pt (")
    assert not result.ok


@pytest.mark.slow
def test_gtn_branch_metrics_survive_a_resume_with_short_epochs(tmp_path):
    """Killed after epoch 1 of a GTN teacher with 1 step per epoch (< 4 recalibration
    batches): epoch 2's validation record must equal the uninterrupted run's (the harness
    found it with 3 steps per epoch)."""
    from gtn_nas.engine import TrainConfig
    from gtn_nas.config import DataConfig
    from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

    class Killed(Exception):
        pass

    def config():
        return TeacherRunConfig(teacher="tiny", data=DataConfig("digits", limit=300),
                                eval_paths=1,
                                train=TrainConfig(epochs=2, max_steps_per_epoch=1,
                                                  batch_size=32, progress=False))

    def kill(record):
        if record["epoch"] == 1:
            raise Killed

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = train_teacher(config(), tmp_path / "full").fit.history
        with pytest.raises(Killed):
            train_teacher(config(), tmp_path / "cut", on_epoch_end=kill)
        resumed = train_teacher(config(), tmp_path / "cut", resume=True).fit.history
    finally:
        torch.set_num_threads(threads)
    assert [strip_timing(r) for r in resumed] == [strip_timing(r) for r in full]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["distill", "run"])
def test_a_rerun_removes_temporaries_of_a_killed_writer(trials, tmp_path, capsys, stage):
    """A kill during an atomic write of a summary, a search file or run.json leaves
    ``.NAME.PID.XXXXXXXX.tmp``; the next run (every job or stage already finished) removes
    it, and a live writer's temporary (this process's PID) stays."""
    from gtn_nas.cli import main

    base, _ = trials
    copy = tmp_path / "out"
    shutil.copytree(base / stage / "ref" / "out", copy)
    dead = 999999999  # no such process
    stale = [copy / f".summary.json.{dead}.0123abcd.tmp",
             copy / f".run.json.{dead}.0123abcd.tmp"] if stage == "run" else [
        copy / f".summary.json.{dead}.0123abcd.tmp",
        copy / "s_nas_s" / "seed0" / f".result.json.{dead}.0123abcd.tmp"]
    if stage == "run":
        stale.append(next(copy.glob("search/*")) / f".candidates.json.{dead}.0123abcd.tmp")
    live = copy / f".report.md.{os.getpid()}.0123abcd.tmp"
    for path in [*stale, live]:
        path.write_bytes(b"half")
    if stage == "run":
        argv = ["run", "--config", str(base / "run.yaml"), "--out", str(copy), "--resume"]
    else:
        teacher = base / "teacher.pt"
        argv = ["distill", "--teacher", str(teacher), *DISTILL_ARGS, "--out", str(copy)]
    assert main(argv) == 0, capsys.readouterr().err
    assert "finished earlier" in capsys.readouterr().out
    assert not [p for p in stale if p.exists()] and live.exists()
