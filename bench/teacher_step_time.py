"""Benchmark: training-step time of the standard, SFTN and GTN teachers on the same batch, and
the forward-FLOPs ratio the step-time ratio should approach.

Run: ./dev python bench/teacher_step_time.py [--teacher resnet32] [--width-mult 0.25]
     [--size 32] [--batch 64] [--steps 10]
Prints a Markdown table for docs/BENCHMARKS.md. The GTN figure averages over the paths drawn
(uniform sampler); SFTN grafts s_nas_m.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from gtn_nas.space.costs import count_flops
from gtn_nas.teacher.methods.gtn import GTNMethod
from gtn_nas.teacher.methods.path_sampler import PathSampler
from gtn_nas.teacher.methods.sftn import SFTNMethod
from gtn_nas.teacher.methods.standard import StandardMethod
from gtn_nas.space.plugins import build_space
from gtn_nas.teacher.zoo import build_teacher


class _Slice(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def forward(self, x):
        return x[:, : self.width]


class _PlainBranches(nn.Module):
    """Teacher + the 3 branches of one path as plain modules (fvcore traces plain modules).

    GTN branches run supernet units; the same path's frozen modules at the same input widths
    do the same convolutions, so their FLOPs are the path's FLOPs."""

    def __init__(self, method: nn.Module, space, sample):
        super().__init__()
        self.teacher = method.teacher
        student = dict(space.freeze(sample).named_children())
        widths = space.block_channels(sample)
        self.branches = nn.ModuleList()
        for k, transform in enumerate(method.branches.transforms):
            names = [n for group in space.block_units[k + 1:] for n in group if n in student]
            self.branches.append(nn.Sequential(transform, _Slice(widths[k]),
                                               *(student[n] for n in names)))

    def forward(self, x):
        logits, features = self.teacher.forward_with_features(x)
        return logits + sum(branch(f) for branch, f in zip(self.branches, features))


def step_times(method, x, y, steps):
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01,
                                momentum=0.9)
    method.train()
    if hasattr(method, "on_epoch_start"):
        method.on_epoch_start(0, 1)
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        out = method(x, y)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        if hasattr(method, "after_optimizer_step"):
            method.after_optimizer_step(x, y, out)
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", default="resnet32")
    parser.add_argument("--width-mult", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))
    space = build_space("resnet_supernet", num_classes=args.classes, input_size=args.size,
                        width_mult=args.width_mult)

    def teacher():
        torch.manual_seed(0)
        return build_teacher(args.teacher, num_classes=args.classes)

    standard = StandardMethod(teacher())
    sftn = SFTNMethod.build(teacher(), space, space.preset("s_nas_m"), args.size)
    gtn = GTNMethod(teacher(), space, PathSampler(space, "uniform", seed=0), args.size)

    one = x[:1]
    t_flops = count_flops(standard.teacher, one)
    sftn_flops = count_flops(_PlainBranches(sftn, space, space.preset("s_nas_m")), one)
    gtn_flops = statistics.mean(count_flops(_PlainBranches(gtn, space, space.sample(seed)), one)
                                for seed in range(20))
    t_std = step_times(standard, x, y, args.steps)
    t_sftn = step_times(sftn, x, y, args.steps)
    t_gtn = step_times(gtn, x, y, args.steps)
    print(f"teacher {args.teacher}, {args.classes} classes, {args.size}x{args.size}, batch "
          f"{args.batch}, space width {args.width_mult}, torch threads "
          f"{torch.get_num_threads()}\n")
    print("| method | step (ms, median) | step ratio | forward MFLOPs / image | FLOPs ratio |")
    print("|---|---|---|---|---|")
    for name, t, f in (("standard", t_std, t_flops), ("SFTN (s_nas_m)", t_sftn, sftn_flops),
                       ("GTN (uniform, mean of 20 paths)", t_gtn, gtn_flops)):
        print(f"| {name} | {t * 1e3:.0f} | {t / t_std:.2f} | {f / 1e6:.1f} | "
              f"{f / t_flops:.2f} |")


if __name__ == "__main__":
    main()
