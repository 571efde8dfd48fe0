"""Distillers (gtn_nas.distill.distillers): losses by hand, a frozen teacher, learning, and the distill
stage (gtn_nas.distill.jobs): save/reload, export, resume, shards and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from gtn_nas.cli import main
from gtn_nas.distill.distillers import build_distiller, student_features
from gtn_nas.config import DataConfig
from gtn_nas.distill.jobs import DistillRunConfig, distill, read_result
from gtn_nas.engine import TrainConfig
from gtn_nas.errors import ConfigError
from gtn_nas.space.plugins import build_space
from gtn_nas.space.students import load_student
from gtn_nas.teacher.zoo import TeacherNet, build_teacher, save_teacher

DIGITS = dict(width_mult=0.25, num_classes=10, input_size=8)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class _Fixed(nn.Module):
    """A 'network' that ignores its input and returns fixed logits (loss checks by hand)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits, dtype=torch.float64))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def _fixed_teacher(logits):
    blocks = [nn.Identity(), nn.Identity(), nn.Identity(), _Fixed(logits)]
    return TeacherNet("fixed", blocks, num_classes=len(logits), in_channels=3)


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_kd_distiller_loss_by_hand():
    z_s, z_t, y = [1.0, -0.5, 2.0], [3.0, 0.0, -1.0], 1
    method = build_distiller("kd", _Fixed(z_s), _fixed_teacher(z_t))
    out = method(torch.zeros(2, 3, 4, 4), torch.tensor([y, y]))
    p_t, p_s = _softmax(np.array(z_t) / 4), _softmax(np.array(z_s) / 4)
    kl = float(np.sum(p_t * (np.log(p_t) - np.log(p_s))))
    ce = -float(np.log(_softmax(np.array(z_s))[y]))
    assert out["loss"].item() == pytest.approx(0.1 * ce + 0.9 * 16 * kl, rel=1e-9)
    out = build_distiller("kd", _Fixed(z_s), _fixed_teacher(z_t),
                          options={"temperature": 1.0, "ce_weight": 1.0, "kd_weight": 0.5})(
        torch.zeros(1, 3, 4, 4), torch.tensor([y]))
    p_t, p_s = _softmax(np.array(z_t)), _softmax(np.array(z_s))
    kl = float(np.sum(p_t * (np.log(p_t) - np.log(p_s))))
    assert out["loss"].item() == pytest.approx(ce + 0.5 * kl, rel=1e-9)


def test_dkd_distiller_warmup_and_decomposition_by_hand():
    z_s, z_t, y = np.array([0.5, 1.5, -1.0, 0.0]), np.array([2.0, 0.5, 0.1, -0.3]), 0
    method = build_distiller("dkd", _Fixed(list(z_s)), _fixed_teacher(list(z_t)),
                             options={"warmup_epochs": 4})
    method.on_epoch_start(0, 10)  # the first epoch: factor 1/4 (mdistiller counts from 1)
    out = method(torch.zeros(1, 3, 4, 4), torch.tensor([y]))
    p_t, p_s = _softmax(z_t / 4), _softmax(z_s / 4)
    b_t, b_s = np.array([p_t[y], 1 - p_t[y]]), np.array([p_s[y], 1 - p_s[y]])
    tckd = float(np.sum(b_t * np.log(b_t / b_s)))
    rest = [c for c in range(4) if c != y]
    q_t, q_s = _softmax(z_t[rest] / 4), _softmax(z_s[rest] / 4)
    nckd = float(np.sum(q_t * np.log(q_t / q_s)))
    ce = -float(np.log(_softmax(z_s)[y]))
    assert out["tckd"].item() == pytest.approx(tckd, rel=1e-7)
    assert out["nckd"].item() == pytest.approx(nckd, rel=1e-7)
    assert out["loss"].item() == pytest.approx(ce + 0.25 * 16 * (tckd + 8 * nckd), rel=1e-7)
    kl = float(np.sum(p_t * np.log(p_t / p_s)))
    assert kl == pytest.approx(tckd + (1 - p_t[y]) * nckd, rel=1e-9)
    method.on_epoch_start(9, 10)
    late = method(torch.zeros(1, 3, 4, 4), torch.tensor([y]))
    assert late["loss"].item() == pytest.approx(ce + 16 * (tckd + 8 * nckd), rel=1e-7)


@pytest.fixture()
def small():
    torch.manual_seed(0)
    space = build_space("resnet_supernet", **DIGITS)
    teacher = build_teacher("tiny", num_classes=10).eval()
    return space, teacher


