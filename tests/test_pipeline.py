"""``gtn-nas run`` end to end in a temporary directory, on a tiny configuration."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import yaml

from gtn_nas.cli import main

TINY = {
    "data": {"name": "digits", "limit": 300}, "seed": 0,
    "teacher": {"teacher": "tiny", "train": {"epochs": 2, "max_steps_per_epoch": 3,
                                             "batch_size": 32},
                "pretrain_train": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 32}},
    "search": {"hw": ["host_cpu", "jetson"], "budget_evals": 12, "budget_students": 8,
               "halving": {"candidates": 3}},
    "distill": {"train": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 32}},
}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.slow
def test_run_end_to_end_produces_every_artifact_its_report_names(capsys, tmp_path,
                                                                  tiny_config):
    out_dir = tmp_path / "run"
    code, out, err = run(capsys, "run", "--config", str(tiny_config), "--out", str(out_dir))
    assert code == 0, err
    assert "5/5 report" in out and "gain over training alone" in out
    assert "1 epochs standard pre-training, then gtn 2 epochs (the first 1 with the teacher " \
           "frozen)" in out
    report = (out_dir / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    named = re.findall(r"\| (distill/[^ |]+\.onnx) \|", report)
    deployed = re.findall(r"\[(deploy/host_cpu/[sml]\.onnx)\]", report)
    assert linked and len(named) == 9  # s/m/l distilled, alone and with label smoothing
    assert len(deployed) == 3
    for relative in linked + named + deployed:
        assert (out_dir / relative).is_file(), relative
    for tier in ("s", "m", "l"):
        assert (out_dir / "search" / "host_cpu" / "students" / f"{tier}.yaml").is_file()
        for method in ("kd", "none", "ls"):
            assert (out_dir / "distill" / method / tier / "seed0" / "student_best.pt").is_file()
    state = json.loads((out_dir / "run.json").read_text())
    assert set(state["stages"]) == {"teacher", "search", "distill", "deploy", "report"}
    # the pre-trained teacher seeds the GTN teacher; the report shows it beside the students
    assert state["stages"]["teacher"]["pretrain"]["epochs"] == 1
    assert "The teacher's test top-1 is **" in report and "teacher - student" in report
    # deployed: per tier the best method on validation, never below training alone there
    deploy = json.loads((out_dir / "deploy" / "host_cpu" / "deploy.json").read_text())
    for tier, info in deploy["tiers"].items():
        assert info["val_by_method"][info["method"]] >= info["val_by_method"]["none"]
        assert (out_dir / info["checkpoint"]).is_file() and info["export"]["max_abs_diff"] < 1e-3
    search = state["stages"]["search"]["devices"]["host_cpu"]
    picks, budgets = search["picks"], search["budgets"]
    latency = [picks[t]["latency_ms"] for t in ("s", "m", "l")]
    # growing s -> l; a tier equal to the one below only where no trained candidate within its
    # budget cost more (measured latencies decide that here), and then its notes say so
    assert latency == sorted(latency)
    for lower, tier in (("s", "m"), ("m", "l")):
        if picks[tier]["latency_ms"] == picks[lower]["latency_ms"]:
            assert any("the two tiers coincide" in note
                       for note in search["selection"][tier]["notes"]), tier
    for tier, pick in picks.items():  # chosen by trained accuracy, within the tier's budget
        assert pick["latency_ms"] <= budgets[tier]["latency_ms"] and 0 < pick["val_acc"] <= 1
    assert "latency percentiles 25/50/90 of 8 random students on host_cpu" in \
        search["budget_rule"]
    assert (out_dir / search["halving_png"]).is_file()
    assert "Picks chosen by **trained accuracy**" in report
    # --hw jetson (its file's name) is the device jetson_orin_nano: budgets and picks of its
    # own (its estimated latencies), each within its own budget, in the report beside the host
    jetson = state["stages"]["search"]["devices"]["jetson_orin_nano"]
    assert jetson["budgets"] != budgets and "on jetson_orin_nano (estimated)" in \
        jetson["budget_rule"]
    for tier, pick in jetson["picks"].items():
        assert pick["latency_ms"] <= jetson["budgets"][tier]["latency_ms"]
    assert "### host_cpu" in report and "### jetson_orin_nano" in report
    assert (out_dir / "search" / "jetson_orin_nano" / "students" / "s.yaml").is_file()
    # each pick's search trial is its none job: reused, not trained again
    assert state["stages"]["distill"]["reused_trials"] == ["s", "m", "l"]
    for tier in ("s", "m", "l"):
        alone = json.loads((out_dir / "distill" / "none" / tier / "seed0" /
                            "result.json").read_text())
        assert alone["val_acc_last"] == pytest.approx(picks[tier]["val_acc"], abs=1e-6)
    assert "kd - none" in report and "kd - ls" in report and "## What ran" in report

    # a finished run refuses a second start, resumes as a no-op, and rebuilds its report
    code, _, err = run(capsys, "run", "--config", str(tiny_config), "--out", str(out_dir))
    assert code == 2 and "--resume" in err
    code, out, err = run(capsys, "run", "--config", str(tiny_config), "--out", str(out_dir),
                         "--resume")
    assert code == 0, err
    assert "1/5 teacher: finished earlier" in out and "3/5 distill: finished earlier" in out
    assert "4/5 deploy: finished earlier" in out
    (out_dir / "report.md").unlink()
    code, out, err = run(capsys, "report", str(out_dir))
    assert code == 0 and (out_dir / "report.md").read_text() == report
    code, _, err = run(capsys, "run", "--config", str(tiny_config), "--out", str(out_dir),
                       "--resume", "--student-epochs", "2")
    assert code == 2 and "other settings" in err


@pytest.mark.parametrize("config, message", [
    ({"teacher": {"tacher": "tiny"}}, "unknown option 'tacher' (did you mean: teacher?)"),
    ({"search": {"budget_evals": 2}}, "budget_evals must be >= 6"),
    ({"distill": {"method": "none"}}, "distill.method none is a baseline"),
    ({"distill": {"method": "ls"}}, "distill.method ls is a baseline"),
    ({"distill": {"baselines": ["kd"]}}, "distill.baselines: 'kd' is not a teacherless"),
    ({"distill": {"baselines": ["ls"]}}, "distill.baselines must include none"),
    ({"teacher": {"warmup_epochs": 8}}, "teacher.warmup_epochs must be in [0, "),
    ({"distill": {"options": {"beta": 2}}}, "distill: method kd has no option 'beta'"),
    ({"distill": {"baseline_options": {"ls": {"smooth": 0.2}}}}, "has no option 'smooth'"),
    ({"teacher": {"options": {"data": "x"}}}, "unknown teacher-training option 'data'"),
    ({"distill": {"train": {"devices": 2}}}, "distill.train.devices 2: gtn-nas run trains in"),
    ({"distill": {"method": "dkd", "labelled": 250}}, "method dkd needs every image's label"),
    ({"data": {"limit": 300}, "distill": {"labelled": 300}},
     "distill.labelled 300 must be below data.limit 300"),
    ({"limit": 300, "distill": {"labelled": 300}},  # a file from before the data section
     "distill.labelled 300 must be below data.limit 300"),
    ({"limit": 300, "data": {"limit": 200}}, "limit and data.limit are the same option"),
    ({"data": {"name": "digits", "size": 8}}, "data: unknown option 'size'"),
])
def test_bad_run_configs_are_one_line(capsys, tmp_path, config, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = run(capsys, "run", "--config", str(path), "--out", str(tmp_path / "r"))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_partial_train_section_keeps_its_stages_defaults():
    """``--teacher-epochs 4`` (or a YAML ``teacher: {train: {epochs: 4}}``) changes the epochs
    only: the fine-tuning keeps its learning rate 0.01 and cosine schedule, not TrainConfig's
    0.05 and step schedule."""
    from gtn_nas.run.config import RunConfig, load_run_config

    config = load_run_config(None, {"teacher.train.epochs": 4, "distill.train.epochs": 3,
                                    "search.halving.candidates": 5})
    default = RunConfig()
    assert config.teacher.train == dataclasses.replace(default.teacher.train, epochs=4)
    assert config.distill.train == dataclasses.replace(default.distill.train, epochs=3)
    assert config.search.halving == dataclasses.replace(default.search.halving, candidates=5)
    assert config.teacher.pretrain_train == default.teacher.pretrain_train


def test_the_reports_budget_check_allows_the_machines_spread_and_no_more():
    from gtn_nas.run.report import _budget_check

    assert _budget_check(0.10, 0.10, 0.01) == "yes"
    assert _budget_check(0.101, 0.10, 0.01) == "yes (within the noise, +1%)"  # 2% floor
    assert _budget_check(0.104, 0.10, 0.05) == "yes (within the noise, +4%)"
    assert _budget_check(0.104, 0.10, 0.01) == "NO (+4%)"
    assert _budget_check(0.101, 0.10, None) == "NO (+1%)"  # untrusted: no margin
