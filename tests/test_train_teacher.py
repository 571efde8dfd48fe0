"""`gtn-nas train-teacher` end to end: run directories, saved teachers, DDP, bad input."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest
import torch

from gtn_nas.cli import main
from gtn_nas.teacher.zoo import build_teacher, load_teacher

QUICK = ["--data", "synthetic", "--epochs", "2", "--batch-size", "16",
         "--max-steps-per-epoch", "3"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("method, extra", [
    ("standard", []),
    ("sftn", ["--student", "s_nas_s"]),
    ("gtn", ["--sampler", "learned"]),
])
def test_each_method_writes_a_complete_run_directory(capsys, tmp_path, method, extra):
    out_dir = tmp_path / method
    code, out, err = run(capsys, "train-teacher", "--method", method, "--teacher", "tiny",
                         *QUICK, *extra, "--out", str(out_dir))
    assert code == 0, err
    assert "epoch 2:" in out
    names = {p.name for p in out_dir.iterdir()}
    expected = {"config.yaml", "last.pt", "metrics.jsonl", "metrics.csv", "teacher.pt",
                "curves.png"}
    assert expected <= names
    assert ("branches.pt" in names) == (method == "gtn")
    assert (out_dir / "curves.png").stat().st_size > 10_000
    if method == "gtn":  # honest logging: K paths, whole validation split, the distribution
        import json

        record = json.loads((out_dir / "metrics.jsonl").read_text().splitlines()[-1])
        assert record["val/paths"] == 8
        assert {"val/branch1_acc", "val/full_acc", "val/full_acc_min"} <= set(record)
        assert set(record["sampler/entropy_by_label"]) == set(record["sampler/probs"])
    # the saved teacher is a plain teacher and equals the trained one in the checkpoint
    teacher, meta = load_teacher(out_dir / "teacher.pt")
    assert meta["method"] == method and type(teacher).__name__ == "TeacherNet"
    state = torch.load(out_dir / "last.pt", weights_only=True)["method"]
    trained = build_teacher("tiny", num_classes=10)
    trained.load_state_dict({k[len("teacher."):]: v for k, v in state.items()
                             if k.startswith("teacher.")})
    x = torch.randn(3, 3, 8, 8)
    teacher.eval(), trained.eval()
    assert torch.equal(teacher(x), trained(x))


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_two_processes_train_what_one_process_trains(tmp_path):
    """2 CPU processes (gloo), global batch 16 = 2 x 8, against 1 process with batch 16.

    The teacher has no batch norm: BN statistics are per process under DDP by design."""
    exe = shutil.which("gtn-nas")
    common = [exe, "train-teacher", "--method", "standard", "--teacher", "tiny",
              "--teacher-option", "norm=none", *QUICK]
    one_process = subprocess.Popen(common + ["--out", str(tmp_path / "one")],  # beside it
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(common + ["--devices", "2", "--strategy", "ddp", "--out",
                                    str(tmp_path / "two")], capture_output=True, text=True)
    _, one_err = one_process.communicate(timeout=300)
    assert one_process.returncode == 0, one_err[-2000:]
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Starting with 2 processes" in done.stdout + done.stderr
    one = torch.load(tmp_path / "one" / "teacher.pt", weights_only=True)["state_dict"]
    two = torch.load(tmp_path / "two" / "teacher.pt", weights_only=True)["state_dict"]
    assert one.keys() == two.keys()
    changed = False
    fresh = build_teacher("tiny", num_classes=10, norm="none").state_dict()
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=0, atol=1e-6)
        changed |= not torch.equal(one[key], fresh[key])
    assert changed


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_gtn_scores_its_logged_paths_every_k_epochs_and_after_the_last(capsys, tmp_path):
    """The teacher's accuracy is validated every epoch, the K logged paths every k-th epoch
    and after the last: their passes were most of a GTN epoch's extra time."""
    import json

    out_dir = tmp_path / "gtn"
    code, _, err = run(capsys, "train-teacher", "--method", "gtn", "--teacher", "tiny",
                       "--data", "synthetic", "--epochs", "5", "--batch-size", "16",
                       "--max-steps-per-epoch", "2", "--eval-paths", "2",
                       "--eval-paths-every", "2", "--out", str(out_dir))
    assert code == 0, err
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "val/branch1_acc" in r] == [2, 4, 5]
    assert all("val/acc" in r for r in records)
    assert [r["val/paths"] for r in records] == [0, 2, 0, 2, 2]


