"""Every error path of the command line is one line on stderr and exit 2, and leaves nothing
behind that a later run would trust (issue 8, item 5).

Cases: malformed option values, output paths that are files, under a file or in a read-only
folder, non-finite numbers (lr, alpha, budgets, method options: nan, inf), empty or mismatched
data folders, and teachers of another class count or space. Each case runs ``gtn-nas`` in
process (``gtn_nas.cli.main``) and then checks its output path for files a later run would
trust: checkpoints, results, summaries, a run record with finished stages, exports, or
temporaries.

Read-only folders: these tests run as root, for whom a mode-0555 folder is still writable, so
"read-only" is a folder made immutable with ``chattr +i`` (skipped where chattr does not work);
a path under a regular file (``somefile/out``) is the portable unwritable output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gtn_nas.cli import main
from tests.conftest import image_tree

TRAIN = ["--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "32", "--limit", "300"]
TEACHER = ["train-teacher", "--teacher", "tiny", "--method", "standard", "--data", "digits",
           *TRAIN]
DISTILL = ["distill", "--teacher", "{teacher}", "--students", "s_nas_s", "--data", "digits",
           "--no-export", *TRAIN]
SEARCH = ["search", "--hw", "host_cpu", "--budget-evals", "6", "--latency-mode", "estimate",
          "--input-size", "8"]
# Files a later run trusts: a run directory holding any of them is not "nothing written".
TRUSTED = ("last.pt", "teacher.pt", "branches.pt", "result.json", "summary.json",
           "student_last.pt", "student_best.pt", "candidates.json", "report.md")


def _immutable_folder(path: Path) -> Path | None:
    """``path`` made immutable with ``chattr +i`` (root cannot write into it), or None."""
    path.mkdir()
    if shutil.which("chattr") is None:
        return None
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if done.returncode != 0:
        return None
    try:
        (path / "probe").write_text("x")
    except OSError:
        return path
    (path / "probe").unlink()
    subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    return None


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The inputs the cases name: teachers, a GTN run, a student, data folders, a profile."""
    from gtn_nas.config import DataConfig
    from gtn_nas.engine import TrainConfig
    from gtn_nas.space.plugins import build_space
    from gtn_nas.space.students import save_student
    from gtn_nas.teacher.zoo import build_teacher, save_teacher
    from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

    root = tmp_path_factory.mktemp("inputs")
    made: dict[str, Path] = {"root": root}
    made["teacher"] = save_teacher(root / "t10" / "teacher.pt",
                                   build_teacher("tiny", num_classes=10), image_size=8)
    made["t5"] = save_teacher(root / "t5" / "teacher.pt", build_teacher("tiny", num_classes=5),
                              image_size=8)
    import torch

    torch.save(build_teacher("tiny", num_classes=5).state_dict(), root / "w5.pt")
    made["w5"] = root / "w5.pt"
    made["gtn"] = train_teacher(TeacherRunConfig(
        teacher="tiny", data=DataConfig("digits", limit=300), eval_paths=1,
        eval_recalibration_batches=0,
        train=TrainConfig(epochs=1, max_steps_per_epoch=1, batch_size=32, progress=False)),
        root / "gtn").teacher_path
    space = build_space("resnet_supernet", num_classes=10, input_size=8, width_mult=0.25)
    made["student"] = save_student(root / "student_best.pt",
                                   space.freeze(space.preset("s_nas_s"), seed=0), space,
                                   space.preset("s_nas_s"))
    # students of a wrong type: a number, a float, a bool, a list where a choice goes; a list
    # or a CSV where a mapping goes
    for name, text in {"op_number": "layer1/op: 3\n",
                       "kernel_float": "layer1/op: resblock\nlayer1/kernel: 3.5\n",
                       "depth_bool": "layer1/op: resblock\nlayer1/depth: true\n",
                       "op_list": "layer1/op: [resblock]\n",
                       "top_list": "- layer1/op\n- resblock\n"}.items():
        made[f"student_{name}"] = root / f"{name}.yaml"
        made[f"student_{name}"].write_text(text)
    made["student_csv"] = root / "students.csv"
    made["student_csv"].write_text("layer1/op,layer1/kernel\nresblock,3\n")
    made["file"] = root / "a_file"
    made["file"].write_text("not a folder\n")
    (root / "empty").mkdir()
    made["empty"] = root / "empty"
    (root / "no_images" / "train" / "cat").mkdir(parents=True)
    (root / "no_images" / "train" / "dog").mkdir(parents=True)
    made["no_images"] = root / "no_images"
    image_tree(root / "mismatch", {"train": 3})
    image_tree(root / "mismatch", {"val": 2}, classes=("cat", "dog", "owl"))
    made["mismatch"] = root / "mismatch"
    profile = yaml.safe_load((Path(__file__).resolve().parents[1] / "hw_profiles" /
                              "host_cpu.yaml").read_text())
    profile["name"] = "nan_budget"
    profile["budgets"] = {"s": {"mflops": float("nan")}, "m": {"mflops": 1.0},
                          "l": {"mflops": 2.0}}
    profile.pop("latency_table", None)
    made["nan_profile"] = root / "nan_budget.yaml"
    made["nan_profile"].write_text(yaml.safe_dump(profile))
    made["inf_run"] = root / "inf_run.yaml"
    made["inf_run"].write_text(yaml.safe_dump({"teacher": {"alpha": float("inf")}}))
    made["nan_lr_run"] = root / "nan_lr_run.yaml"
    made["nan_lr_run"].write_text(yaml.safe_dump({"distill": {"train": {"lr": float("nan")}}}))
    made["ro"] = _immutable_folder(root / "readonly")
    yield made
    if made["ro"] is not None:
        subprocess.run(["chattr", "-i", str(made["ro"])], capture_output=True)