def test_fitnets_with_a_known_adapter_and_at_by_hand(small):
    space, teacher = small
    student = space.freeze(space.preset("s_nas_m"), seed=0)
    method = build_distiller("fitnets", student, teacher, space.block_units,
                             options={"input_size": 8, "cuts": [2, 3], "weight": 10.0})
    for adapter in method.adapters:  # the adapter outputs exactly zero: hint = mean(f_t^2)
        nn.init.zeros_(adapter[0].weight)
        nn.init.zeros_(adapter[1].bias)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    out = method(x, y)
    with torch.no_grad():
        _, t_feats = teacher.forward_with_features(x)
        logits = student(x)
    hint = (t_feats[1].pow(2).mean() + t_feats[2].pow(2).mean()) / 2
    ce = nn.functional.cross_entropy(logits, y)
    assert out["hint"].item() == pytest.approx(float(hint), rel=1e-5)
    assert out["loss"].item() == pytest.approx(float(ce + 10 * hint), rel=1e-5)

    at = build_distiller("at", student, teacher, space.block_units, options={"input_size": 8})
    out = at(x, y)
    with torch.no_grad():
        _, s_feats = student_features(student, space.block_units, x)
    expected = 0.0
    for f_s, f_t in zip(s_feats, t_feats):
        assert f_s.shape[-2:] == f_t.shape[-2:]
        a_s = f_s.pow(2).mean(1).flatten(1).numpy()
        a_t = f_t.pow(2).mean(1).flatten(1).numpy()
        a_s /= np.linalg.norm(a_s, axis=1, keepdims=True)
        a_t /= np.linalg.norm(a_t, axis=1, keepdims=True)
        expected += float(((a_s - a_t) ** 2).mean())
    assert out["at"].item() == pytest.approx(expected, rel=1e-5)
    assert out["loss"].item() == pytest.approx(float(ce) + 1000 * expected, rel=1e-4)


