"""Benchmark: GPD's training-step time against plain training of the same student.

Run: ./dev python bench/gpd_step_time.py [--space resnet_supernet] [--preset s_nas_s]
     [--width-mult 0.25] [--size 8] [--batch 64] [--steps 20] [--ratio 2]
Defaults are digits-size inputs (8x8, 3 channels, 10 classes). Rows: plain cross-entropy
training of the student (the ``none`` method's step), GPD without a teacher with and without
channel-branch reparameterisation, and GPD with the ``tiny`` static teacher (DKD terms). Each
figure is the median over ``--steps`` SGD steps after two warm-up steps; the forward FLOPs of
the dynamic teacher (folded) and the student give the ratio the step time should approach.
Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from gtn_nas.space.costs import count_flops
from gtn_nas.distill.gpd.method import GPDDistiller
from gtn_nas.distill.gpd.cbr import CBRConv2d
from gtn_nas.space.plugins import build_space
from gtn_nas.teacher.zoo import build_teacher


class _Plain(nn.Module):
    """Cross-entropy training of the student alone (what ``--method none`` does per step)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(self.student(x), y)}


def step_time(method: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Median seconds of one SGD step (forward, backward, clip, update)."""
    groups = method.param_groups() if hasattr(method, "param_groups") else \
        [{"params": [p for p in method.parameters() if p.requires_grad]}]
    optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9, weight_decay=5e-4)
    method.train()
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        out = method(x, y)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), 5.0)
        optimizer.step()
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _folded_dt_flops(gpd: GPDDistiller, x: torch.Tensor) -> float:
    """Forward FLOPs of the DT with its branches folded (plain widened convolutions)."""
    import copy

    dt = copy.deepcopy(gpd.dt)
    for path, module in list(dt.named_modules()):
        if isinstance(module, CBRConv2d):
            weight = module.dt_kernel().detach()
            conv = nn.Conv2d(weight.shape[1] * module.groups, weight.shape[0], weight.shape[-1],
                             module.stride, module.padding, module.dilation, module.groups,
                             bias=module.bias is not None)
            conv.weight.data.copy_(weight)
            parent, _, name = path.rpartition(".")
            setattr(dt.get_submodule(parent), name, conv)
    return count_flops(dt, x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="resnet_supernet")
    parser.add_argument("--preset", default="s_nas_s")
    parser.add_argument("--width-mult", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ratio", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))
    space = build_space(args.space, num_classes=args.classes, input_size=args.size,
                        width_mult=args.width_mult)
    sample = space.preset(args.preset)

    def student() -> nn.Module:
        return space.freeze(sample, seed=0)

    teacher = build_teacher("tiny", num_classes=args.classes)
    rows = [
        ("plain student (CE)", _Plain(student())),
        (f"GPD r={args.ratio}, no teacher, no CBR", GPDDistiller(student(), None,
                                                                 ratio=args.ratio, branches=())),
        (f"GPD r={args.ratio}, no teacher", GPDDistiller(student(), None, ratio=args.ratio)),
        (f"GPD r={args.ratio}, tiny teacher (DKD)", GPDDistiller(student(), teacher,
                                                                 ratio=args.ratio)),
    ]
    one = x[:1]
    s_flops = count_flops(student(), one)
    dt_flops = _folded_dt_flops(rows[2][1], one)
    base = None
    print(f"{args.space} {args.preset}, width {args.width_mult}, {args.size}x{args.size}, batch "
          f"{args.batch}, {args.classes} classes, torch threads {torch.get_num_threads()}; "
          f"forward MFLOPs/image: student {s_flops / 1e6:.2f}, DT (folded) "
          f"{dt_flops / 1e6:.2f} (ratio {dt_flops / s_flops:.2f})\n")
    print("| method | step (ms, median) | vs plain |")
    print("|---|---|---|")
    for name, method in rows:
        seconds = step_time(method, x, y, args.steps)
        base = base or seconds
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
