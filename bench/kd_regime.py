"""Where distillation helps: a KD/DKD recipe sweep on Fashion-MNIST and a held-out confirmation.

    ./dev python bench/kd_regime.py                       # about 1 hour on 2 cores
    ./dev python bench/kd_regime.py --out DIR --workers 2 --labelled 1000 ...  (see --help)

The regime: a standard resnet32 teacher trained on ``--teacher-limit`` labelled images (16x16)
and students that have only ``--labelled`` labelled images (a real use: a strong teacher
exists, labels for the deployment's students are few). Students validate on 2% of the official
training set (1,200 images; the teacher was trained on another split of it, so some of those
images may be among the teacher's: test images never are) and every accuracy is on the
official 10,000-image test set.

Stages (each job's result is written when done; a re-run skips finished jobs):

1. ``teacher``: the standard teacher (resumable).
2. ``sweep`` on seeds ``--sweep-seeds``: training alone (``none``), label smoothing (``ls``),
   KD variants (temperature, CE/KD weights), DKD variants (beta; warm-up 1/12 of the epochs),
   every student on the labelled images only, ``--epochs`` epochs.
3. ``confirm`` on seeds ``--confirm-seeds`` (not used to choose): ``none``, ``ls``, the KD
   variant that won the sweep on mean *validation* accuracy, the same KD recipe also learning
   from ``--unlabelled-limit`` - ``--labelled`` unlabelled images through the teacher
   (``--labelled`` of distill; ``--unlabelled-epochs`` epochs), and the DKD winner.
4. ``report``: ``KD_REGIME.md`` in ``--out``: per arm and variant mean test top-1; paired
   differences (over (student, seed) pairs) with 95% bootstrap intervals, pairs won, and the
   study's power (the smallest difference its paired spread can detect).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence import ensure_fashion_mnist, machine_line, read_json, run_tasks, say, write_json  # noqa: E402
from evidence_tables import bootstrap_ci  # noqa: E402

DATA = "fashion-mnist"
SPACE = "resnet_supernet"
WIDTH = 0.25
STUDENTS = ("s_nas_s", "s_nas_m", "s_nas_l")
STUDENT_VAL_FRACTION = 0.02

KD_VARIANTS = {  # name -> (method, options)
    "none": ("none", {}),
    "ls": ("ls", {}),
    "kd_t4_w0.9": ("kd", {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}),
    "kd_t4_w0.5": ("kd", {"temperature": 4.0, "ce_weight": 0.5, "kd_weight": 0.5}),
    "kd_t2_w0.5": ("kd", {"temperature": 2.0, "ce_weight": 0.5, "kd_weight": 0.5}),
    "kd_t1_w0.5": ("kd", {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5}),
    "dkd_b8": ("dkd", {"beta": 8.0}),
    "dkd_b2": ("dkd", {"beta": 2.0}),
    "dkd_b1": ("dkd", {"beta": 1.0}),
}
DEFAULT_KD = "kd_t4_w0.9"
UNLABELLED = "kd_unlabelled"  # the sweep's KD winner, also learning from unlabelled images


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/kd-regime")
    parser.add_argument("--workers", type=int, default=2, help="processes of one thread each")
    parser.add_argument("--teacher-limit", type=int, default=10000)
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--labelled", type=int, default=1000,
                        help="labelled training images the students see")
    parser.add_argument("--unlabelled-limit", type=int, default=4000,
                        help="all training images (labelled + unlabelled) of the KD arm that "
                             "learns from unlabelled images too")
    parser.add_argument("--unlabelled-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=30, help="student epochs")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--sweep-seeds", default="0")
    parser.add_argument("--confirm-seeds", default="1,2,3,4,5")
    parser.add_argument("--stages", default="teacher,sweep,confirm,report")
    return parser.parse_args(argv)


def seeds_of(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(",") if s.strip())


def teacher_task(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {"kind": "teacher", "name": "teacher", "dir": str(out / "teacher"),
            "epochs": args.teacher_epochs, "batch_size": 64,
            "config": {"method": "standard", "teacher": "resnet32",
                       "data": {"name": DATA, "image_size": args.image_size,
                                "limit": args.teacher_limit}}}


def job(out: Path, arm: str, variant: str, student: str, seed: int, *, labelled: int,
        epochs: int, args: argparse.Namespace, recipe: tuple[str, dict] | None = None,
        limit: int | None = None) -> dict[str, Any]:
    """One (arm, variant, student, seed) distill job (evidence.py's task format); ``limit``
    above ``labelled``: the images beyond the labelled ones come without labels."""
    method, options = recipe or KD_VARIANTS[variant]
    folder = out / arm / variant
    return {"kind": "distill", "dir": str(folder), "seed": seed, "epochs": epochs,
            "batch_size": 64, "shard": [1, 1], "name": f"{arm}/{variant}/{student}/seed{seed}",
            "done": str(folder / student / f"seed{seed}" / "result.json"),
            "config": {"teacher": None if method in ("none", "ls")
                       else str(out / "teacher" / "teacher.pt"),
                       "students": [student], "method": method, "method_options": options,
                       "data": {"name": DATA, "image_size": args.image_size,
                                "limit": limit or labelled,
                                "options": {"val_fraction": STUDENT_VAL_FRACTION}},
                       "labelled": labelled if limit else None, "space": SPACE,
                       "width_mult": WIDTH, "seeds": [seed], "export": False}}


def sweep_jobs(out: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    seeds = seeds_of(args.sweep_seeds)
    main = dict(labelled=args.labelled, epochs=args.epochs, args=args)
    return [job(out, "sweep", v, s, seed, **main)
            for seed in seeds for v in KD_VARIANTS for s in STUDENTS]


def results(folder: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(folder.glob("*/*/seed*/result.json")):
        data = read_json(path)
        if data:
            data["variant"] = path.parent.parent.parent.name
            config = path.parent.parent.parent / "config.yaml"
            if config.is_file():  # the options the job ran with (the variant's recipe)
                import yaml

                data["run_options"] = (yaml.safe_load(config.read_text()) or {}).get(
                    "method_options") or {}
            found.append(data)
    return found


def winners(out: Path) -> dict[str, str]:
    """The KD and DKD variants with the best mean validation accuracy in the sweep."""
    by_variant: dict[str, list[float]] = {}
    for r in results(out / "sweep"):
        if r["variant"] not in KD_VARIANTS:
            continue
        by_variant.setdefault(r["variant"], []).append(r["val_acc_best"])
    best = {}
    for family in ("kd", "dkd"):
        names = [v for v in by_variant if KD_VARIANTS[v][0] == family]
        if names:
            best[family] = max(names, key=lambda v: statistics.fmean(by_variant[v]))
    return best


def confirm_jobs(out: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    chosen = winners(out)
    write_json(out / "chosen.json", chosen)
    tasks = []
    for seed in seeds_of(args.confirm_seeds):  # seed by seed: a cut-off study stays paired
        for s in STUDENTS:
            tasks.append(job(out, "confirm", "none", s, seed, labelled=args.labelled,
                             epochs=args.epochs, args=args))
            tasks.append(job(out, "confirm", UNLABELLED, s, seed, labelled=args.labelled,
                             epochs=args.unlabelled_epochs, args=args,
                             recipe=KD_VARIANTS[chosen["kd"]], limit=args.unlabelled_limit))
            for v in (chosen["kd"], "ls"):
                tasks.append(job(out, "confirm", v, s, seed, labelled=args.labelled,
                                 epochs=args.epochs, args=args))
    for seed in seeds_of(args.confirm_seeds):
        for s in STUDENTS:
            tasks.append(job(out, "confirm", chosen["dkd"], s, seed, labelled=args.labelled,
                             epochs=args.epochs, args=args))
    return tasks


# ----------------------------------------------------------------------------- report
def paired(rows: list[dict[str, Any]], a: str, b: str, key: str = "test_acc"
           ) -> dict[str, Any] | None:
    """a - b over the (student, seed) pairs both finished: mean, 95% CI, pairs won, power."""
    index = {(r["variant"], r["student"], r["seed"]): r[key] for r in rows}
    diffs = [index[(a, s, k)] - index[(b, s, k)] for (v, s, k) in index
             if v == a and (b, s, k) in index]
    if not diffs:
        return None
    low, high = bootstrap_ci(diffs)
    sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
    # smallest true mean difference a two-sided paired test at 5% finds 80% of the time
    power = 2.8 * sd / np.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    return {"mean": statistics.fmean(diffs), "low": low, "high": high, "n": len(diffs),
            "won": sum(d > 0 for d in diffs), "mde": power}


def arm_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| variant | method | options | students x seeds | test top-1 % (mean ± std) | "
             "val top-1 % | vs none (points, 95% CI, won) | vs ls |", "|---|---|---|---|---|---|---|---|"]
    for variant in [*KD_VARIANTS, UNLABELLED]:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        tests = [r["test_acc"] * 100 for r in mine]
        vals = [r["val_acc_best"] * 100 for r in mine]
        cells = []
        for base in ("none", "ls"):
            p = paired(rows, variant, base) if variant != base else None
            cells.append("-" if p is None else
                         f"{p['mean'] * 100:+.2f} [{p['low'] * 100:+.2f}, {p['high'] * 100:+.2f}]"
                         f", {p['won']}/{p['n']}")
        method, options = mine[0]["method"], {}
        if variant in KD_VARIANTS:
            method, options = KD_VARIANTS[variant]
        elif variant == UNLABELLED and mine[0].get("run_options"):
            options = mine[0]["run_options"]
        lines.append(f"| {variant} | {method} | {json.dumps(options) if options else '-'} | "
                     f"{len(mine)} | {statistics.fmean(tests):.2f} ± "
                     f"{statistics.stdev(tests) if len(tests) > 1 else 0:.2f} | "
                     f"{statistics.fmean(vals):.2f} | {cells[0]} | {cells[1]} |")
    return lines


def per_student(rows: list[dict[str, Any]]) -> list[str]:
    variants = [v for v in [*KD_VARIANTS, UNLABELLED] if any(r["variant"] == v for r in rows)]
    lines = ["| student | " + " | ".join(variants) + " |",
             "|---|" + "---|" * len(variants)]
    for s in STUDENTS:
        cells = []
        for v in variants:
            accs = [r["test_acc"] * 100 for r in rows if r["variant"] == v and r["student"] == s]
            cells.append("-" if not accs else f"{statistics.fmean(accs):.2f} ± "
                         f"{statistics.stdev(accs) if len(accs) > 1 else 0:.2f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def write_report(out: Path, args: argparse.Namespace, wall: float) -> Path:
    teacher = read_json(out / "teacher" / "done.json") or {}
    everything = [r for arm in ("sweep", "confirm") for r in results(out / arm)]
    teacher_test = read_json(out / "teacher_test.json") or {}
    lines = ["# Where distillation helps (bench/kd_regime.py)", "",
             f"Machine: {machine_line()}. Date: {time.strftime('%Y-%m-%d %H:%M')}. "
             f"{len(everything)} student jobs, {sum(r.get('seconds', 0) for r in everything) / 3600:.1f} h of "
             f"training epochs in all (one thread each).", "",
             f"Regime: Fashion-MNIST at {args.image_size}x{args.image_size}; teacher resnet32 "
             f"(standard) on {args.teacher_limit:,} labelled images, {args.teacher_epochs} "
             f"epochs: test top-1 {teacher_test.get('test_acc', float('nan')) * 100:.2f}% "
             f"(wall {teacher.get('wall_seconds', float('nan')):.0f} s); students "
             f"{', '.join(STUDENTS)} (width {WIDTH}) on {args.labelled:,} labelled images, "
             f"{args.epochs} epochs, SGD 0.05 cosine, batch 64; validation 2% of the official "
             f"training set, test the official 10,000. Test top-1 is the last epoch's.", ""]
    for arm, title in (("sweep", f"Sweep (seeds {args.sweep_seeds}; chooses the recipes on "
                                 f"validation)"),
                       ("confirm", f"Confirmation (seeds {args.confirm_seeds}, not used to "
                                   f"choose; winners {read_json(out / 'chosen.json')}; "
                                   f"{UNLABELLED}: the KD winner on {args.unlabelled_limit:,} "
                                   f"images of which {args.labelled:,} labelled, "
                                   f"{args.unlabelled_epochs} epochs)")):
        rows = results(out / arm)
        if not rows:
            continue
        lines += [f"## {title}", ""] + arm_table(rows) + [""] + per_student(rows) + [""]
        for variant in [v for v in [*KD_VARIANTS, UNLABELLED] if v not in ("none", "ls")]:
            p = paired(rows, variant, "none")
            if p and p["n"] > 1:
                lines.append(f"- power of {variant} - none: {p['n']} pairs; a true difference "
                             f"of {p['mde'] * 100:.2f} points would be detected 80% of the "
                             f"time (2.8 x paired sd / sqrt(n))")
        lines.append("")
    path = out / "KD_REGIME.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def teacher_test_accuracy(out: Path, args: argparse.Namespace) -> None:
    if read_json(out / "teacher_test.json"):
        return
    from gtn_nas.data import load_dataset
    from gtn_nas.distill.jobs import accuracy, load_checked_teacher

    splits = load_dataset(DATA, image_size=args.image_size, augment=False, seed=0)
    teacher, _ = load_checked_teacher(out / "teacher" / "teacher.pt", splits)
    write_json(out / "teacher_test.json", {"test_acc": accuracy(teacher, splits.test)})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ensure_fashion_mnist()
    stages = set(args.stages.split(","))
    started = time.perf_counter()
    failures = []
    if "teacher" in stages:
        failures += run_tasks([teacher_task(out, args)], 1, "teacher")
        teacher_test_accuracy(out, args)
    if "sweep" in stages:
        failures += run_tasks(sweep_jobs(out, args), args.workers, "sweep")
    if "confirm" in stages:
        failures += run_tasks(confirm_jobs(out, args), args.workers, "confirm")
    if "report" in stages:
        say(f"report: {write_report(out, args, time.perf_counter() - started)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
