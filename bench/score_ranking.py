"""Benchmark: how well each path score ranks students by their trained test accuracy.

Run (after training a GTN teacher, e.g.
``./dev gtn-nas train-teacher --method gtn --data digits --epochs 15 --sandwich --out R``):

    OMP_NUM_THREADS=1 ./dev python bench/score_ranking.py --teacher R/teacher.pt \
        --students 30 --epochs 10 --out runs/score-ranking

Draws ``--students`` distinct random students of the teacher's space (``space.sample``), trains
each from scratch with a fixed short recipe (plain cross-entropy on the engine: SGD 0.05,
cosine, batch 64, ``--epochs``) on the teacher's training split, measures test accuracy, and
scores each with: the branch score (combined = branch 1 with ties broken by the full-path
branch, the full-path branch, branch 1; each with per-path BN recalibration and with the shared
statistics), params, FLOPs, SynFlow and NASWOT. Prints
Spearman and Kendall of each score vs test accuracy with 95% bootstrap intervals (students
resampled), as a Markdown table; writes ``students.csv`` and ``summary.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch.utils.data import DataLoader

from gtn_nas.config import load_config
from gtn_nas.engine import TrainConfig, evaluate, fit
from gtn_nas.teacher.methods.standard import StandardMethod
from gtn_nas.search.scoring import build_scorer, load_branch_scorer
from gtn_nas.teacher.train import TeacherRunConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence_tables import rank_ci as bootstrap  # noqa: E402  (one rank-correlation bootstrap)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", default="runs/score-ranking")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = load_config(TeacherRunConfig, Path(args.teacher).parent / "config.yaml").resolved()
    splits = run.data.load(seed=run.train.seed)

    scorers = {}
    for branch in ("combined", "full", 1):
        for recal in (4, 0):
            name = f"branch {branch}{'' if recal else ' (shared BN)'}"
            space, scorers[name] = load_branch_scorer(args.teacher, recalibration_batches=recal,
                                                      branch=branch, seed=args.seed)
    for kind in ("params", "flops", "synflow", "naswot"):
        scorers[kind] = build_scorer(kind, space, data=splits, seed=args.seed)

    samples, seen, i = [], set(), 0
    while len(samples) < args.students:
        sample = space.sample(seed=args.seed * 100_000 + i)
        i += 1
        key = tuple(sorted(sample.items()))
        if key not in seen:
            seen.add(key)
            samples.append(sample)

    rows = []
    test_loader = DataLoader(splits.test, batch_size=256)
    for index, sample in enumerate(samples):
        started = time.perf_counter()
        method = StandardMethod(space.freeze(sample, seed=index))
        config = TrainConfig(epochs=args.epochs, schedule="cosine", seed=index, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            fit(method, splits.train, splits.val, config, tmp)
        accuracy = evaluate(method, test_loader)["acc"]
        row = {"student": index, "test_acc": accuracy,
               "describe": space.describe_sample(sample)}
        for name, scorer in scorers.items():
            row[name] = scorer(sample)
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                          for k, v in row.items() if k != "describe"},),
              f"({time.perf_counter() - started:.1f} s)", flush=True)

    with open(out / "students.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    acc = np.array([r["test_acc"] for r in rows])
    summary = {"students": len(rows), "epochs": args.epochs,
               "test_acc": [float(acc.min()), float(np.median(acc)), float(acc.max())],
               "scores": {}}
    print(f"\n{len(rows)} students, test accuracy min/median/max "
          f"{acc.min():.3f}/{np.median(acc):.3f}/{acc.max():.3f}")
    print("| score | Spearman [95% CI] | Kendall [95% CI] |")
    print("|---|---|---|")
    for name, scorer in scorers.items():
        values = np.array([r[name] for r in rows])
        rho = stats.spearmanr(values, acc)[0]
        tau = stats.kendalltau(values, acc)[0]
        rho_ci = bootstrap(values, acc, stats.spearmanr, args.bootstrap, args.seed)
        tau_ci = bootstrap(values, acc, stats.kendalltau, args.bootstrap, args.seed)
        summary["scores"][name] = {"spearman": rho, "spearman_ci": rho_ci, "kendall": tau,
                                   "kendall_ci": tau_ci, "description": scorer.description}
        print(f"| {name} | {rho:+.2f} [{rho_ci[0]:+.2f}, {rho_ci[1]:+.2f}] | "
              f"{tau:+.2f} [{tau_ci[0]:+.2f}, {tau_ci[1]:+.2f}] |")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