@pytest.mark.parametrize("argv, message", [
    (["--teacher", "resnet33"], "unknown teacher 'resnet33' (did you mean: resnet32"),
    (["--method", "gtm"], "method: 'gtm' is not allowed (allowed: standard, sftn, gtn)"),
    (["--schedule", "linear"], "schedule: 'linear' is not allowed"),
    (["--method", "gtn", "--sampler", "greedy"], "unknown sampler 'greedy'"),
    (["--method", "sftn"], "--method sftn needs --student"),
    (["--method", "sftn", "--student", "s_nas_xl"], "unknown preset 's_nas_xl'"),
    (["--method", "standard", "--sampler", "learned"], "--sampler and the cost target are for"),
    (["--method", "standard", "--sandwich"], "--sandwich and --inplace-distill are for"),
    (["--method", "gtn", "--eval-paths", "0"], "eval_paths must be >= 1"),
    (["--method", "gtn", "--eval-paths-every", "0"], "eval_paths_every must be >= 1"),
    (["--method", "gtn", "--path-prior", "flat"], "unknown path prior 'flat'"),
    (["--teacher", "resnet32", "--pretrained"], "has no pretrained weights"),
    (["--method", "gtn", "--warmup-epochs", "5"], "warmup_epochs must be in [0, epochs)"),
    (["--method", "gtn", "--warmup-epochs", "1"], "give --pretrained or --teacher-weights"),
    (["--config", "{tmp}/missing.yaml"], "config file"),
    (["--sync-batchnorm"], "sync_batchnorm needs GPUs"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base = ["train-teacher", "--teacher", "tiny", *QUICK, "--out", str(tmp_path / "run")]
    code, _, err = run(capsys, *base, *argv)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1


def test_existing_runs_are_never_overwritten(capsys, tmp_path):
    out_dir = tmp_path / "run"
    base = ["train-teacher", "--method", "standard", "--teacher", "tiny", *QUICK,
            "--out", str(out_dir)]
    assert run(capsys, *base)[0] == 0
    before = {p.name: _digest(p) for p in out_dir.iterdir()}
    code, _, err = run(capsys, *base)
    assert code == 2 and "already holds a training checkpoint" in err
    code, _, err = run(capsys, *base, "--lr", "0.2", "--resume")
    assert code == 2 and "differs in: run.train.lr" in err
    assert {p.name: _digest(p) for p in out_dir.iterdir()} == before
    # a class count the teacher's weights cannot take
    code, _, err = run(capsys, "train-teacher", "--method", "standard", "--teacher", "tiny",
                       *QUICK, "--data-option", "num_classes=3", "--teacher-weights",
                       str(out_dir / "teacher.pt"), "--out", str(tmp_path / "other"))
    assert code == 2 and "fc.weight" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()


def test_out_that_is_a_file_is_refused_before_training(capsys, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    code, out, err = run(capsys, "train-teacher", "--method", "standard", "--teacher", "tiny",
                         *QUICK, "--out", str(target))
    assert code == 2 and "is a file, not a run directory" in err and "epoch 1" not in out
    assert target.read_text() == "keep me"


@pytest.mark.slow
@pytest.mark.ddp
def test_gtn_with_a_learned_sampler_runs_under_ddp(tmp_path):
    """Unsampled candidates and block-1 logits get no gradient: DDP must allow unused
    parameters. (Both ranks draw the same paths by construction: the path generator is seeded
    from (seed, epoch) only, see test_methods.)"""
    exe = shutil.which("gtn-nas")
    done = subprocess.run([exe, "train-teacher", "--method", "gtn", "--sampler", "learned",
                           "--teacher", "tiny", *QUICK, "--devices", "2", "--strategy", "ddp",
                           "--out", str(tmp_path / "gtn")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(tmp_path / "gtn" / "last.pt", weights_only=True)["method"]
    moved = [v for k, v in state.items() if k.startswith("sampler.logits")]
    assert moved and any(v.abs().max() > 0 for v in moved), "the distribution learned"
