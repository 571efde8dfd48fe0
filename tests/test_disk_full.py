"""A full disk (ENOSPC) or quota (EDQUOT) in the middle of a run: one line, exit 2, the previous
complete file kept, no temporary left behind, and the same command continues once space is
back, to the same result bit for bit. The error is injected into the one atomic-write helper
(every checkpoint, metric file, report, table and ONNX export goes through it; torch.save and
the ONNX exporter write to memory first)."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from gtn_nas.cli import main
from gtn_nas.fileio import DiskFullError, atomic_torch_save, atomic_write_text

TEACHER = ["train-teacher", "--method", "standard", "--teacher", "tiny", "--data", "digits",
           "--limit", "300", "--epochs", "3", "--max-steps-per-epoch", "3", "--batch-size", "32"]


def fail_writes(monkeypatch, name_part: str, after: int = 0, code: int = errno.ENOSPC):
    """From the ``after``-th write of a file whose name holds ``name_part`` on, the disk is
    full (the error comes from fsync, after the data went into the temporary file). Lock files
    (``.<name>.lock``, fsynced when taken) are not hit: tests/test_many_writers.py covers a lock
    file on a full disk."""
    real = os.fsync
    seen = {"count": 0}

    def fsync(fd: int) -> None:
        target = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name_part in target and not target.endswith(".lock"):
            seen["count"] += 1
            if seen["count"] > after:
                raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch,
                                                                      code):
    target = tmp_path / "metrics.csv"
    atomic_write_text(target, "epoch 1\n")
    fail_writes(monkeypatch, "metrics.csv", code=code)
    with pytest.raises(DiskFullError) as info:
        atomic_write_text(target, "epoch 1\nepoch 2\n")
    message = str(info.value)
    assert "\n" not in message and "the previous metrics.csv is unchanged" in message
    assert "run the same command again" in message
    assert target.read_text() == "epoch 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
    with pytest.raises(DiskFullError, match="nothing was written to model.pt"):
        fail_writes(monkeypatch, "model.pt")
        atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_training_stopped_by_a_full_disk_resumes_to_the_same_weights(tmp_path, monkeypatch,
                                                                      capsys):
    reference, cut = tmp_path / "reference", tmp_path / "cut"
    assert main([*TEACHER, "--out", str(reference)]) == 0
    capsys.readouterr()
    with monkeypatch.context() as patch:
        fail_writes(patch, "last.pt", after=1)  # epoch 1's checkpoint lands, epoch 2's does not
        assert main([*TEACHER, "--out", str(cut)]) == 75
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("gtn-nas: error: cannot write ")
    assert "last.pt" in err and "previous last.pt is unchanged" in err
    kept = torch.load(cut / "last.pt", weights_only=True)
    assert kept["epoch"] == 1, "the last complete checkpoint stays"
    assert not [p for p in cut.rglob("*") if p.name.endswith(".tmp")]
    assert main([*TEACHER, "--out", str(cut), "--resume"]) == 0
    ours = torch.load(cut / "teacher.pt", weights_only=True)["state_dict"]
    theirs = torch.load(reference / "teacher.pt", weights_only=True)["state_dict"]
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_distill_export_on_a_full_disk_is_one_line_and_the_rerun_finishes(tmp_path,
                                                                           monkeypatch, capsys):
    teacher = tmp_path / "teacher"
    assert main([*TEACHER, "--epochs", "1", "--out", str(teacher)]) == 0
    command = ["distill", "--teacher", str(teacher / "teacher.pt"), "--students", "s_nas_s",
               "--data", "digits", "--limit", "300", "--epochs", "1", "--max-steps-per-epoch",
               "2", "--batch-size", "32", "--out", str(tmp_path / "distill")]
    capsys.readouterr()
    with monkeypatch.context() as patch:
        fail_writes(patch, "student.onnx")
        assert main(command) == 75
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "student.onnx" in err and "nothing was written" in err
    job = tmp_path / "distill" / "s_nas_s" / "seed0"
    assert not (job / "result.json").exists(), "a job is finished only when all it writes is"
    assert main(command) == 0
    assert (job / "result.json").is_file() and (job / "student.onnx").is_file()
    assert not [p for p in (tmp_path / "distill").rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_a_search_report_on_a_full_disk_is_one_line_and_the_rerun_writes_it(tmp_path,
                                                                            monkeypatch, capsys):
    out, name = tmp_path / "search", "candidates.json"
    command = ["search", "--hw", "jetson", "--width-mult", "0.25", "--input-size", "8",
               "--latency-mode", "estimate", "--budget-evals", "8", "--out", str(out)]
    with monkeypatch.context() as patch:
        fail_writes(patch, name)
        assert main(command) == 75
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot write {out / name}" in err
    assert not list(out.rglob("*.tmp"))
    assert main(command) == 0
    assert (out / name).is_file() and (out / "summary.md").is_file()


@pytest.mark.slow
def test_a_latency_table_on_a_full_disk_leaves_no_table(tmp_path, monkeypatch, capsys):
    import yaml

    from gtn_nas.hardware.profiles import PROFILES_DIR

    profile = yaml.safe_load((PROFILES_DIR / "host_cpu.yaml").read_text())
    profile.update(name="quick_cpu", latency_table=None,
                   measurement={"warmup": 1, "repeats": 3, "statistic": "median"})
    (tmp_path / "quick_cpu.yaml").write_text(yaml.safe_dump(profile))
    table = tmp_path / "tables" / "cpu.json"
    command = ["profile", "--hw", str(tmp_path / "quick_cpu.yaml"), "--width-mult", "0.25", "--input-size", "8",
               "--fit-students", "4", "--adaptive-rounds", "0", "--validation-students", "2",
               "--noise-rounds", "2", "--out", str(table)]
    with monkeypatch.context() as patch:
        fail_writes(patch, "cpu.json")
        assert main(command) == 75
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot write {table}" in err
    assert "nothing was written to cpu.json" in err
    assert not table.exists() and not list(table.parent.glob("*.tmp"))
