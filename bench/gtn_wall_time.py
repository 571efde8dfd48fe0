"""What a GTN teacher costs against a standard one at equal epochs, with default settings
(issue 29, item 4): before and after the logged paths are scored every 5th epoch instead of
every epoch, on one machine in one run.

    ./dev python bench/gtn_wall_time.py [--epochs 10] [--limit 3000] [--threads 1]

Each teacher (resnet32, Fashion-MNIST at 16x16, ``--limit`` images, the converged study's
scale) trains ``--epochs`` epochs from the same seed; the arms run one after the other, each
timed by its epochs' own seconds (training and validation). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    import torch

    from evidence import machine_line
    from gtn_nas.config import DataConfig
    from gtn_nas.engine import TrainConfig
    from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = TrainConfig(epochs=args.epochs, schedule="cosine", progress=False)
    base = TeacherRunConfig(method="standard", teacher="resnet32",
                            data=DataConfig("fashion-mnist", image_size=16, limit=args.limit),
                            train=train)
    arms = {
        "standard": base,
        "gtn, paths every epoch (before)": dataclasses.replace(base, method="gtn",
                                                               eval_paths_every=1),
        "gtn, default (paths every 5th epoch)": dataclasses.replace(base, method="gtn"),
    }
    rows, seconds = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, config) in enumerate(arms.items()):
            started = time.perf_counter()
            result = train_teacher(config, Path(folder) / str(index))
            wall = time.perf_counter() - started
            epochs = [r["seconds"] for r in result.fit.history]
            seconds[name] = sum(epochs)
            rows.append((name, sum(epochs), sum(epochs) / len(epochs), wall,
                         result.fit.history[-1].get("val/acc")))
    standard = seconds["standard"]
    print(f"{args.epochs} epochs, {args.limit} images, {args.threads} thread(s), "
          f"{machine_line()}, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| teacher | epochs' seconds | s/epoch | vs standard | wall (incl. setup) s | "
          "val top-1 |")
    print("|---|---|---|---|---|---|")
    for name, total, per, wall, acc in rows:
        print(f"| {name} | {total:.0f} | {per:.1f} | {total / standard:.2f}x | {wall:.0f} | "
              f"{(acc or 0) * 100:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
