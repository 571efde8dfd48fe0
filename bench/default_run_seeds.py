"""README's main command on several seeds: is the teacher above every student trained alone,
and what does distillation give them? (issue 28, item 8)

Runs ``gtn-nas run --seed N --out OUT/seedN`` (the default settings otherwise, digits) for each
seed, one after the other; a folder that holds a finished run is read, an unfinished one
resumes. Then prints a table per seed: the teacher's test top-1, each tier's test top-1 alone
(``none``), with label smoothing (``ls``) and distilled (``kd``), and the guard's verdict, and
with ``--docs`` splices it into docs/BENCHMARKS.md between the ``default-seeds`` markers.

    ./dev python bench/default_run_seeds.py --out ~/.cache/gtn-nas/bench/default-seeds \
        --seeds 0 1 2 --docs docs/BENCHMARKS.md [-- extra gtn-nas run flags]

Wall time is timed per seed (the machine's CPU model is printed); accuracies are seeded and do
not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_overhead import cpu_model  # noqa: E402

BEGIN, END = "<!-- default-seeds:begin -->", "<!-- default-seeds:end -->"


def run_seed(out: Path, seed: int, extra: list[str]) -> float | None:
    """Runs (or resumes) one seed; returns its wall time, None when it had finished before."""
    if _finished(out):
        return None
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gtn_nas", "run", "--seed", str(seed), "--out",
                    str(out), *extra], check=True)
    return time.perf_counter() - started


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _finished(out: Path) -> bool:
    record = _read(out / "run.json")
    stages = record.get("stages", {}) if record else {}
    return all(s in stages for s in ("teacher", "search", "distill", "deploy")) \
        and (out / "report.md").is_file()


def seed_rows(out: Path) -> tuple[float | None, list[list[str]], list[str]]:
    """(teacher test top-1, rows tier x method, guard lines) of one finished run."""
    summaries = {m: _read(out / "distill" / m / "summary.json") for m in ("none", "ls", "kd")}
    teacher = summaries["kd"].get("teacher_test_acc")
    by = {m: {r["student"]: r for r in s.get("rows", [])} for m, s in summaries.items()}
    rows = []
    for tier in ("s", "m", "l"):
        accs = {m: (by[m].get(tier) or {}).get("test_acc_best_mean") for m in by}
        rows.append([tier, *(f"{accs[m] * 100:.1f}" if accs[m] is not None else "-"
                             for m in ("none", "ls", "kd")),
                     f"{(teacher - accs['none']) * 100:+.1f}" if None not in
                     (teacher, accs["none"]) else "-",
                     f"{(accs['kd'] - accs['none']) * 100:+.1f}" if None not in
                     (accs["kd"], accs["none"]) else "-"])
    return teacher, rows, list(summaries["kd"].get("guard") or [])


def report(out: Path, seeds: list[int], seconds: dict[int, float | None], extra: list[str]
           ) -> str:
    lines = [f"Command: `./dev python bench/default_run_seeds.py --out OUT --seeds "
             f"{' '.join(map(str, seeds))}{' -- ' + ' '.join(extra) if extra else ''}` "
             f"({time.strftime('%Y-%m-%d %H:%M')}, {cpu_model()}, 2 cores): `gtn-nas run` with "
             f"its defaults on digits, one run per seed (the teacher, the search and the "
             f"students all follow the seed).", ""]
    above = 0
    for seed in seeds:
        teacher, rows, guard = seed_rows(out / f"seed{seed}")
        took = seconds.get(seed)
        lines.append(f"Seed {seed}: teacher test top-1 **{teacher * 100:.1f}%**"
                     + (f"; the run took {took / 60:.1f} min" if took else "") + ".")
        lines += ["", "| tier | alone % | ls % | kd % | teacher - alone | kd - alone |",
                  "|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += [""] + ([f"Guard: {g}." for g in guard] or
                         ["The guard is silent: the teacher is above every student alone."])
        lines.append("")
        above += all(r[4] != "-" and float(r[4]) > 0 for r in rows)
    lines.append(f"**The teacher is above every student trained alone on {above} of "
                 f"{len(seeds)} seeds.** Test set: 359 images (one image = 0.28 points).")
    return "\n".join(lines) + "\n"


def splice(docs: Path, text: str) -> None:
    content = docs.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{docs}: no {BEGIN} ... {END} markers")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    docs.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/default-seeds"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--docs", type=Path, help="splice the table into this markdown file")
    args = parser.parse_args(argv)
    print(f"machine: {cpu_model()}", flush=True)
    seconds = {seed: run_seed(args.out / f"seed{seed}", seed, extra) for seed in args.seeds}
    text = report(args.out, args.seeds, seconds, extra)
    print(text)
    if args.docs:
        splice(args.docs, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