@pytest.mark.parametrize("method", ["kd", "dkd", "fitnets", "at"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_teacher_gets_no_gradient_and_keeps_its_mode(small, method, mode):
    space, teacher = small
    options = {"input_size": 8} if method in ("fitnets", "at") else {}
    distiller = build_distiller(method, space.freeze(space.preset("s_nas_s"), seed=0), teacher,
                                space.block_units, teacher_mode=mode, options=options)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller.train()
    distiller.on_epoch_start(0, 10)
    assert teacher.training == (mode == "train")
    out = distiller(torch.randn(8, 3, 8, 8), torch.arange(8))
    out["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert {id(p) for g in distiller.param_groups() for p in g["params"]}.isdisjoint(
        {id(p) for p in teacher.parameters()})
    distiller.eval()
    assert not teacher.training
    if mode == "eval":  # eval mode: not even the BN running statistics move
        assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


@pytest.mark.parametrize("method", ["none", "kd", "dkd", "fitnets", "at"])
def test_a_few_steps_lower_the_loss(small, method):
    space, teacher = small
    torch.manual_seed(1)
    options = {"input_size": 8} if method in ("fitnets", "at") else {}
    if method == "dkd":
        options["warmup_epochs"] = 0
    distiller = build_distiller(method, space.freeze(space.preset("s_nas_s"), seed=0), teacher,
                                space.block_units, options=options)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    optimizer = torch.optim.SGD(distiller.param_groups(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(25):
        loss = distiller(x, y)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_bad_methods_and_options(small):
    space, teacher = small
    student = space.freeze(space.preset("s_nas_s"), seed=0)
    with pytest.raises(ConfigError, match="unknown distillation method 'kdd'"):
        build_distiller("kdd", student, teacher)
    with pytest.raises(ConfigError, match="method kd has no option 'beta'"):
        build_distiller("kd", student, teacher, options={"beta": 1})
    with pytest.raises(ConfigError, match="needs a teacher"):
        build_distiller("dkd", student, None)
    with pytest.raises(ConfigError, match="cuts must be"):
        build_distiller("at", student, teacher, space.block_units, options={"cuts": [4]})


# ----------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A tiny teacher trained for one epoch on digits."""
    from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

    folder = tmp_path_factory.mktemp("teacher")
    config = TeacherRunConfig(method="standard", teacher="tiny", data=DataConfig("digits"),
                              train=TrainConfig(epochs=2, progress=False, schedule="constant"))
    return train_teacher(config, folder / "run").teacher_path


def _config(teacher, data: DataConfig | None = None, **kw):
    train = TrainConfig(epochs=2, progress=False, max_steps_per_epoch=4, batch_size=32)
    base = dict(teacher=str(teacher), students=("s_nas_s",), method="kd",
                data=data or DataConfig("digits", limit=400), train=train)
    base.update(kw)
    return DistillRunConfig(**base)


class _Killed(Exception):
    pass


def test_distill_saves_reloads_exports_and_resumes_exactly(teacher_file, tmp_path):
    full = distill(_config(teacher_file), tmp_path / "full")
    run_dir = tmp_path / "full" / "s_nas_s" / "seed0"
    record = read_result(run_dir)
    assert record["epochs"] == 2 and 0.0 <= record["test_acc"] <= 1.0
    assert {"student_last.pt", "student_best.pt", "student.onnx", "curves.png", "last.pt",
            "metrics.jsonl", "result.json"} <= {p.name for p in run_dir.iterdir()}
    assert record["export"]["max_abs_diff"] <= 1e-4
    assert record["export"]["parity_inputs"] == "digits test images"
    assert full.rows[0]["student"] == "s_nas_s" and full.rows[0]["seeds"] == [0]
    # reloaded from student-only files: the same logits as the trained student
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    loaded = load_student(run_dir / "student_last.pt")
    trained = loaded.space.freeze(loaded.sample)
    trained.load_state_dict({k[len("method.student."):]: v
                             for k, v in checkpoint["method"].items()
                             if k.startswith("method.student.")})
    x = torch.randn(5, 3, 8, 8)
    loaded.model.eval(), trained.eval()
    assert torch.equal(loaded.model(x), trained(x))

    # killed after its first epoch, then re-run: the same weights as the uninterrupted run
    def kill(record):
        if record["epoch"] == 1:
            raise _Killed

    with pytest.raises(_Killed):
        distill(_config(teacher_file), tmp_path / "cut", on_epoch_end=kill)
    assert read_result(tmp_path / "cut" / "s_nas_s" / "seed0") is None
    resumed = distill(_config(teacher_file), tmp_path / "cut")
    assert len(resumed.ran) == 1
    a = load_student(run_dir / "student_last.pt").model.state_dict()
    b = load_student(tmp_path / "cut" / "s_nas_s" / "seed0" / "student_last.pt").model \
        .state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "cut").rglob("*.tmp"))
    again = distill(_config(teacher_file), tmp_path / "cut")  # finished: skipped
    assert again.ran == [] and len(again.skipped) == 1


def test_shards_then_report_and_export_cli(teacher_file, tmp_path, capsys):
    base = ["distill", "--teacher", str(teacher_file), "--students", "s_nas_s", "s_nas_m",
            "--data", "digits", "--limit", "400", "--epochs", "1", "--max-steps-per-epoch",
            "2", "--batch-size", "32", "--seeds", "0,1", "--no-export", "--out",
            str(tmp_path / "d")]
    code, out, err = run(capsys, *base, "--shard", "1/2")
    assert code == 0, err
    assert "2 run(s) trained" in out
    code, out, err = run(capsys, *base, "--shard", "2/2")
    assert code == 0, err
    code, out, err = run(capsys, "report", str(tmp_path / "d"))
    assert code == 0, err
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert sorted((r["student"], tuple(r["seeds"])) for r in summary["rows"]) == [
        ("s_nas_m", (0, 1)), ("s_nas_s", (0, 1))]
    assert summary["teacher_test_acc"] is not None
    assert "± " in (tmp_path / "d" / "summary.md").read_text()
    onnx = tmp_path / "m.onnx"
    code, out, err = run(capsys, "export", "--student",
                         str(tmp_path / "d" / "s_nas_m" / "seed1" / "student_best.pt"),
                         "--out", str(onnx), "--dynamic-batch")
    assert code == 0, err
    assert onnx.is_file() and "parity on digits test images" in out and "ONNX Runtime" in out


def test_bad_input_is_one_line_and_exit_2(teacher_file, tmp_path, capsys):
    wrong_classes = save_teacher(tmp_path / "t5.pt", build_teacher("tiny", num_classes=5),
                                 image_size=8)
    empty = tmp_path / "empty"
    empty.mkdir()
    foreign = tmp_path / "foreign.yaml"
    code, _, _ = run(capsys, "space", "sample", "--num-classes", "7", "--input-size", "8",
                     "--width-mult", "0.25", "--out", str(foreign))
    assert code == 0
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    out_file = tmp_path / "a_file"
    out_file.write_text("x")
    base = ["distill", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "o")]
    cases = [
        (["--teacher", str(wrong_classes), "--students", "s_nas_s"], "has 5 classes"),
        (["--teacher", str(teacher_file), "--students", str(empty)], "holds no students"),
        (["--teacher", str(teacher_file), "--students", str(foreign)], "num_classes 7"),
        (["--teacher", str(teacher_file), "--students", "s_nas_q"], "unknown preset"),
        (["--teacher", str(garbage), "--students", "s_nas_s"], "corrupt or unreadable"),
        (["--teacher", str(teacher_file), "--students", "s_nas_s", "--shard", "3/2"],
         "--shard must be K/N"),
        (["--teacher", str(teacher_file), "--students", "s_nas_s", "--seeds", "a,b"],
         "--seeds must be comma-separated"),
        (["--students", "s_nas_s", "--method", "kd"], "needs --teacher"),
        (["--teacher", str(teacher_file), "--students", "s_nas_s", "--method", "kdd"],
         "unknown distillation method"),
        (["--teacher", str(teacher_file), "--students", "s_nas_s", "--option", "tau=[1"],
         "is not valid YAML"),
        (["--teacher", str(teacher_file), "--students", "s_nas_s", "--lr", "nan"],
         "lr must be"),
    ]
    for extra, message in cases:
        code, _, err = run(capsys, *base, *extra)
        assert code == 2, (extra, err)
        assert message in err, (extra, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = run(capsys, "distill", "--teacher", str(teacher_file), "--students",
                       "s_nas_s", "--out", str(out_file))
    assert code == 2 and "is a file" in err
    code, _, err = run(capsys, "export", "--student", str(garbage), "--out",
                       str(tmp_path / "x.onnx"))
    assert code == 2 and "corrupt or unreadable" in err


def test_onnx_mismatch_above_tolerance_is_refused_and_leaves_no_file(small, tmp_path):
    from gtn_nas.space.export import ParityError, export_and_check

    space, _ = small
    student = space.freeze(space.preset("s_nas_s"), seed=0).eval()
    with pytest.raises(ParityError, match="differ by"):
        export_and_check(student, tmp_path / "s.onnx", torch.randn(2, 3, 8, 8), atol=-1.0,
                         time_it=False)
    assert not (tmp_path / "s.onnx").exists()


# ----------------------------------------------------------------------------- ls, views, eval
def test_label_smoothing_loss_by_hand():
    z, y, eps = np.array([1.0, -0.5, 2.0, 0.25]), 2, 0.2
    method = build_distiller("ls", _Fixed(list(z)), None, options={"smoothing": eps})
    out = method(torch.zeros(1, 3, 4, 4), torch.tensor([y]))
    log_p = np.log(_softmax(z))
    target = np.full(4, eps / 4)
    target[y] += 1 - eps
    assert out["loss"].item() == pytest.approx(-float(np.sum(target * log_p)), rel=1e-9)
    assert "teacher_logits" not in out
    # a teacher passed to a teacherless method is dropped, and smoothing 0 is plain CE
    method = build_distiller("ls", _Fixed(list(z)), _fixed_teacher([0.0] * 4),
                             options={"smoothing": 0.0})
    assert method.teacher is None
    out = method(torch.zeros(1, 3, 4, 4), torch.tensor([y]))
    assert out["loss"].item() == pytest.approx(-float(log_p[y]), rel=1e-9)
    with pytest.raises(ConfigError, match="smoothing must be in"):
        build_distiller("ls", _Fixed(list(z)), None, options={"smoothing": 1.0})


class _Spy(nn.Module):
    """Records every input it sees, then applies ``inner``."""

    def __init__(self, inner, seen):
        super().__init__()
        self.inner, self.seen = inner, seen

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


@pytest.mark.parametrize("method", ["kd", "dkd", "fitnets", "at", "gpd"])
def test_teacher_sees_the_students_batch_and_validation_runs_the_student_alone(small, method):
    """Consistent views: the teacher's logits come from exactly the (augmented) batch the
    student trains on; in eval mode no teacher runs (its accuracy is computed once per job)."""
    space, teacher = small
    seen_teacher: list[torch.Tensor] = []
    seen_student: list[torch.Tensor] = []
    teacher.blocks[0] = _Spy(teacher.blocks[0], seen_teacher)
    student = space.freeze(space.preset("s_nas_s"), seed=0)
    first = next(iter(student.named_children()))[0]
    setattr(student, first, _Spy(getattr(student, first), seen_student))
    options = {"input_size": 8} if method in ("fitnets", "at") else {}
    if method == "gpd":
        options = {"branches": []}
    distiller = build_distiller(method, student, teacher, space.block_units, options=options)
    seen_teacher.clear()
    seen_student.clear()
    x = torch.randn(6, 3, 8, 8)
    distiller.train()
    if hasattr(distiller, "on_epoch_start"):
        distiller.on_epoch_start(0, 10)
    out = distiller(x, torch.arange(6))
    assert len(seen_teacher) == 1 and torch.equal(seen_teacher[0], x)
    if method != "gpd":  # gpd runs the student through the dynamic teacher's shared slice
        assert len(seen_student) == 1 and torch.equal(seen_student[0], x)
    assert "teacher_logits" in out
    seen_teacher.clear()
    distiller.eval()
    out = distiller(x, torch.arange(6))
    assert not seen_teacher and set(out) >= {"loss", "logits"} and "teacher_logits" not in out


def test_dkd_warmup_defaults_to_a_twelfth_of_the_run():
    z_s, z_t = [0.5, 1.5, -1.0, 0.0], [2.0, 0.5, 0.1, -0.3]
    method = build_distiller("dkd", _Fixed(z_s), _fixed_teacher(z_t))
    x, y = torch.zeros(1, 3, 4, 4), torch.tensor([0])
    method.on_epoch_start(9, 10)  # 10 epochs: round(10 / 12) = 1, i.e. no warm-up
    full = method(x, y)
    method = build_distiller("dkd", _Fixed(z_s), _fixed_teacher(z_t))
    method.on_epoch_start(0, 240)  # the paper's 20 of 240: epoch 1 gets 1/20
    first = method(x, y)
    ce = first["ce"].item()
    assert first["loss"].item() - ce == pytest.approx((full["loss"].item() - ce) / 20, rel=1e-9)
    method.on_epoch_start(0, 10)
    assert method(x, y)["loss"].item() == pytest.approx(full["loss"].item(), rel=1e-12)
    with pytest.raises(RuntimeError, match="on_epoch_start"):  # a fraction of an unknown run
        build_distiller("dkd", _Fixed(z_s), _fixed_teacher(z_t))(x, y)


def test_guard_names_students_the_teacher_cannot_help(teacher_file, tmp_path, capsys):
    """A baseline student above the teacher's test top-1 is named in one line, in the summary
    and by the CLI; a student below it is not."""
    import json as _json

    baseline = tmp_path / "none"
    distill(_config(None, method="none", students=("s_nas_s", "s_nas_m")), baseline)
    teacher_acc = None
    for name, fake in (("s_nas_s", 1.0), ("s_nas_m", 0.0)):  # plant the students' accuracies
        path = baseline / name / "seed0" / "result.json"
        record = _json.loads(path.read_text())
        record["test_acc_best"] = fake
        path.write_text(_json.dumps(record))
    code, out, err = run(capsys, "distill", "--teacher", str(teacher_file), "--students",
                         "s_nas_s", "s_nas_m", "--data", "digits", "--limit", "400",
                         "--epochs", "1", "--max-steps-per-epoch", "2", "--no-export",
                         "--baseline", str(baseline), "--out", str(tmp_path / "kd"))
    assert code == 0, err
    teacher_acc = _json.loads((tmp_path / "kd" / "teacher.json").read_text())["test_acc"]
    line = (f"this teacher cannot help student s_nas_s: its test top-1 {teacher_acc * 100:.1f}% "
            f"is not above the student's 100.0% trained alone (none)")
    assert line in out and "s_nas_m:" not in out
    summary = _json.loads((tmp_path / "kd" / "summary.json").read_text())
    assert summary["guard"] == [line]
    assert f"**Guard:** {line}." in (tmp_path / "kd" / "summary.md").read_text()
    code, _, err = run(capsys, "distill", "--teacher", str(teacher_file), "--students",
                       "s_nas_s", "--data", "digits", "--baseline", str(tmp_path / "missing"),
                       "--out", str(tmp_path / "kd2"))
    assert code == 2 and "--baseline" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- few labels
def test_partially_labelled_sets_and_the_masked_losses():
    from gtn_nas.data import load_dataset
    from gtn_nas.distill.losses import labelled_cross_entropy
    from gtn_nas.distill.partial_labels import UNLABELLED, partially_labelled

    few, many = (load_dataset("digits", limit=n, seed=0).train for n in (60, 300))
    mixed = partially_labelled(many, few)
    targets = [mixed[i][1] for i in range(len(mixed))]
    assert mixed.num_labelled == 60 and targets.count(UNLABELLED) == 240
    kept = {int(i) for i in few.indices}  # the labelled images are exactly the smaller limit's
    assert {int(many.indices[i]) for i, t in enumerate(targets) if t != UNLABELLED} == kept
    assert all(t == int(many.labels[i]) for i, t in enumerate(targets) if t != UNLABELLED)
    with pytest.raises(ConfigError, match="not all among"):
        partially_labelled(few, many)
    # KD on a half-labelled batch: CE over the labelled rows, KL over every row
    z_s, z_t = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([1, UNLABELLED, 3, UNLABELLED])
    from gtn_nas.distill.losses import kd_loss

    out = kd_loss(z_s, z_t, y)
    ce = torch.nn.functional.cross_entropy(z_s[[0, 2]], y[[0, 2]])
    assert out["ce"].item() == pytest.approx(ce.item(), rel=1e-12)
    assert out["kd"].item() == pytest.approx(kd_loss(z_s, z_t, torch.tensor([1, 0, 3, 0]))[
        "kd"].item(), rel=1e-12)
    none = labelled_cross_entropy(z_s.requires_grad_(), torch.full((4,), UNLABELLED))
    none.backward()
    assert none.item() == 0.0 and torch.equal(z_s.grad, torch.zeros_like(z_s))


def test_labelled_runs_train_baselines_on_the_labels_and_kd_on_every_image(teacher_file,
                                                                           tmp_path, capsys):
    from gtn_nas.distill.jobs import load_splits

    kd = _config(teacher_file, labelled=100)
    assert len(load_splits(kd).train) == 400 and load_splits(kd).train.num_labelled == 100
    alone = _config(None, method="none", labelled=100)
    assert len(load_splits(alone).train) == 100
    distill(kd, tmp_path / "kd")  # trains: train/acc is over the labelled items only
    history = [json.loads(line) for line in
               (tmp_path / "kd" / "s_nas_s" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 <= h["train/acc"] <= 1.0 and np.isfinite(h["train/loss"]) for h in history)
    for bad, message in ((dict(method="dkd"), "method dkd needs every image's label"),
                         (dict(labelled=400), "must be below --limit"),
                         (dict(labelled=0), "--labelled must be a positive")):
        with pytest.raises(ConfigError, match=message):
            _config(teacher_file, **{"labelled": 100, **bad}).validate()


def test_labelled_is_refused_on_datasets_read_from_files(tmp_path):
    """ImageFolder items are numbered per load, not by source position: matching them would
    label other images than the baseline's, so --labelled refuses such data in one line."""
    from tests.conftest import image_tree
    from gtn_nas.distill.jobs import load_splits

    image_tree(tmp_path / "images", {"train": 8, "val": 2})
    config = _config(None, data=DataConfig("imagefolder", root=str(tmp_path / "images"),
                                           limit=12, image_size=8), labelled=6)
    with pytest.raises(ConfigError, match="--labelled needs an in-memory dataset"):
        load_splits(config)


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_distill_trains_its_one_job_in_two_processes_and_refuses_several(teacher_file,
                                                                            tmp_path, capsys):
    """Lightning starts the second rank by running the command again: that rank must train
    the job rank 0 trains (it holds the job's lock), not skip it as busy and hang rank 0. A
    command with several jobs to train is refused in one line (one launch per command)."""
    import shutil
    import subprocess

    base = ["distill", "--teacher", str(teacher_file), "--students", "s_nas_s", "s_nas_m",
            "--data", "digits", "--limit", "400", "--epochs", "1", "--max-steps-per-epoch",
            "2", "--batch-size", "32", "--seeds", "0", "--no-export", "--devices", "2",
            "--strategy", "ddp", "--out", str(tmp_path / "d")]
    code, _, err = run(capsys, *base)
    assert code == 2 and "trains one job per command" in err and "--shard k/2" in err, err
    assert len(err.strip().splitlines()) == 1
    done = subprocess.run([shutil.which("gtn-nas"), *base, "--shard", "2/2"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Starting with 2 processes" in done.stdout + done.stderr
    assert "running in another process" not in done.stdout
    assert done.stdout.count("1 run(s) trained") == 1, "rank 0 reports, the other rank does not"
    assert read_result(tmp_path / "d" / "s_nas_m" / "seed0")["method"] == "kd"
    assert read_result(tmp_path / "d" / "s_nas_s" / "seed0") is None
