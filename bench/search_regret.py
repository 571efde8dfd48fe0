"""Does the search pick the best student for its budget? A reference pool and the regret of
each way of picking (issue 27).

    ./dev python bench/search_regret.py --out ~/.cache/gtn-nas/bench/search-regret
    ./dev python bench/search_regret.py --quick --out /tmp/regret-quick      # minutes
    ./dev python bench/search_regret.py --out DIR --docs docs/BENCHMARKS.md   # + splice

The regime is the evidence study's (docs/BENCHMARKS.md, "Evidence study"): Fashion-MNIST at
16x16, students of resnet_supernet (width 0.25) trained without a teacher for 30 epochs on
1,000 labelled images (SGD 0.05, cosine, batch 64), validated on 10% of the official training
set (6,000 images, what the trained selection ranks on), tested on the official 10,000 test
images. The device is this machine (host_cpu: ONNX Runtime, batch 1, 2 threads).

Stages (each result written when done; a re-run skips what is finished):

1. ``latency`` (run it on a quiet machine): ``--budget-students`` random students timed here;
   each tier's budget is the 25th/50th/90th percentile, as ``gtn-nas run`` sets them. Every
   latency any stage needs is measured once and kept in ``latency.json``, so the pool and
   every search judge a student by the same number.
2. ``proposals``: for each search seed, NNI's evolution under those budgets ranked by each
   compared score (FLOPs, NASWOT, parameters); the proxy picks are its best-scored students.
3. ``halving``: the trained selection (``gtn-nas run``'s default: the best FLOPs-ranked
   proposals trained by successive halving, Optuna's pruner) for each search seed, training
   seed ``100 + seed`` (never the pool's seeds).
4. ``pool``: per tier ``--pool-size`` random students whose latency lies between half the
   budget and the budget (where a search looks), plus every pick of every compared search;
   each trained on the full recipe with seeds 1 and 2, validated after every epoch (so other
   halving settings can be replayed on the curves without training again).
5. ``report``: per method, tier and search seed the pick's test top-1 (mean of the two
   seeds), its rank in the pool, its regret (points below the pool's best within the
   budget), whether it is among the best 10%, and the search's cost in student trainings and
   seconds; ``REGRET.md`` and PNGs in ``--out``.

Parallel trainings run in ``--workers`` processes of one thread each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

SPACE, WIDTH, DATA = "resnet_supernet", 0.25, "fashion-mnist"
PROXY_METHODS = ("flops", "naswot", "params")
POOL_SEEDS = (1, 2)


@dataclasses.dataclass
class Scale:
    image_size: int = 16
    labelled: int = 1000
    val_fraction: float = 0.1
    epochs: int = 30
    budget_students: int = 300
    budget_evals: int = 200
    search_seeds: tuple[int, ...] = (0, 1, 2)
    pool_size: int = 30
    candidates: int = 9
    reduction_factor: int = 3
    min_epochs: int | None = None
    batch_size: int = 64


QUICK = Scale(labelled=500, epochs=6, budget_students=60, budget_evals=60, search_seeds=(0,),
              pool_size=6, candidates=4)


def say(text: str) -> None:
    print(f"[regret {time.strftime('%H:%M:%S')}] {text}", flush=True)


def write_json(path: Path, data: Any) -> None:
    from gtn_nas.fileio import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- the regime
def build_space(scale: Scale):
    from gtn_nas.space.plugins import build_space as build

    return build(SPACE, num_classes=10, in_channels=3, input_size=scale.image_size,
                 width_mult=WIDTH)


def recipe(scale: Scale, seed: int):
    """The students' training without a teacher (what the pool and the trials train)."""
    from gtn_nas.distill.jobs import DistillRunConfig
    from gtn_nas.engine import TrainConfig

    return DistillRunConfig(
        method="none", students=("pool",), data=data_config(scale), seeds=(seed,), export=False,
        train=TrainConfig(epochs=scale.epochs, batch_size=scale.batch_size, schedule="cosine",
                          progress=False))


def data_config(scale: Scale):
    """The students' data: ``scale.labelled`` Fashion-MNIST images at ``scale.image_size``."""
    from gtn_nas.config import DataConfig

    return DataConfig(DATA, image_size=scale.image_size, limit=scale.labelled,
                      options={"val_fraction": scale.val_fraction})


