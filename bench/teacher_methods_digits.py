"""Benchmark: standard vs SFTN vs GTN teachers on digits (resnet32), and the branch-KL weight.

Run: ./dev python bench/teacher_methods_digits.py [--epochs 12]
Prints, per run, the validation accuracy of the teacher after each epoch and of branches 1 and
3 (and GTN's full-path branch) after the last, as a Markdown table for docs/BENCHMARKS.md;
GTN branch accuracies are means over the K fixed validation paths (docs/gtn.md). Paper recipe otherwise (SGD 0.05, batch 64).
"""

from __future__ import annotations

import argparse
import tempfile

from gtn_nas.config import DataConfig
from gtn_nas.engine import TrainConfig
from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

RUNS = [("standard", {}), ("sftn", {"student": "s_nas_s", "alpha": 1.0}),
        ("sftn", {"student": "s_nas_s", "alpha": 3.0}), ("gtn", {"alpha": 1.0}),
        ("gtn", {"alpha": 3.0})]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    print("| method | alpha | teacher val acc per epoch | branch1 (last) | branch3 (last) | "
          "full path (last) | s/epoch |")
    print("|---|---|---|---|---|---|---|")
    for method, options in RUNS:
        config = TeacherRunConfig(method=method, teacher="resnet32", data=DataConfig("digits"),
                                  **options,
                                  train=TrainConfig(epochs=args.epochs, progress=False))
        with tempfile.TemporaryDirectory() as tmp:
            history = train_teacher(config, tmp).fit.history
        accs = " ".join(f"{h['val/acc']:.2f}" for h in history)
        last = history[-1]
        seconds = sum(h["seconds"] for h in history) / len(history)
        print(f"| {method} | {options.get('alpha', '-')} | {accs} | "
              f"{last.get('val/branch1_acc', float('nan')):.2f} | "
              f"{last.get('val/branch3_acc', float('nan')):.2f} | "
              f"{last.get('val/full_acc', float('nan')):.2f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
