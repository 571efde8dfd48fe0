"""Seconds one epoch of a training split takes through the engine's data path (``SeededItems``
+ ``ShardedBatchSampler`` + ``DataLoader``), no model: the data cost of a training epoch.

    ./dev python bench/data_epoch_time.py --data digits --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader

from gtn_nas.data import load_dataset
from gtn_nas.engine import SeededItems, ShardedBatchSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = load_dataset(args.data, image_size=args.image_size, limit=args.limit, seed=0).train
    seeded = SeededItems(train, 0)
    sampler = ShardedBatchSampler(len(train), args.batch_size)
    times = []
    for epoch in range(args.repeats + 1):  # the first epoch is a warm-up
        seeded.set_epoch(epoch)
        sampler.set_epoch(epoch)
        started = time.perf_counter()
        for _ in DataLoader(seeded, batch_sampler=sampler):
            pass
        times.append(time.perf_counter() - started)
    times = times[1:]
    print(f"{args.data}: {len(train)} training images, one epoch's data "
          f"{statistics.median(times):.3f} s (median of {len(times)}; "
          f"min {min(times):.3f}, max {max(times):.3f}), one thread")


if __name__ == "__main__":
    main()