def host_profile():
    from gtn_nas.hardware.profiles import load_profile

    return load_profile("host_cpu")


class CachedLatency:
    """Latency measured here once per student, kept in ``latency.json`` (source ``measured``)."""

    source = "measured"

    def __init__(self, space, profile, path: Path) -> None:
        from gtn_nas.hardware.latency import MeasuredLatency

        self.space, self.path = space, path
        self.measure = MeasuredLatency(space, profile)
        self.cache: dict[str, float] = read_json(path) or {}
        self.new = 0

    def __call__(self, sample) -> float:
        from gtn_nas.search.selection import sample_key

        key = sample_key(self.space.validate(sample))
        if key not in self.cache:
            self.cache[key] = round(float(self.measure(sample)), 6)
            self.new += 1
            if self.new % 50 == 0:
                self.save()
        return self.cache[key]

    def save(self) -> None:
        write_json(self.path, self.cache)


# ----------------------------------------------------------------------------- stage 1
def latency_stage(out: Path, scale: Scale) -> dict[str, Any]:
    from gtn_nas.search.budgets import device_budgets

    path = out / "budgets.json"
    done = read_json(path)
    if done is not None:
        say(f"latency: finished earlier ({done['rule']})")
        return done
    space = build_space(scale)
    profile = host_profile()
    latency = CachedLatency(space, profile, out / "latency.json")
    started = time.perf_counter()
    budgets, rule = device_budgets(space, profile, latency, rule="latency",
                                   students=scale.budget_students, seed=0)
    latency.save()
    record = {"budgets": {t: b.limits() for t, b in budgets.items()}, "rule": rule,
              "seconds": round(time.perf_counter() - started, 1),
              "load": os.getloadavg()[0]}
    write_json(path, record)
    say(f"latency: {rule}: " + ", ".join(f"{t} <= {b['latency_ms']:.4g} ms"
                                          for t, b in record["budgets"].items()))
    return record


# ----------------------------------------------------------------------------- stage 2
def proposal_stage(out: Path, scale: Scale, budgets: dict[str, Any]) -> None:
    """Each seed's evolution under each score; candidates saved for the halving stage."""
    from gtn_nas.hardware.profiles import TierBudget
    from gtn_nas.search.scoring import search_scorer
    from gtn_nas.search.strategy import run_search
    from gtn_nas.search.devices import distinct_picks

    space = build_space(scale)
    profile = dataclasses.replace(host_profile(), budgets={
        t: TierBudget(**limits) for t, limits in budgets["budgets"].items()})
    latency = CachedLatency(space, profile, out / "latency.json")
    splits = None
    for seed in scale.search_seeds:
        for method in PROXY_METHODS:
            path = out / "searches" / f"{method}-seed{seed}.json"
            if read_json(path) is not None:
                continue
            if method == "naswot" and splits is None:
                splits = data_config(scale).load(seed=0, augment=False)
            scorer, _ = search_scorer(method, space, data=splits, seed=seed)
            started = time.perf_counter()
            result = run_search(space, profile, budget_evals=scale.budget_evals, seed=seed,
                                scorer=scorer, scored_by=scorer.description, remeasure=False,
                                latency=latency)
            notes = distinct_picks(result)
            seconds = time.perf_counter() - started
            latency.save()
            write_json(path, {
                "method": method, "seed": seed, "scored_by": scorer.description,
                "seconds": round(seconds, 2), "notes": notes,
                "picks": {t: p.to_json() for t, p in result.picks.items()},
                "candidates": [c.to_json() for c in result.candidates]})
            say(f"proposals: {method} seed {seed}: {len(result.candidates)} candidates in "
                f"{seconds:.0f} s")


