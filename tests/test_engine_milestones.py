"""Step milestones that scale with the run (issue 28, item 4): ``milestones: null`` places the
papers' 150/180/210 of 240 at the same fractions of any run; explicit ones are kept and must
act inside the run; runs started under the former fixed default still resume."""

from __future__ import annotations

import json

import pytest
import yaml

from gtn_nas.cli import main
from gtn_nas.data import load_dataset
from gtn_nas.engine import TrainConfig, config_digest, fit, scaled_milestones
from gtn_nas.errors import ConfigError
from gtn_nas.teacher.methods.standard import StandardMethod
from gtn_nas.teacher.zoo import build_teacher


def test_unset_milestones_are_the_papers_fractions_of_the_run():
    assert TrainConfig().milestones is None
    assert TrainConfig().resolved_milestones() == (150, 180, 210)
    assert TrainConfig(epochs=15).resolved_milestones() == (9, 11, 13)
    assert TrainConfig(epochs=30).resolved_milestones() == (18, 22, 26)
    assert scaled_milestones(1) == (1, 1, 1)  # never earlier than after the first epoch
    assert TrainConfig(epochs=15, milestones=(5, 10)).resolved_milestones() == (5, 10)


def test_fifteen_epochs_step_the_learning_rate(tmp_path):
    data = load_dataset("synthetic", seed=0, num_examples=64, size=8)
    method = StandardMethod(build_teacher("tiny", num_classes=10))
    config = TrainConfig(epochs=15, batch_size=16, max_steps_per_epoch=1, progress=False)
    result = fit(method, data.train, data.val, config, tmp_path)
    lrs = [record["lr"] for record in result.history]
    expected = [0.05] * 9 + [0.005] * 2 + [0.0005] * 2 + [0.00005] * 2
    assert lrs == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("milestones, epochs", [((150, 180, 210), 15), ((5, 15), 15),
                                                 ((0, 5), 15)])
def test_explicit_milestones_outside_the_run_are_one_line(milestones, epochs):
    config = TrainConfig(epochs=epochs, milestones=milestones)
    with pytest.raises(ConfigError) as info:
        config.validate()
    shown = ", ".join(map(str, milestones))
    assert str(info.value) == (
        f"training config: milestones {shown} do not fit a run of 15 epochs (the step after "
        f"epoch m acts from epoch m + 1, so each must be in 1..14); leave milestones unset to "
        f"scale the papers' 150/180/210 of 240 to this run (9, 11, 13), or give --milestones "
        f"inside the run")


def test_milestones_a_schedule_does_not_use_are_not_checked():
    TrainConfig(epochs=15, schedule="cosine", milestones=(150, 180, 210)).validate()
    TrainConfig(epochs=15, milestones=(9, 14)).validate()


def test_runs_started_under_the_fixed_default_keep_their_digest():
    """The former default was milestones (150, 180, 210) for every run: a run whose schedule
    is unchanged by the new default resumes; a short step run, whose schedule changed, not."""
    def digest(**kw):
        return config_digest({"train": TrainConfig(**kw)})

    legacy = (150, 180, 210)
    assert digest(epochs=30, schedule="cosine") == digest(epochs=30, schedule="cosine",
                                                          milestones=legacy)
    assert digest(epochs=6, schedule="constant") == digest(epochs=6, schedule="constant",
                                                           milestones=legacy)
    assert digest(epochs=240) == digest(epochs=240, milestones=legacy)
    assert digest(epochs=15) != digest(epochs=15, milestones=legacy)
    assert digest(epochs=15) == digest(epochs=15, milestones=(9, 11, 13))


def test_train_teacher_at_fifteen_epochs_steps_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train-teacher", "--method", "standard", "--teacher", "tiny", "--data",
                 "synthetic", "--data-option", "num_examples=64", "--epochs", "15",
                 "--batch-size", "16", "--max-steps-per-epoch", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.05] * 9 + [0.005] * 2 + [0.0005] * 2 + [0.00005] * 2)
    text = (out / "config.yaml").read_text()
    assert yaml.safe_load(text)["train"]["milestones"] is None  # a copy scales them again
    assert text.endswith("# train.milestones null = x0.1 after epochs 9, 11, 13 of 15 "
                         "(the papers' 150/180/210 of 240, scaled)\n")
    assert yaml.safe_load(text)["train"]["epochs"] == 15


def test_train_teacher_refuses_milestones_beyond_its_epochs(tmp_path, capsys):
    code = main(["train-teacher", "--method", "standard", "--teacher", "tiny", "--data",
                 "synthetic", "--epochs", "15", "--milestones", "150", "180", "210",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("gtn-nas: error: training config: milestones 150, 180, 210 do not "
                          "fit a run of 15 epochs")
    assert not (tmp_path / "run" / "last.pt").exists()