CASES = [
    # ---- malformed option values
    ("teacher-option-yaml", [*TEACHER, "--teacher-option", "norm=[x", "--out", "{out}"],
     "is not valid YAML"),
    ("teacher-option-no-equals", [*TEACHER, "--teacher-option", "norm", "--out", "{out}"],
     "expected KEY=VALUE"),
    ("teacher-option-unknown", [*TEACHER, "--teacher-option", "width=2", "--out", "{out}"],
     "has no option 'width'"),
    ("data-option-yaml", [*TEACHER, "--data-option", "x=[1", "--out", "{out}"],
     "is not valid YAML"),
    ("schedule-unknown", [*TEACHER, "--schedule", "linear", "--out", "{out}"],
     "'linear' is not allowed"),
    pytest.param("epochs-not-an-integer", [*TEACHER, "--epochs", "two", "--out", "{out}"],
                 "invalid int value", id="epochs-not-an-integer"),
    ("distill-seeds", [*DISTILL, "--seeds", "0,,x", "--out", "{out}"],
     "--seeds must be comma-separated"),
    ("distill-shard", [*DISTILL, "--shard", "0/2", "--out", "{out}"], "--shard must be K/N"),
    ("distill-option-unknown", [*DISTILL, "--option", "tau=2", "--out", "{out}"],
     "has no option 'tau'"),
    ("distill-option-yaml", [*DISTILL, "--option", "temperature=[2", "--out", "{out}"],
     "is not valid YAML"),
    ("run-seeds", ["run", "--seeds", "x", "--out", "{out}"], "--seeds must be"),
    ("run-hw-unknown", ["run", "--hw", "no_such_device", "--out", "{out}"], "no_such_device"),
    # ---- output paths that are files, under a file, or read-only
    ("teacher-out-is-file", [*TEACHER, "--out", "{file}"], "is a file"),
    ("teacher-out-under-file", [*TEACHER, "--out", "{file}/out"], "{file}"),
    ("teacher-out-read-only", [*TEACHER, "--out", "{ro}/out"], "{ro}/out"),
    ("distill-out-is-file", [*DISTILL, "--out", "{file}"], "is a file"),
    ("distill-out-under-file", [*DISTILL, "--out", "{file}/out"], "{file}"),
    ("distill-out-read-only", [*DISTILL, "--out", "{ro}/out"], "{ro}/out"),
    ("run-out-is-file", ["run", "--out", "{file}"], "is a file"),
    ("run-out-under-file", ["run", "--out", "{file}/out"], "{file}"),
    ("run-out-read-only", ["run", "--out", "{ro}/out"], "{ro}/out"),
    ("search-out-is-file", [*SEARCH, "--out", "{file}"], "is a file"),
    ("search-out-under-file", [*SEARCH, "--out", "{file}/out"], "{file}"),
    ("search-out-read-only", [*SEARCH, "--out", "{ro}/out"], "{ro}/out"),
    ("export-out-under-file", ["export", "--student", "{student}", "--out", "{file}/s.onnx"],
     "{file}"),
    ("sample-out-under-file", ["space", "sample", "--out", "{file}/s.yaml"], "{file}"),
    # ---- non-finite numbers
    ("teacher-lr-nan", [*TEACHER, "--lr", "nan", "--out", "{out}"], "lr must be a finite"),
    ("teacher-lr-inf", [*TEACHER, "--lr", "inf", "--out", "{out}"], "lr must be a finite"),
    ("teacher-alpha-nan", [*TEACHER[:-len(TRAIN)], "--method", "gtn", *TRAIN, "--alpha", "nan",
                           "--out", "{out}"], "alpha must be a finite number"),
    ("teacher-alpha-inf", [*TEACHER, "--alpha", "inf", "--out", "{out}"],
     "alpha must be a finite number"),
    ("teacher-cost-target-inf", [*TEACHER, "--cost-target-mflops", "inf", "--out", "{out}"],
     "cost_target_mflops must be a finite number"),
    ("teacher-width-nan", [*TEACHER, "--width-mult", "nan", "--out", "{out}"],
     "width_mult must be a finite number"),
    ("distill-lr-inf", [*DISTILL, "--lr", "inf", "--out", "{out}"], "lr must be a finite"),
    ("distill-temperature-inf", [*DISTILL, "--option", "temperature=.inf", "--out", "{out}"],
     "temperature must be a finite number"),
    ("distill-kd-weight-nan", [*DISTILL, "--option", "kd_weight=.nan", "--out", "{out}"],
     "kd_weight must be a finite number"),
    ("run-alpha-inf", ["run", "--config", "{inf_run}", "--out", "{out}"],
     "alpha must be a finite number"),
    ("run-lr-nan", ["run", "--config", "{nan_lr_run}", "--out", "{out}"],
     "lr must be a finite number"),
    ("search-budget-nan", ["search", "--hw", "{nan_profile}", "--budget-evals", "6",
                           "--latency-mode", "estimate", "--out", "{out}"],
     "budgets.s.mflops: must be a finite number"),
    ("run-budget-nan", ["run", "--hw", "{nan_profile}", "--out", "{out}"],
     "budgets.s.mflops: must be a finite number"),
    # ---- empty or mismatched data folders
    ("imagefolder-empty", ["train-teacher", "--teacher", "tiny", "--data", "imagefolder",
                           "--data-root", "{empty}", "--out", "{out}"], "imagefolder"),
    ("imagefolder-no-images", ["train-teacher", "--teacher", "tiny", "--data", "imagefolder",
                               "--data-root", "{no_images}", "--out", "{out}"], "imagefolder"),
    ("imagefolder-mismatch", ["train-teacher", "--teacher", "tiny", "--data", "imagefolder",
                              "--data-root", "{mismatch}", "--out", "{out}"],
     "class folders differ"),
    ("distill-imagefolder-mismatch", ["distill", "--teacher", "{teacher}", "--students",
                                      "s_nas_s", "--data", "imagefolder", "--data-root",
                                      "{mismatch}", "--out", "{out}"], "class folders differ"),
    ("run-imagefolder-empty", ["run", "--data", "imagefolder", "--data-root", "{empty}",
                               "--out", "{out}"], "imagefolder"),
    ("fashion-empty-root", [*TEACHER, "--data", "fashion-mnist", "--data-root", "{empty}",
                            "--out", "{out}"], "fashion-mnist"),
    # ---- students of a wrong type (checked before any training)
    *[(f"distill-student-{kind}", [*DISTILL[:4], "{student_%s}" % kind, *DISTILL[5:],
                                    "--out", "{out}"], "{student_%s}: %s" % (kind, message))
      for kind, message in (("op_number", "layer1/op: 3 is not allowed"),
                            ("kernel_float", "layer1/kernel: 3.5 is not allowed"),
                            ("depth_bool", "layer1/depth: True is not allowed"),
                            ("op_list", "layer1/op: ['resblock'] is not allowed"),
                            ("top_list", "expected a mapping label -> value, got list"),
                            ("csv", "expected a mapping label -> value, got str"))],
    # ---- a teacher of another class count or space
    ("distill-teacher-5-classes", [*DISTILL[:2], "{t5}", *DISTILL[3:], "--out", "{out}"],
     "has 5 classes"),
    ("teacher-weights-5-classes", [*TEACHER, "--teacher-weights", "{w5}", "--out", "{out}"],
     "{w5}"),
    ("search-teacher-other-space", [*SEARCH, "--teacher", "{gtn}", "--space", "mbconv",
                                    "--out", "{out}"], "does not match the teacher's space"),
    ("search-teacher-not-gtn", [*SEARCH, "--teacher", "{teacher}", "--out", "{out}"],
     "no branches.pt"),
]


