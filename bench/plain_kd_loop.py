"""The plain PyTorch loop a `gtn-nas distill --method kd` job is measured against.

What a user would write by hand for the same work: the same splits (gtn_nas.data), the same
student (a frozen preset), the same teacher file, SGD + cosine schedule, Hinton's KD loss;
the teacher's validation and test accuracy once, the student validated after every epoch, its
best-on-validation weights kept, then a test pass (two when the best epoch is not the last).
No checkpoints, metrics files, per-image seeding or progress bars: that is the overhead the
job is allowed (issue 21: job <= 1.3x this, both timed as whole processes).

Run: ./dev python bench/plain_kd_loop.py --teacher T.pt [--student s_nas_s] [--limit 2000]
     [--epochs 4] [--image-size 16]     (bench/distill_overhead.py runs it beside the job)
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from gtn_nas.data import load_dataset
from gtn_nas.space.plugins import build_space
from gtn_nas.teacher.zoo import load_teacher


@torch.no_grad()
def accuracy(model, loader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", default="s_nas_s")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--ce-weight", type=float, default=0.1)
    parser.add_argument("--kd-weight", type=float, default=0.9)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    splits = load_dataset(args.data, image_size=args.image_size, limit=args.limit, seed=0)
    space = build_space("resnet_supernet", width_mult=0.25, num_classes=splits.num_classes,
                        input_size=splits.image_size, in_channels=splits.in_channels)
    student = space.freeze(space.preset(args.student), seed=0)
    teacher, _ = load_teacher(args.teacher)
    teacher.eval().requires_grad_(False)
    train = DataLoader(splits.train, batch_size=64, shuffle=True, drop_last=True)
    val = DataLoader(splits.val, batch_size=256)
    test = DataLoader(splits.test, batch_size=256)
    teacher_val, teacher_test = accuracy(teacher, val), accuracy(teacher, test)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    t = args.temperature
    best_acc, best_epoch, best_state = -1.0, 0, None
    for epoch in range(args.epochs):
        student.train()
        for x, y in train:
            logits = student(x)
            with torch.no_grad():
                teacher_logits = teacher(x)
            kd = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(teacher_logits / t, 1),
                          reduction="batchmean") * t * t
            loss = args.ce_weight * F.cross_entropy(logits, y) + args.kd_weight * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()
        val_acc = accuracy(student, val)
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch + 1
            best_state = copy.deepcopy(student.state_dict())
    test_last = accuracy(student, test)
    if best_epoch != args.epochs:
        student.load_state_dict(best_state)
        test_best = accuracy(student, test)
    else:
        test_best = test_last
    print(json.dumps({"teacher_val": teacher_val, "teacher_test": teacher_test,
                      "val_best": best_acc, "test_last": test_last, "test_best": test_best,
                      "seconds_inside": round(time.perf_counter() - started, 2)}))


if __name__ == "__main__":
    main()
