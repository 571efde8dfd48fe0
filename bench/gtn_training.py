"""Benchmark: GTN supernet-training options on digits (resnet32 teacher, fixed budget).

Run: OMP_NUM_THREADS=1 ./dev python bench/gtn_training.py --epochs 15 [--runs base sandwich ...]

For each run prints one JSON line per epoch (teacher val accuracy, the K-path mean branch
accuracies after per-path BN recalibration, seconds) and, at the end, the first epoch at which
every branch reached 3x chance, the sampler's final op probabilities, and a Markdown row.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from gtn_nas.config import DataConfig
from gtn_nas.engine import TrainConfig
from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

RUNS = {
    "base": {},
    "sandwich": {"sandwich": True},
    "distill": {"inplace_distill": 1.0},
    "sandwich+distill": {"sandwich": True, "inplace_distill": 1.0},
    "student-prior": {"path_prior": "student"},
    "no-full": {"full_branch": False},
    "learned": {"sampler": "learned"},
    "adversarial": {"sampler": "adversarial"},
}
BRANCHES = ("branch1", "branch2", "branch3", "full")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--runs", nargs="+", default=list(RUNS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chance-factor", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.runs:
        config = TeacherRunConfig(method="gtn", teacher="resnet32", data=DataConfig("digits"),
                                  **RUNS[name], train=TrainConfig(epochs=args.epochs,
                                                                  seed=args.seed,
                                                                  progress=False))
        with tempfile.TemporaryDirectory() as tmp:
            history = train_teacher(config, tmp).fit.history
        resolved = None
        for h in history:
            accs = {b: h.get(f"val/{b}_acc") for b in BRANCHES if f"val/{b}_acc" in h}
            print(json.dumps({"run": name, "epoch": h["epoch"], "teacher": round(h["val/acc"], 3),
                              **{b: round(a, 3) for b, a in accs.items()},
                              "seconds": h["seconds"]}), flush=True)
            if resolved is None and all(a >= args.chance_factor * 0.1 for a in accs.values()):
                resolved = h["epoch"]
        last = history[-1]
        probs = {lb: p for lb, p in last.get("sampler/probs", {}).items() if lb.endswith("/op")}
        seconds = sum(h["seconds"] for h in history) / len(history)
        print(json.dumps({"run": name, "resolved_epoch": resolved, "seconds_per_epoch":
                          round(seconds, 2), "op_probs": probs}), flush=True)
        rows.append(f"| {name} | {last['val/acc']:.2f} | " + " | ".join(
            f"{last.get(f'val/{b}_acc', float('nan')):.2f}" for b in BRANCHES)
            + f" | {resolved or '-'} | {seconds:.1f} |")
    print("| run | teacher | branch1 | branch2 | branch3 | full | epoch all >= "
          f"{args.chance_factor:g}x chance | s/epoch |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