def _fill(text: str, files: dict, out: Path) -> str:
    values = {k: str(v) for k, v in files.items() if v is not None}
    values["out"] = str(out)
    return text.format(**values)


def trusted_leftovers(path: Path) -> list[str]:
    """Files under ``path`` that a later run would trust (see :data:`TRUSTED`), temporaries,
    and a run record claiming finished stages."""
    if not path.is_dir():
        return []
    found = [str(p.relative_to(path)) for p in path.rglob("*")
             if p.name in TRUSTED or p.suffix == ".onnx" or p.name.endswith(".tmp")]
    record = path / "run.json"
    if record.is_file() and json.loads(record.read_text()).get("stages"):
        found.append("run.json with finished stages")
    return found


@pytest.mark.parametrize("name, argv, message", [
    case if hasattr(case, "marks") else pytest.param(*case, id=case[0]) for case in CASES])
def test_error_is_one_line_exit_2_and_leaves_nothing_trusted(files, tmp_path, capsys, name,
                                                              argv, message):
    if any("{ro}" in a for a in argv) and files["ro"] is None:
        pytest.skip("no immutable folder here (chattr +i does not work)")
    out = tmp_path / "out"
    argv = [_fill(a, files, out) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits by itself
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (name, code, err)
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and err.startswith("gtn-nas: error: "), err
    assert _fill(message, files, out) in err, err
    for path in {out, files["root"] / "readonly", files["file"]}:
        assert not trusted_leftovers(path), (name, trusted_leftovers(path))