# ----------------------------------------------------------------------------- stage 3
def halving_task(task: dict[str, Any]) -> None:
    """One trained search (one search seed): successive halving over the FLOPs proposals."""
    from gtn_nas.search.selection import HalvingConfig, bands, propose, select_by_training
    from gtn_nas.search.strategy import Candidate

    scale = Scale(**task["scale"])
    out = Path(task["out"])
    seed = task["seed"]
    space = build_space(scale)
    search = read_json(out / "searches" / f"flops-seed{seed}.json")
    budgets = read_json(out / "budgets.json")["budgets"]
    candidates = [Candidate(c["sample"], c["params"], c["mflops"], c["latency_ms"],
                            c["latency_source"], c["score"]) for c in search["candidates"]]
    halving = HalvingConfig(candidates=scale.candidates,
                            reduction_factor=scale.reduction_factor,
                            min_epochs=scale.min_epochs)
    lows = bands(budgets, halving.band)
    proposals = {t: propose(space, candidates, budgets[t], halving.candidates, lows[t])
                 for t in budgets}
    folder = out / "halving" / f"seed{seed}"
    started = time.perf_counter()
    chosen = select_by_training(space, proposals, budgets, recipe(scale, 100 + seed), folder,
                                device="host_cpu", halving=halving, seed=100 + seed)
    wall = time.perf_counter() - started
    write_json(out / "searches" / f"trained-seed{seed}.json", {
        "method": "trained", "seed": seed, "wall_seconds": round(wall, 1),
        "picks": {t: {"sample": s.pick.sample, "latency_ms": s.pick.latency_ms,
                      "params": s.pick.params, "mflops": s.pick.mflops,
                      "val_acc": s.pick.final} for t, s in chosen.items()},
        "selection": {t: s.to_json() for t, s in chosen.items()}})


# ----------------------------------------------------------------------------- stage 4
def pool_students(out: Path, scale: Scale, budgets: dict[str, Any]) -> dict[str, Any]:
    """Per tier ``pool_size`` random students in [budget/2, budget] (pool.json), drawn once."""
    from gtn_nas.search.selection import sample_key

    path = out / "pool.json"
    pool = read_json(path)
    if pool is not None:
        return pool
    space = build_space(scale)
    latency = CachedLatency(space, host_profile(), out / "latency.json")
    pool = {"tiers": {}, "students": {}}
    index = 0
    for tier, limits in budgets["budgets"].items():
        limit = limits["latency_ms"]
        members: list[str] = []
        tries = 0
        while len(members) < scale.pool_size:
            tries += 1
            if tries > 200 * scale.pool_size:
                raise SystemExit(f"regret: tier {tier}: too few random students in "
                                 f"[{limit / 2:.4g}, {limit:.4g}] ms")
            sample = space.sample(5_000_000 + index)
            index += 1
            value = latency(sample)
            key = sample_key(sample)
            if limit / 2 <= value <= limit and key not in members:
                members.append(key)
                pool["students"][key] = {"sample": sample, "latency_ms": value}
        pool["tiers"][tier] = members
    latency.save()
    write_json(path, pool)
    return pool


