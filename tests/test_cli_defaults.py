"""Each command's --help says its defaults where they differ from `gtn-nas run`'s, and the
numbers it says are the ones the code uses (issue 28, item 4)."""

from __future__ import annotations

import pytest

from gtn_nas.cli import main


def _help(capsys, monkeypatch, *command: str) -> str:
    monkeypatch.setenv("COLUMNS", "2000")  # one line per option: phrases are not wrapped
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def _option(text: str, flag: str) -> str:
    """The help of ``flag``: its line and the lines indented under it, joined."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(flag + " ")
                 or line.strip() == flag)
    block = [lines[start]]
    for line in lines[start + 1:]:
        if line.lstrip().startswith("-") or not line.startswith(" " * 6):
            break
        block.append(line)
    return " ".join(" ".join(block).split())


def test_help_numbers_are_the_defaults_in_use(capsys, monkeypatch):
    from gtn_nas.distill.jobs import DistillRunConfig, student_recipe
    from gtn_nas.engine import TrainConfig
    from gtn_nas.run.config import RunConfig
    from gtn_nas.teacher.train import TeacherRunConfig

    run, teacher, student = RunConfig(), TeacherRunConfig(), student_recipe()
    assert DistillRunConfig().train == student and teacher.train == TrainConfig()

    text = _help(capsys, monkeypatch, "train-teacher")
    assert (f"default: {teacher.train.epochs}, the papers' recipe; `gtn-nas run` pre-trains "
            f"its teacher {run.teacher.pretrain_train.epochs} epochs, then fine-tunes it "
            f"{run.teacher.train.epochs}") in _option(text, "--epochs")
    assert f"default: {teacher.train.lr:g}; `gtn-nas run` fine-tunes at " \
           f"{run.teacher.train.lr:g}" in _option(text, "--lr")
    assert f"(default: {teacher.train.batch_size})" in _option(text, "--batch-size")
    assert "step (default)" in _option(text, "--schedule") and teacher.train.schedule == "step"
    assert "scaled to --epochs, e.g. 9 11 13 for 15" in _option(text, "--milestones")
    assert f"default: {teacher.teacher};" in _option(text, "--teacher")

    text = _help(capsys, monkeypatch, "distill")
    assert (f"default: {student.epochs}, the GTN supplement's recipe; `gtn-nas run` trains "
            f"its students {run.distill.train.epochs})") in _option(text, "--epochs")
    assert f"cosine (default, as in `gtn-nas run`)" in _option(text, "--schedule")
    assert student.schedule == run.distill.train.schedule == "cosine"
    kd = run.distill.recipes["kd"]
    assert (f"not to `gtn-nas run`'s short-schedule recipes (kd: T = {kd['temperature']:g}, "
            f"CE {kd['ce_weight']:g}, KD {kd['kd_weight']:g}; dkd: beta "
            f"{run.distill.recipes['dkd']['beta']:g})") in _option(text, "--method")

    text = _help(capsys, monkeypatch, "run")
    assert (f"(default: {run.teacher.train.epochs}, after {run.teacher.pretrain_train.epochs} "
            f"epochs of standard pre-training; `gtn-nas train-teacher` trains "
            f"{teacher.train.epochs})") in _option(text, "--teacher-epochs")
    assert (f"(default: {run.distill.train.epochs}; `gtn-nas distill` trains "
            f"{student.epochs})") in _option(text, "--student-epochs")
    assert f"(default: {run.search.budget_evals}; `gtn-nas search` evaluates 600)" \
        in _option(text, "--budget-evals")
    search = _help(capsys, monkeypatch, "search")
    assert "(default: 600" in _option(search, "--budget-evals")


def test_download_and_data_root_help_name_the_cache(capsys, monkeypatch):
    for command in ("train-teacher", "distill", "run"):
        text = _help(capsys, monkeypatch, command)
        assert "$XDG_CACHE_HOME/gtn-nas/data" in _option(text, "--download")
        assert "Debian's package for fashion-mnist" in _option(text, "--data-root")
