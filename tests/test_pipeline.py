"""``gtn-nas run`` end to end in a temporary directory, on a tiny configuration."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from gtn_nas.cli import main

TINY = {
    "data": "digits", "limit": 300, "seed": 0,
    "teacher": {"teacher": "tiny", "train": {"epochs": 1, "max_steps_per_epoch": 3,
                                             "batch_size": 32}},
    "search": {"budget_evals": 12},
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


def test_run_end_to_end_produces_every_artifact_its_report_names(capsys, tmp_path,
                                                                  tiny_config):
    out_dir = tmp_path / "run"
    code, out, err = run(capsys, "run", "--config", str(tiny_config), "--out", str(out_dir))
    assert code == 0, err
    assert "4/4 report" in out and "gain over no teacher" in out
    report = (out_dir / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    named = re.findall(r"\| (distill/[^ |]+\.onnx) \|", report)
    assert linked and len(named) == 6  # s/m/l distilled and s/m/l without a teacher
    for relative in linked + named:
        assert (out_dir / relative).is_file(), relative
    for tier in ("s", "m", "l"):
        assert (out_dir / "search" / "host_cpu" / "students" / f"{tier}.yaml").is_file()
        for method in ("kd", "none"):
            assert (out_dir / "distill" / method / tier / "seed0" / "student_best.pt").is_file()
    state = json.loads((out_dir / "run.json").read_text())
    assert set(state["stages"]) == {"teacher", "search", "distill", "report"}
    picks = state["stages"]["search"]["devices"]["host_cpu"]["picks"]
    mflops = [picks[t]["mflops"] for t in ("s", "m", "l")]
    assert mflops == sorted(mflops) and len(set(mflops)) == 3  # distinct, growing s -> l
    assert "gain (points)" in report and "## What ran" in report

    # a finished run refuses a second start, resumes as a no-op, and rebuilds its report
    code, _, err = run(capsys, "run", "--config", str(tiny_config), "--out", str(out_dir))
    assert code == 2 and "--resume" in err
    code, out, err = run(capsys, "run", "--config", str(tiny_config), "--out", str(out_dir),
                         "--resume")
    assert code == 0, err
    assert "1/4 teacher: finished earlier" in out and "3/4 distill: finished earlier" in out
    (out_dir / "report.md").unlink()
    code, out, err = run(capsys, "report", str(out_dir))
    assert code == 0 and (out_dir / "report.md").read_text() == report
    code, _, err = run(capsys, "run", "--config", str(tiny_config), "--out", str(out_dir),
                       "--resume", "--student-epochs", "2")
    assert code == 2 and "other settings" in err


@pytest.mark.parametrize("config, message", [
    ({"teacher": {"tacher": "tiny"}}, "unknown option 'tacher' (did you mean: teacher?)"),
    ({"search": {"budget_evals": 2}}, "budget_evals must be >= 6"),
    ({"distill": {"method": "none"}}, "distill.method none is the baseline"),
    ({"teacher": {"options": {"data": "x"}}}, "unknown teacher-training option 'data'"),
])
def test_bad_run_configs_are_one_line(capsys, tmp_path, config, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = run(capsys, "run", "--config", str(path), "--out", str(tmp_path / "r"))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
