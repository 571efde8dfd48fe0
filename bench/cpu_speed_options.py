"""Benchmark: CPU speed options for training steps, and whether they keep results exact.

Run: ./dev python bench/cpu_speed_options.py [--steps 30] [--repeats 3]
Times a KD step (s_nas_s from a resnet32 teacher) and a standard resnet32 teacher step on one
Fashion-MNIST-sized batch (64 x 1 x 16 x 16, 10 classes) under: the default (NCHW, torch's
threads), ``channels_last`` memory format, one thread vs two, and ``torch.compile`` of the
student (its compile time reported apart). Each variant also trains ``--steps`` steps from the
same seed; "exact" says whether its weights equal the default's bit for bit. Prints a Markdown
table (median step time over the repeats, its range) for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from distill_overhead import cpu_model


def build(kind: str, channels_last: bool):
    from gtn_nas.space.plugins import build_space
    from gtn_nas.teacher.zoo import build_teacher

    torch.manual_seed(0)
    teacher = build_teacher("resnet32", num_classes=10, in_channels=1)
    if kind == "teacher":
        model, frozen = teacher, None
    else:
        space = build_space("resnet_supernet", width_mult=0.25, num_classes=10, input_size=16,
                            in_channels=1)
        model, frozen = space.freeze(space.preset("s_nas_s"), seed=0), teacher.eval()
        frozen.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        if frozen is not None:
            frozen = frozen.to(memory_format=torch.channels_last)
    return model, frozen


def train(kind: str, *, channels_last: bool = False, compile_: bool = False, steps: int,
          threads: int) -> tuple[list[float], float, dict[str, torch.Tensor]]:
    """Step times (after 3 warm-up steps), the first step's time and the final weights."""
    torch.set_num_threads(threads)
    model, teacher = build(kind, channels_last)
    step_model = torch.compile(model) if compile_ else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(1)
    times = []
    first = 0.0
    for step in range(steps + 3):
        x = torch.randn(64, 1, 16, 16, generator=generator)
        y = torch.randint(0, 10, (64,), generator=generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        started = time.perf_counter()
        logits = step_model(x)
        if teacher is None:
            loss = F.cross_entropy(logits, y)
        else:
            with torch.no_grad():
                target = teacher(x)
            loss = 0.5 * F.cross_entropy(logits, y) + 0.5 * F.kl_div(
                F.log_softmax(logits, 1), F.softmax(target, 1), reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - started
        if step == 0:
            first = elapsed
        if step >= 3:
            times.append(elapsed)
    return times, first, {k: v.detach().clone() for k, v in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    variants = [("default (NCHW, 2 threads)", {}, 2), ("channels_last", {"channels_last": True}, 2),
                ("1 thread", {}, 1)]
    if not args.no_compile:
        variants.append(("torch.compile (student)", {"compile_": True}, 2))
    rows = []
    for kind in ("kd", "teacher"):
        reference = None
        for name, options, threads in variants:
            if kind == "teacher" and "compile_" in options:
                continue
            medians, firsts, weights = [], [], None
            for _ in range(args.repeats):
                times, first, weights = train(kind, steps=args.steps, threads=threads, **options)
                medians.append(statistics.median(times))
                firsts.append(first)
            if reference is None:
                reference = (statistics.median(medians), weights)
            exact = all(torch.equal(weights[k], reference[1][k]) for k in weights)
            rows.append((kind, name, statistics.median(medians), min(medians), max(medians),
                         statistics.median(medians) / reference[0], exact,
                         firsts[0]))
    print(f"\n{cpu_model()}, batch 64 x 1 x 16 x 16, {args.steps} steps after 3 warm-up "
          f"steps, {args.repeats} repeats (median step, range), torch {torch.__version__}:\n")
    print("| step | variant | step (ms) | vs default | exact | first step of the first repeat (ms) |")
    print("|---|---|---|---|---|---|")
    for kind, name, med, low, high, ratio, exact, first in rows:
        label = "KD (s_nas_s from resnet32)" if kind == "kd" else "standard teacher (resnet32)"
        print(f"| {label} | {name} | {med * 1e3:.1f} ({low * 1e3:.1f}-{high * 1e3:.1f}) | "
              f"{ratio:.2f}x | {'yes' if exact else 'no'} | {first * 1e3:.0f} |")


if __name__ == "__main__":
    main()
