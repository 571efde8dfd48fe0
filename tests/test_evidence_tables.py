"""The evidence study's tables (bench/evidence_tables.py) on results with planted answers."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import evidence  # noqa: E402
import evidence_tables as tables  # noqa: E402

STUDENTS = ("s", "m", "l", "random00")
SEEDS = (0, 1, 2)
SCALE = {"limit": 300, "image_size": 16, "teacher": "resnet32", "teacher_epochs": 1,
         "student_epochs": 1, "seeds": list(SEEDS), "random_students": 1, "proxy_students": 6,
         "batch_size": 64, "methods": ["kd"], "samplers": ["uniform"]}


def accuracy(teacher: str, student: str, seed: int) -> float:
    """Planted: GTN = standard + 2 points on every pair, SFTN = standard - 1, baseline + 0.5,
    label smoothing + 0.8; the seed moves every teacher alike (exact paired differences)."""
    base = 0.70 + 0.01 * STUDENTS.index(student) + 0.003 * seed
    return base + {"standard": 0.0, "gtn-uniform": 0.02, "sftn": -0.01, "baseline": 0.005,
                   "ls": 0.008}[teacher]


def write_result(out: Path, teacher_dir: str, method: str, student: str, seed: int,
                 acc: float) -> None:
    folder = out / "distill" / teacher_dir / method / student / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "student": student, "seed": seed, "method": method, "test_acc": acc,
        "params": 1000 * (1 + STUDENTS.index(student)), "mflops": 1.5, "seconds": 3.0}))


@pytest.fixture()
def study(tmp_path):
    for student in STUDENTS:
        for seed in SEEDS:
            for teacher in ("standard", "gtn-uniform"):
                write_result(tmp_path, teacher, "kd", student, seed,
                             accuracy(teacher, student, seed))
            write_result(tmp_path, f"sftn-{student}", "kd", student, seed,
                         accuracy("sftn", student, seed))
            write_result(tmp_path, "baseline", "none", student, seed,
                         accuracy("baseline", student, seed))
            write_result(tmp_path, "ls", "ls", student, seed, accuracy("ls", student, seed))
    return tmp_path


def test_paired_differences_recover_the_planted_effects(study):
    rows = tables.distill_results(study)
    assert len(rows) == 5 * len(STUDENTS) * len(SEEDS)
    assert {r["teacher"] for r in rows} == {"standard", "gtn-uniform", "sftn", "baseline", "ls"}
    lines, summary = tables.study_tables(rows, ["kd"])
    deltas = summary["deltas"]["kd"]
    pairs = len(STUDENTS) * len(SEEDS)
    assert deltas["gtn-uniform - standard"]["mean"] == pytest.approx(2.0)
    assert deltas["gtn-uniform - standard"]["ci"] == pytest.approx([2.0, 2.0])
    assert deltas["gtn-uniform - standard"]["won"] == pairs
    assert deltas["sftn - standard"]["mean"] == pytest.approx(-1.0)
    assert deltas["sftn - standard"]["won"] == 0
    assert deltas["gtn-uniform - sftn"]["mean"] == pytest.approx(3.0)
    assert deltas["gtn-uniform - baseline"]["mean"] == pytest.approx(1.5)
    assert deltas["gtn-uniform - ls"]["mean"] == pytest.approx(1.2)
    assert deltas["ls - baseline"]["mean"] == pytest.approx(0.3)
    assert deltas["gtn-uniform - standard"]["detectable"] == "0.00"  # exact pairs: no noise
    pool = summary["pool"]["kd"]
    expected = np.mean([accuracy("standard", s, seed) for s in STUDENTS for seed in SEEDS])
    assert pool["standard"] == pytest.approx(expected)
    assert pool["gtn-uniform"] - pool["standard"] == pytest.approx(0.02)
    assert any(line.startswith("| **pool mean** |") for line in lines)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_data():
    rng = np.random.default_rng(1)
    few, many = rng.normal(1.0, 1.0, 10), rng.normal(1.0, 1.0, 1000)
    low, high = tables.bootstrap_ci(few)
    assert low < few.mean() < high
    low_many, high_many = tables.bootstrap_ci(many)
    assert high_many - low_many < (high - low) / 3
    assert low_many < 1.0 < high_many
    assert np.isnan(tables.bootstrap_ci([1.0])[0])


@pytest.mark.slow
def test_proxy_ranking_finds_the_score_planted_to_rank(tmp_path):
    acc = np.linspace(0.5, 0.9, 12)
    rng = np.random.default_rng(0)
    rows = []
    for i, a in enumerate(acc):
        rows.append({"student": f"p{i:02d}", "params": float(a * 1000),  # monotone: rho = 1
                     "noise": float(rng.normal()), "reverse": float(-a)})
        folder = tmp_path / "proxy" / "distill" / f"p{i:02d}" / "seed0"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({"student": f"p{i:02d}", "seed": 0,
                                                        "test_acc": float(a)}))
        if i < 4:  # a second seed, 1 point lower: the seed noise line
            again = folder.parent / "seed1"
            again.mkdir()
            (again / "result.json").write_text(json.dumps({"student": f"p{i:02d}", "seed": 1,
                                                           "test_acc": float(a) - 0.01}))
    (tmp_path / "proxy" / "scores.json").write_text(json.dumps({"rows": rows}))
    lines, summary = tables.proxy_table(tmp_path)
    assert summary["best"] == "params" and summary["students"] == 12
    assert summary["auto"] == "params"  # the only candidate of --score auto among them
    assert summary["scores"]["params"]["spearman"] == pytest.approx(1.0)
    assert summary["scores"]["reverse"]["kendall"] == pytest.approx(-1.0)
    assert abs(summary["scores"]["noise"]["spearman"]) < 0.7
    assert (tmp_path / "proxy_scatter.png").stat().st_size > 1000
    assert any("4 students trained twice differ by 1.00 points" in line for line in lines)
    # the second seed is the first minus 1 point: the same ranking, Spearman 1
    assert any("The two seeds' Spearman over those 4 students is +1.00, so a score that ranked "
               "their true accuracies perfectly would reach about +1.00" in line for line in lines)


def test_report_is_written_from_partial_results(study):
    (study / "teachers" / "standard").mkdir(parents=True)
    (study / "teachers" / "standard" / "done.json").write_text(json.dumps(
        {"wall_seconds": 10.0, "epoch_seconds": [5.0, 5.0], "final": {}}))
    path = tables.write_report(study, scale=SCALE, machine="test machine", wall=60.0)
    text = path.read_text()
    assert "| gtn-uniform - standard | 12 | +2.00 [+2.00, +2.00] | 12/12 |" in text
    assert "(proxy study not finished)" in text and "(speed stage not run)" in text
    assert (study / "teacher_study.png").stat().st_size > 1000
    assert json.loads((study / "evidence.json").read_text())["scale"]["limit"] == 300


def test_scale_flags_parse_and_a_study_refuses_another_scale(tmp_path):
    args, scale = evidence.parse_args(["--quick", "--seeds", "3,4", "--limit", "500",
                                       "--samplers", "learned", "--out", str(tmp_path)])
    assert scale.seeds == (3, 4) and scale.limit == 500 and scale.samplers == ("learned",)
    assert scale.teacher_epochs == evidence.QUICK.teacher_epochs
    (tmp_path / "scale.json").write_text(json.dumps({"limit": 1}))
    with pytest.raises(SystemExit, match="another scale"):
        evidence.main(["--out", str(tmp_path), "--stages", "report"])
    with pytest.raises(SystemExit):
        evidence.parse_args(["--limit", "many"])


def test_study_workers_never_oversubscribe_the_cores(capsys):
    assert evidence.plan_workers(2, threads=1, cores=2) == 2
    assert evidence.plan_workers(4, threads=1, cores=2) == 2
    assert evidence.plan_workers(2, threads=2, cores=2) == 1
    assert evidence.plan_workers(3, threads=4, cores=2) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == 3 and "exceed the 2 usable cores: running 2 worker(s)" in lines[0]
    with pytest.raises(SystemExit, match="--workers must be >= 1"):
        evidence.plan_workers(0, cores=2)


def test_combined_scores_and_the_top_pick_check_on_planted_pools():
    """Planted: two scores each carry half of the accuracy (plus noise the other cancels), so
    their rank average and the LOO regression rank better than either; a score equal to the
    accuracy always picks a truly best student, its reverse never does."""
    from scipy import stats

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=60), rng.normal(size=60)
    acc = a + b
    rows = [{"student": f"p{i}", "a": float(a[i]) + 0.3 * float(rng.normal()),
             "b": float(b[i]) + 0.3 * float(rng.normal())} for i in range(60)]
    combined = tables.combined_scores(rows, ["a", "b"])
    loo = tables.loo_regression(rows, ["a", "b"], acc)
    single = max(stats.spearmanr([r["a"] for r in rows], acc)[0],
                 stats.spearmanr([r["b"] for r in rows], acc)[0])
    assert stats.spearmanr(combined["rank average"], acc)[0] > single
    assert stats.spearmanr(loo, acc)[0] > single
    mflops = rng.uniform(1, 10, 60)
    assert tables.top_pick_hits(acc, acc, mflops) == [True, True, True]
    assert tables.top_pick_hits(-acc, acc, mflops) == [False, False, False]
    assert tables.top_pick_rate(acc, acc, mflops, rounds=50) == 1.0
    assert tables.top_pick_rate(-acc, acc, mflops, rounds=50) == 0.0


def test_gtn_tried_table_and_the_pool_of_the_students_every_teacher_has(study):
    """SFTN for s/m/l only: the table adds the pool mean over the students every column has;
    the 'what was tried for GTN' table gives each variant's recipe, cost and planted result,
    and says whether the target is met."""
    import shutil

    import yaml

    shutil.rmtree(study / "distill" / "sftn-random00")
    for name, wall, config in (
            ("standard", 100.0, {"method": "standard", "train": {"epochs": 15}}),
            ("gtn-uniform", 250.0, {"method": "gtn", "sampler": "uniform", "alpha": 1.0,
                                    "path_prior": "student", "warmup_epochs": 0,
                                    "train": {"epochs": 15}}),
            ("sftn-s", 180.0, {"method": "sftn", "student": "/x/s.yaml", "alpha": 1.0,
                               "train": {"epochs": 15}})):
        folder = study / "teachers" / name
        folder.mkdir(parents=True)
        (folder / "done.json").write_text(json.dumps({"wall_seconds": wall}))
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    rows = tables.distill_results(study)
    lines, summary = tables.study_tables(rows, ["kd"])
    common = summary["pool_common"]["kd"]
    assert common["students"] == ["l", "m", "s"]
    assert common["gtn-uniform"] - common["sftn"] == pytest.approx(0.03)
    assert any(line.startswith("| **pool mean, l, m, s only**") for line in lines)
    records = tables.teacher_records(study)
    text = "\n".join(tables.gtn_tried_table(study, records, summary, ["kd"]))
    assert ("| gtn-uniform | GTN, sampler uniform, alpha 1.0, path_prior student, "
            "warmup_epochs 0, 15 epochs | - | 250 | 2.50x | +2.00 [+2.00, +2.00] (12 pairs) | "
            "+1.50 [+1.50, +1.50] (12 pairs) |") in text
    assert "| sftn | one SFTN teacher per student (sftn-s) | - | 180 per teacher | 1.80x | " \
           "-1.00 [-1.00, -1.00] (9 pairs) |" in text
    assert "gtn-uniform, KD: +2.00 points over the standard teacher" in text
    # planted: the standard teacher's students trail training alone by 0.5 points, so the
    # target line says the comparison's precondition fails
    assert ("target (>= +1.0, CI above 0) **met**, but its precondition fails: KD from the "
            "standard teacher trails training alone by 0.50 points") in text


def test_a_teacher_comparison_is_qualified_only_where_its_method_loses_to_training_alone():
    losing = {"deltas": {"dkd": {"standard - baseline": {"mean": -3.6, "ci": [-5.7, -1.7]}}}}
    spanning = {"deltas": {"dkd": {"standard - baseline": {"mean": -0.2, "ci": [-0.6, +0.1]}}}}
    assert "trails training alone by 3.60 points [-5.70, -1.70]" in tables._precondition(
        losing, "dkd")
    assert tables._precondition(spanning, "dkd") == ""
    assert tables._precondition(losing, "kd") == ""


def test_auto_score_takes_the_best_spearman_and_breaks_ties_by_the_top_pick_rate():
    """Planted: naswot ranks the pool perfectly, flops nearly (tied: the lead's interval
    spans 0), params not at all; flops has the better top-pick rate, so it is the choice; with
    the rates swapped naswot is."""
    rng = np.random.default_rng(0)
    acc = np.linspace(0.5, 0.9, 40)
    flops = acc.copy()
    flops[[3, 4]] = flops[[4, 3]]  # one swapped pair: Spearman just below 1
    rows = [{"student": f"p{i}", "naswot": float(a), "flops": float(f),
             "params": float(rng.normal())} for i, (a, f) in enumerate(zip(acc, flops))]
    from scipy import stats
    summary = {n: {"spearman": float(stats.spearmanr([r[n] for r in rows], acc)[0])}
               for n in ("naswot", "flops", "params")}
    summary["naswot"]["hit_rate"], summary["flops"]["hit_rate"] = 0.4, 0.9
    summary["params"]["hit_rate"] = 1.0  # best rate, but not tied: never chosen
    choice, lines = tables.auto_score(rows, acc, summary, rounds=300)
    assert choice == "flops"
    assert "the highest Spearman is naswot's (+1.00)" in lines[0]
    assert "Tied with it: naswot, flops." in lines[0] and "**Choice: flops**" in lines[0]
    summary["naswot"]["hit_rate"], summary["flops"]["hit_rate"] = 0.9, 0.4
    assert tables.auto_score(rows, acc, summary, rounds=300)[0] == "naswot"
    assert tables.auto_score(rows, acc, {"noise": {"spearman": 0.1}}) == (None, [])


def test_the_report_is_spliced_between_the_docs_markers(study, tmp_path):
    path = tables.write_report(study, scale=SCALE, machine="test machine", wall=60.0)
    doc = tmp_path / "docs" / "BENCHMARKS.md"
    doc.parent.mkdir()
    doc.write_text(f"# Benchmarks\n\nHeadlines by hand.\n\n{tables.BEGIN}\nold tables\n"
                   f"{tables.END}\n\n## Fault injection\n")
    tables.splice_report(path, doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHeadlines by hand.\n\n" + tables.BEGIN)
    assert "old tables" not in text and text.endswith(tables.END + "\n\n## Fault injection\n")
    assert "\n### Teacher study\n" in text and "\n## Teacher study\n" not in text
    assert "![teacher study](evidence/teacher_study.png)" in text
    assert (doc.parent / "evidence" / "teacher_study.png").stat().st_size > 1000
    tables.splice_report(path, doc)  # again: the same document
    assert doc.read_text() == text
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="needs one"):
        tables.splice_report(path, doc)


def test_boolean_scale_flags_parse_both_ways():
    assert evidence.parse_args(["--sftn-random", "false"])[1].sftn_random is False
    assert evidence.parse_args(["--sftn-random", "true"])[1].sftn_random is True
    with pytest.raises(SystemExit):
        evidence.parse_args(["--sftn-random", "maybe"])


def test_the_warmup_teacher_has_every_teachers_epochs_and_its_students_are_planned(tmp_path):
    """gtn-warmup: standard pre-training for teacher_epochs - gtn_warmup epochs, then GTN for
    gtn_warmup (half frozen) at the fine-tuning's learning rate; distilled like every GTN
    teacher; off with 0; a value that leaves no pre-training is refused."""
    scale = evidence.Scale(teacher_epochs=15, gtn_warmup=6, seeds=(1,), random_students=0,
                           proxy_students=0)
    (tmp_path / "students").mkdir()
    for tier in ("s", "m", "l"):
        (tmp_path / "students" / f"{tier}.yaml").write_text("{}\n")
    tasks = {t["name"]: t for t in evidence.teacher_tasks(tmp_path, scale)}
    warm = tasks["gtn-warmup"]
    assert warm["epochs"] + warm["pretrain"]["epochs"] == tasks["standard"]["epochs"] == 15
    assert warm["config"]["warmup_epochs"] == 3 and warm["config"]["alpha"] == 0.3
    assert warm["config"]["method"] == "gtn" and warm["pretrain"]["config"]["method"] == "standard"
    assert warm["lr"] == evidence.WARMUP_LR and "lr" not in tasks["gtn-uniform"]
    teachers = {t["name"].split("/")[0] for t in evidence.distill_tasks(tmp_path, scale)}
    assert "gtn-warmup" in teachers
    off = dataclasses.replace(scale, gtn_warmup=0)
    assert "gtn-warmup" not in {t["name"] for t in evidence.teacher_tasks(tmp_path, off)}
    assert "gtn-warmup" not in {t["name"].split("/")[0]
                                for t in evidence.distill_tasks(tmp_path, off)}
    for bad in (1, 15):
        with pytest.raises(SystemExit, match="--gtn-warmup must be 0 or in"):
            evidence.teacher_tasks(tmp_path, dataclasses.replace(scale, gtn_warmup=bad))


@pytest.mark.slow
def test_a_warmup_teacher_trains_its_pretraining_then_gtn_from_its_weights(tmp_path):
    """The two phases really run: pretrain/ holds a standard teacher of the pre-training's
    epochs; the GTN run starts from its weights; done.json counts the epochs of both; a second
    call finds both finished and trains nothing more."""
    import torch
    import yaml

    base = {"method": "standard", "teacher": "tiny", "data": {"name": "digits"},
            "space": "resnet_supernet",
            "width_mult": 0.25}
    task = {"name": "gtn-warmup", "kind": "teacher", "dir": str(tmp_path / "teachers" / "gtn-warmup"),
            "epochs": 2, "lr": 0.01, "batch_size": 64,
            "pretrain": {"config": base, "epochs": 1},
            "config": {**base, "method": "gtn", "sampler": "uniform", "alpha": 0.3,
                       "warmup_epochs": 1, "eval_paths": 1}}
    torch.set_num_threads(1)
    evidence._run_teacher(task)
    folder = Path(task["dir"])
    pre = yaml.safe_load((folder / "pretrain" / "config.yaml").read_text())
    gtn = yaml.safe_load((folder / "config.yaml").read_text())
    assert pre["method"] == "standard" and pre["train"]["epochs"] == 1
    assert pre["train"]["lr"] == pytest.approx(0.05)
    assert gtn["method"] == "gtn" and gtn["train"]["epochs"] == 2
    assert gtn["train"]["lr"] == pytest.approx(0.01) and gtn["warmup_epochs"] == 1
    assert gtn["teacher_weights"] == str(folder / "pretrain" / "teacher.pt")
    done = json.loads((folder / "done.json").read_text())
    assert len(done["epoch_seconds"]) == 3
    assert "1 standard epochs, then GTN for 2 epochs at lr 0.01" in tables._recipe(
        tmp_path, "gtn-warmup")
    before = (folder / "last.pt").stat().st_mtime_ns
    evidence._run_teacher(task)  # finished: resumes to the end at once
    assert (folder / "last.pt").stat().st_mtime_ns == before


def test_a_study_older_than_a_scale_field_resumes_with_that_fields_jobs(tmp_path, capsys):
    current = json.loads(json.dumps(dataclasses.asdict(evidence.QUICK)))
    older = {k: v for k, v in current.items() if k != "gtn_warmup"}
    (tmp_path / "scale.json").write_text(json.dumps(older))
    evidence.main(["--quick", "--out", str(tmp_path), "--stages", "none"])
    assert "predates gtn_warmup: resuming adds their jobs (gtn_warmup 2)" in capsys.readouterr().out
    assert json.loads((tmp_path / "scale.json").read_text()) == current
    (tmp_path / "scale.json").write_text(json.dumps({**older, "limit": 1}))
    with pytest.raises(SystemExit, match="another scale"):
        evidence.main(["--quick", "--out", str(tmp_path), "--stages", "none"])


def test_the_finished_line_counts_the_planned_jobs(study):
    text = tables.write_report(study, scale=SCALE, machine="m", wall=1.0,
                               planned=(70, 8)).read_text()
    assert "Finished: 60 of 70 teacher-study jobs, 0 of 8 proxy-study jobs (**partial" in text


def test_a_resumed_teachers_cost_counts_each_of_its_epochs_once(tmp_path):
    """A teacher killed after 2 of 3 epochs and resumed: its last invocation ran 4 s, its epochs
    took 5 + 6 + 7 s; the cost is 18 s (the wall time only when no epoch times are kept)."""
    for name, done in (("standard", {"wall_seconds": 4.0, "epoch_seconds": [5.0, 6.0, 7.0]}),
                       ("gtn-uniform", {"wall_seconds": 36.0})):
        (tmp_path / "teachers" / name).mkdir(parents=True)
        (tmp_path / "teachers" / name / "done.json").write_text(json.dumps(done))
    records = tables.teacher_records(tmp_path)
    assert records["standard"]["seconds"] == 18.0 and records["gtn-uniform"]["seconds"] == 36.0
    text = "\n".join(tables.cost_table(tmp_path, records, SCALE))
    assert "| gtn-uniform | - | 36 |" in text and "| 2.00x |" in text