def pool_tasks(out: Path, scale: Scale, pool: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pool student and every pick of every search, each seed of POOL_SEEDS."""
    from gtn_nas.search.selection import sample_key

    from regret_tables import searched_picks

    students = dict(pool["students"])
    budgets = (read_json(out / "budgets.json") or {}).get("budgets", {})
    for _, _, picks in searched_picks(out, budgets):
        for pick in picks.values():
            students.setdefault(sample_key(pick["sample"]), {"sample": pick["sample"],
                                                             "latency_ms": pick["latency_ms"]})
    tasks = []
    for seed in POOL_SEEDS:
        for key, info in sorted(students.items()):
            tasks.append({"kind": "pool", "key": key, "sample": info["sample"], "seed": seed,
                          "dir": str(out / "pool" / key / f"seed{seed}"),
                          "scale": dataclasses.asdict(scale), "name": f"pool {key} seed {seed}"})
    return tasks


def pool_task(task: dict[str, Any]) -> None:
    from gtn_nas.distill.jobs import accuracy, load_splits, train_job
    from gtn_nas.distill.specs import StudentSpec

    scale = Scale(**task["scale"])
    space = build_space(scale)
    config = recipe(scale, task["seed"])
    splits = load_splits(config, seed=0)
    spec = StudentSpec(task["key"], space, space.validate(task["sample"]), "pool")
    run_dir = Path(task["dir"])
    method, result = train_job(config, spec, task["seed"], splits, None, None, run_dir)
    student = method.export_student()
    from gtn_nas.space.costs import UnitCosts

    write_json(run_dir / "pool.json", {
        "key": task["key"], "seed": task["seed"], "test_acc": accuracy(student, splits.test),
        "mflops": round(UnitCosts(space).flops(spec.sample) / 1e6, 4),
        "val": [r.get("val/acc") for r in result.history],
        "train_loss": [r.get("train/loss") for r in result.history],
        "seconds": round(sum(r.get("seconds", 0.0) for r in result.history), 2),
        "params": sum(p.numel() for p in student.parameters())})


def task_done(task: dict[str, Any]) -> bool:
    if task["kind"] == "pool":
        return read_json(Path(task["dir"]) / "pool.json") is not None
    return read_json(Path(task["out"]) / "searches" / f"trained-seed{task['seed']}.json") \
        is not None


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        (pool_task if task["kind"] == "pool" else halving_task)(task)
        error = None
    except Exception as exc:  # noqa: BLE001 - one failed job must not stop the study
        error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    return {"name": task["name"], "seconds": round(time.perf_counter() - started, 1),
            "error": error}


def run_tasks(tasks: list[dict[str, Any]], workers: int, label: str) -> int:
    todo = [t for t in tasks if not task_done(t)]
    say(f"{label}: {len(tasks)} jobs, {len(tasks) - len(todo)} finished earlier, {len(todo)} "
        f"to run in {workers} worker(s)")
    failures = 0
    if not todo:
        return 0
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers, maxtasksperchild=20) as pool:
        for number, result in enumerate(pool.imap_unordered(run_task, todo), start=1):
            left = (time.perf_counter() - started) / number * (len(todo) - number)
            status = "FAILED " + result["error"] if result["error"] else "done"
            say(f"{label} [{number}/{len(todo)}] {result['name']}: {status} "
                f"({result['seconds']:.0f} s; about {left / 60:.0f} min left)")
            failures += bool(result["error"])
    return failures


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Scale]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/search-regret")
    parser.add_argument("--quick", action="store_true", help="a reduced run in minutes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stages", default="latency,proposals,halving,pool,report")
    parser.add_argument("--docs", help="splice the report into this markdown file")
    for field in dataclasses.fields(Scale):
        if field.name in ("search_seeds",):
            parser.add_argument("--search-seeds", type=lambda t: tuple(int(x) for x in
                                                                       t.split(",")))
        else:
            parser.add_argument(f"--{field.name.replace('_', '-')}",
                                type=float if field.type in ("float",) else int)
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else Scale()
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(Scale)
               if getattr(args, f.name, None) is not None}
    return args, dataclasses.replace(scale, **changes)


def main(argv: list[str] | None = None) -> int:
    from evidence import machine_line
    from regret_tables import splice_report, write_report

    args, scale = parse_args(argv)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    saved = read_json(out / "scale.json")
    if saved is not None and saved != json.loads(json.dumps(dataclasses.asdict(scale))):
        raise SystemExit(f"regret: {out} holds a study at another scale ({saved}); use "
                         f"another --out")
    write_json(out / "scale.json", dataclasses.asdict(scale))
    stages = args.stages.split(",")
    say(f"scale: {scale}; machine: {machine_line()}")
    budgets = latency_stage(out, scale) if "latency" in stages else \
        read_json(out / "budgets.json")
    if "proposals" in stages:
        proposal_stage(out, scale, budgets)
    if "halving" in stages:
        tasks = [{"kind": "halving", "seed": s, "out": str(out),
                  "scale": dataclasses.asdict(scale), "name": f"trained search seed {s}"}
                 for s in scale.search_seeds]
        run_tasks(tasks, args.workers, "halving")
    if "pool" in stages:
        pool = pool_students(out, scale, budgets)
        run_tasks(pool_tasks(out, scale, pool), args.workers, "pool")
    if "report" in stages:
        report = write_report(out, scale, machine_line())
        say(f"report: {report}")
        if args.docs:
            splice_report(out, Path(args.docs))
            say(f"spliced into {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
