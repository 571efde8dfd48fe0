"""The evidence study: does a GTN teacher give better students, does a score rank them, at what
cost, and are the latencies right? One command regenerates every table and figure:

    ./dev bench                      # the study at the scale below (hours on 2 cores; resumable)
    ./dev bench --quick              # the same stages, reduced, in about 20 minutes

The scale is the regime where distillation helps (docs/BENCHMARKS.md, "Where distillation
helps"): teachers trained on ``--limit`` 10,000 labelled Fashion-MNIST images at 16x16 for 15
epochs, students on ``--labelled`` 1,000 for 30 epochs with the regime's recipes (KD at T 1,
0.5 CE + 0.5 KD; DKD at beta 2 with its 1/12 warm-up), beside training alone (``baseline``) and
label smoothing (``ls``), on seeds 1-5. ``--quick`` keeps its numbers above chance (teachers of
3 epochs on 2,000 images, students of 8 on 500).
    ./dev bench --out DIR --workers 2 --seeds 0,1,2 --limit 3000 ...   (see --help)

Stages (each result is written when done; a re-run skips what is finished, so a killed study
resumes where it stopped):

1. ``search``: s/m/l for host_cpu (``gtn-nas run``'s search stage picking by the NASWOT
   score alone, ``select: proxy``, as this study ran on 2026-12-07 when budgets were MFLOPs
   percentiles; now latency budgets measured here) plus ``--random-students`` random students
   of the pool.
2. ``teachers``: standard, SFTN (one per student), GTN (one per ``--samplers``), each trained
   with the same recipe on the same data; and ``gtn-warmup``, the recipe ``gtn-nas run``
   ships: a standard teacher for ``teacher_epochs - gtn_warmup`` epochs, then ``--gtn-warmup``
   epochs of GTN fine-tuning (uniform sampler; the first half with the teacher frozen while the
   branches warm up; a fifth of the learning rate, branch weight 0.3): the same teacher epochs
   as every other teacher.
3. ``distill``: every (teacher, method in KD/DKD, student, seed), plus each student without a
   teacher (``baseline``) and with label smoothing (``ls``); the proxy study's
   ``--proxy-students`` random students distilled (KD) from the standard teacher, seed 0, the
   first ten also on seed 1 (seed noise beside the pool's spread). Seed by seed (the proxy study after the first), so a
   study stopped early holds complete comparisons. Students validate after their last epoch
   on a ``--student-val-fraction`` split; every accuracy reported is the last epoch's on the
   official test set.
4. ``proxy``: the scores of the proxy students before training (branch scores with and without
   per-path BN recalibration, params, FLOPs, SynFlow, NASWOT, short training).
5. ``cost``: training-step time and forward FLOPs per image of each teacher method on one
   batch (bench/teacher_step_time.py's measurement), beside the teachers' wall times.
6. ``speed``: ORT vs PyTorch eager for the picks, search time for ``--search-time-candidates``.
7. ``latency``: bench/latency_table.py (a host_cpu table built here; ``--latency-students``
   held-out students measured twice: the predictor's error beside the machine's own repeat).
8. ``e2e``: README's main command (``gtn-nas run``) timed, the environment already built.
9. ``report``: ``EVIDENCE.md`` and PNGs in ``--out`` (bench/evidence_tables.py).

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist``; when it is absent the study
installs it with apt-get where it runs as root, else says how and stops. Parallel jobs run in
``--workers`` processes of one thread each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence_tables import splice_report, write_report  # noqa: E402

SPACE = "resnet_supernet"
WIDTH = 0.25
DATA = "fashion-mnist"
RECIPES = {  # the regime's recipes (docs/BENCHMARKS.md, "Where distillation helps")
    "kd": {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5},
    "dkd": {"beta": 2.0},  # warm-up: the distiller's default, 1/12 of the epochs
}
BASELINES = {"baseline": "none", "ls": "ls"}  # teacherless arms: folder -> method
PROXY_NOISE_STUDENTS = 10  # proxy students trained with a second seed (seed noise)
PROXY_IMAGES = 1000  # validation images each branch score reads (the search's default: all)
GTN_EVAL_PATHS = 2  # branch accuracies logged per epoch (diagnostics only; 8 costs ~4x the epoch)
# gtn-warmup's fine-tuning, as gtn-nas run fine-tunes its pre-trained teacher (run/config.py)
WARMUP_LR = 0.01  # a fifth of the pre-training's 0.05 (gtn-nas run's teacher.train.lr)
WARMUP_ALPHA = 0.3


@dataclasses.dataclass
class Scale:
    """What the study runs; printed beside every table."""

    limit: int = 10000  # labelled images every teacher trains on
    labelled: int = 1000  # labelled images every student trains on (the regime)
    image_size: int = 16
    teacher: str = "resnet32"
    teacher_epochs: int = 15
    student_epochs: int = 30
    student_val_fraction: float = 0.02  # students validate on 1,200 images, not 6,000
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    random_students: int = 3
    sftn_random: bool = False  # SFTN teachers for the random students too (else s/m/l only)
    sftn_for: tuple[str, ...] = ("s", "m", "l")  # the picks that get their own SFTN teacher
    shared_split: bool = False  # teachers validate on the students' split, so students with
    #                             --labelled == --limit train on exactly the teachers' images
    proxy_students: int = 50
    search_evals: int = 200
    search_time_candidates: int = 2000
    latency_students: int = 100
    samplers: tuple[str, ...] = ("uniform", "learned")
    gtn_warmup: int = 6  # GTN epochs of gtn-warmup after standard pre-training (0: not run)
    methods: tuple[str, ...] = ("kd", "dkd")
    baselines: tuple[str, ...] = ("baseline", "ls")
    batch_size: int = 64


THREADS_PER_WORKER = 1
"""Torch threads of each study worker (workers x threads never exceeds the usable cores)."""

QUICK = Scale(limit=2000, labelled=500, teacher_epochs=3, student_epochs=8, seeds=(1, 2),
              random_students=1, proxy_students=6, search_evals=12, search_time_candidates=60,
              latency_students=10, gtn_warmup=2)
"""Minutes, and above chance: teachers of 3 epochs on 2,000 images, students of 8 on 500."""


# ----------------------------------------------------------------------------- helpers
def say(text: str) -> None:
    print(f"[evidence {time.strftime('%H:%M:%S')}] {text}", flush=True)


def ensure_fashion_mnist() -> None:
    """Installs Debian's dataset-fashion-mnist when absent (as root), else stops with a hint."""
    from gtn_nas.data import FASHION_MNIST_ROOT

    if Path(FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz").is_file():
        return
    hint = "apt-get install dataset-fashion-mnist"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(f"evidence: Fashion-MNIST is not installed in {FASHION_MNIST_ROOT}; "
                         f"run `{hint}` (as root) and start again")
    say(f"Fashion-MNIST not found; running {hint}")
    for command in (["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"],
                    ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]):
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        if done.returncode == 0 and command[1] == "install":
            return
    raise SystemExit(f"evidence: `{hint}` failed ({done.stderr.strip()[-200:]}); install it "
                     f"and start again")


def write_json(path: Path, data: Any) -> None:
    from gtn_nas.fileio import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def student_files(out: Path) -> list[Path]:
    return sorted((out / "students").glob("*.yaml"))


def sftn_students(out: Path, scale: Scale) -> list[Path]:
    """The students that get their own SFTN teacher: the picks named by ``sftn_for`` (s/m/l:
    one SFTN teacher costs ~1.8 standard ones), the random ones too with ``sftn_random``."""
    return [f for f in student_files(out) if f.stem in scale.sftn_for
            or (scale.sftn_random and f.stem.startswith("random"))]


# ----------------------------------------------------------------------------- stage 1
def search_stage(out: Path, scale: Scale) -> None:
    """s/m/l of a host_cpu search + random students, as sample files in out/students/."""
    from gtn_nas.config import DataConfig
    from gtn_nas.run.config import RunConfig, SearchStage, TeacherStage
    from gtn_nas.run.pipeline import search_stage as run_search_stage
    from gtn_nas.space.plugins import build_space
    from gtn_nas.space.students import load_sample_file, save_sample_file

    record_path = out / "search" / "search.json"
    if read_json(record_path) is not None:
        say("search: finished earlier")
        return
    say(f"search: host_cpu s/m/l, {scale.search_evals} candidates, NASWOT score")
    data = DataConfig(DATA, image_size=scale.image_size, limit=scale.limit)
    config = RunConfig(data=data, seed=0,
                       teacher=TeacherStage(space=SPACE, width_mult=WIDTH),
                       search=SearchStage(hw=("host_cpu",), budget_evals=scale.search_evals,
                                          latency="measure", score="naswot", select="proxy"))
    started = time.perf_counter()
    record = run_search_stage(config, out / "search", teacher_path=Path("unused"))
    record["seconds"] = round(time.perf_counter() - started, 1)
    splits = data.load(seed=0, augment=False)
    space = build_space(SPACE, num_classes=splits.num_classes, in_channels=splits.in_channels,
                        input_size=splits.image_size, width_mult=WIDTH)
    students = out / "students"
    students.mkdir(parents=True, exist_ok=True)
    picks = out / "search" / record["devices"]["host_cpu"]["folder"] / "students"
    taken = set()
    for tier in ("s", "m", "l"):
        sample = load_sample_file(picks / f"{tier}.yaml", space)
        taken.add(tuple(sorted(sample.items())))
        save_sample_file(students / f"{tier}.yaml", sample, space, role=f"host_cpu pick {tier}")
    write_random_students(space, students, "random", scale.random_students, 777_000, taken)
    write_random_students(space, out / "proxy" / "students", "p", scale.proxy_students,
                          888_000, set())
    write_json(record_path, record)


def write_random_students(space, folder: Path, prefix: str, count: int, base: int,
                          taken: set) -> None:
    from gtn_nas.space.students import save_sample_file

    folder.mkdir(parents=True, exist_ok=True)
    index = made = 0
    while made < count:
        sample = space.sample(base + index)
        index += 1
        key = tuple(sorted(sample.items()))
        if key in taken:
            continue
        taken.add(key)
        save_sample_file(folder / f"{prefix}{made:02d}.yaml", sample, space,
                         role=f"random student (seed {base + index - 1})")
        made += 1


# ----------------------------------------------------------------------------- tasks
def teacher_tasks(out: Path, scale: Scale) -> list[dict[str, Any]]:
    data = {"name": DATA, "image_size": scale.image_size, "limit": scale.limit}
    if scale.shared_split:
        data["options"] = {"val_fraction": scale.student_val_fraction}
    base = {"method": "standard", "teacher": scale.teacher, "data": data, "space": SPACE,
            "width_mult": WIDTH}
    tasks = [{"name": "standard", "config": base}]
    for sampler in scale.samplers:  # GTN before SFTN: the study's question first
        tasks.append({"name": f"gtn-{sampler}",
                      "config": {**base, "method": "gtn", "sampler": sampler,
                                 "eval_paths": GTN_EVAL_PATHS}})
    if scale.gtn_warmup:
        tasks.append(warmup_task(base, scale))
    for file in sftn_students(out, scale):
        tasks.append({"name": f"sftn-{file.stem}",
                      "config": {**base, "method": "sftn", "student": str(file)}})
    for task in tasks:
        task.setdefault("epochs", scale.teacher_epochs)
        task.update(kind="teacher", dir=str(out / "teachers" / task["name"]),
                    batch_size=scale.batch_size)
    return tasks


def warmup_task(base: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """gtn-warmup: ``teacher_epochs - gtn_warmup`` standard epochs (in its ``pretrain/``), then
    ``gtn_warmup`` GTN epochs from those weights, half of them with the teacher frozen."""
    pre_epochs = scale.teacher_epochs - scale.gtn_warmup
    if scale.gtn_warmup < 2 or pre_epochs < 1:
        raise SystemExit(f"evidence: --gtn-warmup must be 0 or in [2, teacher_epochs - 1] "
                         f"(= {scale.teacher_epochs - 1}), got {scale.gtn_warmup}")
    return {"name": "gtn-warmup", "epochs": scale.gtn_warmup, "lr": WARMUP_LR,
            "pretrain": {"config": base, "epochs": pre_epochs},
            "config": {**base, "method": "gtn", "sampler": "uniform", "alpha": WARMUP_ALPHA,
                       "warmup_epochs": scale.gtn_warmup // 2, "eval_paths": GTN_EVAL_PATHS}}


def distill_tasks(out: Path, scale: Scale) -> list[dict[str, Any]]:
    """One task per (teacher, method, student, seed): a one-job shard of a distill run."""
    students = [str(f) for f in student_files(out)]
    runs = []
    for method in scale.methods:
        for teacher in ["standard"] + gtn_teachers(scale):
            runs.append((teacher, method, students))
        for student in sftn_students(out, scale):
            runs.append((f"sftn-{student.stem}", method, [str(student)]))
    for folder in scale.baselines:
        runs.append((folder, BASELINES[folder], students))
    tasks = []
    for teacher, method, members in runs:
        tasks.extend(_shards(out / "distill" / teacher / method, teacher, method, members,
                             scale.seeds, out, scale))
    proxy = [str(f) for f in sorted((out / "proxy" / "students").glob("*.yaml"))]
    # The proxy students learn with the regime's recipe (KD from the standard teacher); the
    # first PROXY_NOISE_STUDENTS also with a second seed, to set seed noise beside the spread.
    proxy_tasks = _shards(out / "proxy" / "distill", "standard", "kd", proxy, (0,), out, scale)
    proxy_tasks += _shards(out / "proxy" / "distill", "standard", "kd",
                           proxy[:PROXY_NOISE_STUDENTS], (1,), out, scale)
    # A study stopped early holds complete comparisons: seed by seed, KD before DKD, the
    # proxy study after the first seed.
    order = {m: i for i, m in enumerate(("none", "ls", *scale.methods))}
    tasks.sort(key=lambda t: (t["seed"], order.get(t["config"]["method"], 9)))
    first = [t for t in tasks if t["seed"] == scale.seeds[0]]
    return first + proxy_tasks + tasks[len(first):]


def gtn_teachers(scale: Scale) -> list[str]:
    """The GTN teachers' names: one per sampler, and gtn-warmup unless it is off."""
    return [f"gtn-{s}" for s in scale.samplers] + (["gtn-warmup"] if scale.gtn_warmup else [])


def _shards(folder: Path, teacher: str, method: str, students: list[str], seeds, out: Path,
            scale: Scale) -> list[dict[str, Any]]:
    teacher_path = None if method in BASELINES.values() else str(
        out / "teachers" / teacher / "teacher.pt")
    config = {"teacher": teacher_path, "students": list(students), "method": method,
              "method_options": dict(RECIPES.get(method, {})),
              "data": {"name": DATA, "image_size": scale.image_size, "limit": scale.labelled,
                       "options": {"val_fraction": scale.student_val_fraction}},
              "space": SPACE, "width_mult": WIDTH, "seeds": list(seeds), "export": False}
    jobs = [(Path(s).stem, seed) for s in students for seed in seeds]
    return [{"kind": "distill", "dir": str(folder), "config": config, "shard": [k + 1, len(jobs)],
             "seed": seed,
             "name": f"{teacher}/{method}/{student}/seed{seed}", "epochs": scale.student_epochs,
             "batch_size": scale.batch_size,
             "done": str(folder / student / f"seed{seed}" / "result.json")}
            for k, (student, seed) in enumerate(jobs)]


def task_done(task: dict[str, Any]) -> bool:
    if task["kind"] == "teacher":
        return (Path(task["dir"]) / "done.json").is_file()
    return read_json(Path(task["done"])) is not None


def usable_cores() -> int:
    """The cores this process may run on (its affinity, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def plan_workers(workers: int, threads: int = THREADS_PER_WORKER,
                 cores: int | None = None) -> int:
    """The worker count to run: ``workers`` unless ``workers x threads`` exceeds the cores, in
    which case as many as fit (at least 1), said in one line. On 2 cores a teacher trained
    beside a second busy process took 132-200 s per epoch instead of 20 s: oversubscribed
    threads cost far more than they gain."""
    cores = usable_cores() if cores is None else cores
    if workers < 1:
        raise SystemExit(f"evidence: --workers must be >= 1, got {workers}")
    if workers * threads <= cores:
        return workers
    fitting = max(1, cores // threads)
    say(f"{workers} workers x {threads} thread(s) exceed the {cores} usable cores: running "
        f"{fitting} worker(s)")
    return fitting


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Runs one task in a worker (THREADS_PER_WORKER threads); returns {name, seconds,
    error}."""
    import torch

    torch.set_num_threads(THREADS_PER_WORKER)
    started = time.perf_counter()
    try:
        if task["kind"] == "teacher":
            _run_teacher(task)
        else:
            _run_distill(task)
        error = None
    except Exception as exc:  # noqa: BLE001 - one failed job must not stop the study
        error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    return {"name": task["name"], "seconds": round(time.perf_counter() - started, 1),
            "error": error}


def _train(task: dict[str, Any], recipe):
    return dataclasses.replace(recipe, epochs=task["epochs"], batch_size=task["batch_size"],
                               schedule="cosine", progress=False, seed=0,
                               lr=task.get("lr", recipe.lr))


def _run_teacher(task: dict[str, Any]) -> None:
    """Trains one teacher (after its standard pre-training, for gtn-warmup); done.json holds
    the wall time of both and every epoch's seconds."""
    started = time.perf_counter()
    history = []
    config = dict(task["config"])
    if "pretrain" in task:
        pre = {**task, **task["pretrain"], "dir": str(Path(task["dir"]) / "pretrain")}
        pre.pop("lr")
        pre_result = _train_teacher(pre)
        history += pre_result.fit.history
        config["teacher_weights"] = str(pre_result.teacher_path)
    history += _train_teacher({**task, "config": config}).fit.history
    write_json(Path(task["dir"]) / "done.json", {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "epoch_seconds": [h.get("seconds") for h in history],
        "final": {k: v for k, v in history[-1].items() if isinstance(v, (int, float))}})


def _train_teacher(task: dict[str, Any]):
    from gtn_nas.config import from_mapping
    from gtn_nas.engine import TrainConfig
    from gtn_nas.teacher.train import TeacherRunConfig, train_teacher

    config = from_mapping(TeacherRunConfig, {**task["config"],
                                             "train": _train(task, TrainConfig())}, "teacher")
    resume = (Path(task["dir"]) / "last.pt").exists()  # a killed teacher continues
    return train_teacher(config, task["dir"], resume=resume)


def _run_distill(task: dict[str, Any]) -> None:
    from gtn_nas.config import from_mapping
    from gtn_nas.distill.jobs import DistillRunConfig, distill, student_recipe

    # Validated after the last epoch only: the study reports the last epoch's test top-1, and
    # validation never changes training (tests/test_engine.py), so every number is the same as
    # with per-epoch validation, without its 29 passes over the validation split.
    train = dataclasses.replace(_train(task, student_recipe()), val_every=task["epochs"])
    config = from_mapping(DistillRunConfig, {**task["config"], "train": train}, "distill")
    distill(config, task["dir"], shard=tuple(task["shard"]))


def run_tasks(tasks: list[dict[str, Any]], workers: int, label: str) -> list[dict[str, Any]]:
    workers = plan_workers(workers)
    todo = [t for t in tasks if not task_done(t)]
    say(f"{label}: {len(tasks)} jobs, {len(tasks) - len(todo)} finished earlier, "
        f"{len(todo)} to run in {workers} worker(s)")
    failures = []
    if not todo:
        return failures
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, maxtasksperchild=8) as pool:
        for number, result in enumerate(pool.imap_unordered(run_task, todo), start=1):
            elapsed = time.perf_counter() - started
            left = elapsed / number * (len(todo) - number)
            status = "FAILED " + result["error"] if result["error"] else "done"
            say(f"{label} [{number}/{len(todo)}] {result['name']}: {status} "
                f"({result['seconds']:.0f} s; about {left / 60:.0f} min left)")
            if result["error"]:
                failures.append(result)
    return failures


# ----------------------------------------------------------------------------- stage 4
def proxy_stage(out: Path, scale: Scale) -> None:
    """Scores of the proxy students before training (out/proxy/scores.json)."""
    import torch

    from gtn_nas.data import load_dataset
    from gtn_nas.space.plugins import build_space
    from gtn_nas.search.scoring import build_scorer, load_branch_scorer
    from gtn_nas.space.students import load_sample_file

    path = out / "proxy" / "scores.json"
    if read_json(path) is not None:
        say("proxy scores: finished earlier")
        return
    torch.set_num_threads(2)
    say("proxy scores: branch (per sampler, recalibrated and shared BN), params, FLOPs, "
        "SynFlow, NASWOT, short training")
    splits = load_dataset(DATA, image_size=scale.image_size, limit=scale.limit, seed=0,
                          augment=False)
    space = build_space(SPACE, num_classes=splits.num_classes, in_channels=splits.in_channels,
                        input_size=splits.image_size, width_mult=WIDTH)
    scorers, descriptions = {}, {}
    for sampler in scale.samplers:
        teacher = out / "teachers" / f"gtn-{sampler}" / "teacher.pt"
        branches = ["combined", "full"] if sampler != "uniform" else [1]
        for branch in branches:
            for recal in (4, 0):
                name = f"gtn-{sampler} branch {branch}{'' if recal else ' (shared BN)'}"
                try:
                    _, scorer = load_branch_scorer(teacher, recalibration_batches=recal,
                                                   branch=branch, seed=0,
                                                   images=PROXY_IMAGES)
                except Exception as exc:  # noqa: BLE001 - e.g. no full-path branch
                    say(f"proxy scores: {name} unavailable ({exc})")
                    continue
                scorers[name] = scorer
    for kind in ("params", "flops", "synflow", "naswot"):
        scorers[kind] = build_scorer(kind, space, data=splits, seed=0)
    # one epoch of the students' own labelled images (16 steps of 64), scored on 1,024
    # validation images: the short-training score
    student_data = load_dataset(DATA, image_size=scale.image_size, limit=scale.labelled,
                                seed=0)
    scorers["short"] = build_scorer("short", space, data=student_data, seed=0,
                                    short_steps=max(1, scale.labelled // 64))
    rows = []
    for file in sorted((out / "proxy" / "students").glob("*.yaml")):
        sample = load_sample_file(file, space)
        rows.append({"student": file.stem,
                     **{name: float(scorer(sample)) for name, scorer in scorers.items()}})
    for name, scorer in scorers.items():
        descriptions[name] = getattr(scorer, "description", name)
    write_json(path, {"rows": rows, "descriptions": descriptions})


# ----------------------------------------------------------------------------- cost
def cost_stage(out: Path, scale: Scale) -> None:
    """Training-step time and forward FLOPs per image of each teacher method on one batch of
    the study's data, one thread (as the workers ran): out/cost.json."""
    import statistics

    import torch

    from gtn_nas.space.costs import count_flops
    from gtn_nas.data import load_dataset
    from gtn_nas.teacher.methods.gtn import GTNMethod
    from gtn_nas.teacher.methods.path_sampler import PathSampler
    from gtn_nas.teacher.methods.sftn import SFTNMethod
    from gtn_nas.teacher.methods.standard import StandardMethod
    from gtn_nas.space.plugins import build_space
    from gtn_nas.space.students import load_sample_file
    from gtn_nas.teacher.zoo import build_teacher
    from teacher_step_time import _PlainBranches, step_times

    path = out / "cost.json"
    if read_json(path) is not None:
        say("cost: finished earlier")
        return
    say("cost: step time and forward FLOPs of each teacher method (one thread)")
    torch.set_num_threads(1)
    splits = load_dataset(DATA, image_size=scale.image_size, limit=scale.limit, seed=0,
                          augment=False)
    space = build_space(SPACE, num_classes=splits.num_classes, in_channels=splits.in_channels,
                        input_size=splits.image_size, width_mult=WIDTH)
    images, labels = zip(*(splits.train[i] for i in range(scale.batch_size)))
    x, y = torch.stack(images), torch.as_tensor(labels)

    def teacher():
        torch.manual_seed(0)
        return build_teacher(scale.teacher, num_classes=splits.num_classes,
                             in_channels=splits.in_channels)

    one = x[:1]
    standard = StandardMethod(teacher())
    rows = {"standard": {"step_ms": step_times(standard, x, y, 10) * 1e3,
                         "mflops": count_flops(standard.teacher, one) / 1e6}}
    for file in student_files(out):
        sample = load_sample_file(file, space)
        sftn = SFTNMethod.build(teacher(), space, sample, splits.image_size)
        rows[f"sftn-{file.stem}"] = {
            "step_ms": step_times(sftn, x, y, 10) * 1e3,
            "mflops": count_flops(_PlainBranches(sftn, space, sample), one) / 1e6}
    gtn = GTNMethod(teacher(), space, PathSampler(space, "uniform", seed=0), splits.image_size)
    rows["gtn-uniform"] = {
        "step_ms": step_times(gtn, x, y, 20) * 1e3,
        "mflops": statistics.mean(count_flops(_PlainBranches(gtn, space, space.sample(seed)),
                                              one) for seed in range(20)) / 1e6,
        "note": "mean over 20 uniformly drawn paths"}
    for row in rows.values():
        row["step_ratio"] = row["step_ms"] / rows["standard"]["step_ms"]
        row["flops_ratio"] = row["mflops"] / rows["standard"]["mflops"]
    write_json(path, {"batch": scale.batch_size, "threads": 1, "rows": rows})


# ----------------------------------------------------------------------------- stage 5
def speed_stage(out: Path, scale: Scale) -> None:
    """ORT vs PyTorch eager for the picks; search time for N candidates (out/speed.json)."""
    import numpy as np
    import torch

    from gtn_nas.data import load_dataset
    from gtn_nas.hardware.latency import measure_module
    from gtn_nas.space.plugins import build_space
    from gtn_nas.hardware.profiles import load_profile
    from gtn_nas.search.scoring import build_scorer
    from gtn_nas.search.strategy import run_search
    from gtn_nas.space.students import load_sample_file

    path = out / "speed.json"
    if read_json(path) is not None:
        say("speed: finished earlier")
        return
    say("speed: ORT vs PyTorch eager for the picks; search time")
    profile = load_profile("host_cpu")
    threads = profile.runtime.threads
    torch.set_num_threads(threads)
    splits = load_dataset(DATA, image_size=scale.image_size, limit=scale.limit, seed=0,
                          augment=False)
    space = build_space(SPACE, num_classes=splits.num_classes, in_channels=splits.in_channels,
                        input_size=splits.image_size, width_mult=WIDTH)
    shape = (1, space.in_channels, space.input_size, space.input_size)
    picks = {}
    for tier in ("s", "m", "l"):
        model = space.freeze(load_sample_file(out / "students" / f"{tier}.yaml", space),
                             seed=0).eval()
        ort_ms = measure_module(model, shape, profile).value("median")
        x = torch.zeros(shape)
        with torch.no_grad():
            for _ in range(profile.measurement.warmup):
                model(x)
            times = []
            for _ in range(profile.measurement.repeats):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1e3)
        picks[tier] = {"ort_ms": round(ort_ms, 4), "torch_ms": round(float(np.median(times)), 4)}
    from gtn_nas.search.budgets import device_budgets
    from gtn_nas.search.devices import device_latency
    from gtn_nas.space.costs import UnitCosts

    estimate = device_latency(space, profile, UnitCosts(space), mode="estimate")
    profile = dataclasses.replace(profile, budgets=device_budgets(space, profile, estimate,
                                                                  rule="latency")[0])
    timings = {}
    # the search itself at the full count (params: no scoring cost), NASWOT at a tenth of it
    counts = {"params": scale.search_time_candidates,
              "naswot": max(6, scale.search_time_candidates // 10)}
    for score, count in counts.items():
        scorer = build_scorer(score, space, data=splits, seed=0)
        started = time.perf_counter()
        result = run_search(space, profile, budget_evals=count, seed=0,
                            scorer=scorer, scored_by=score, latency_mode="estimate",
                            remeasure=False)
        timings[score] = {"seconds": round(time.perf_counter() - started, 1),
                          "candidates": len(result.candidates)}
    write_json(path, {"threads": threads, "picks": picks, "search": timings,
                      "latency_mode": "estimate (roofline; no table is shipped)"})


# ----------------------------------------------------------------------------- stage 7, 8
def latency_stage(out: Path, scale: Scale) -> None:
    """bench/latency_table.py (a table built here, held-out students measured twice):
    out/latency.md."""
    path = out / "latency.md"
    if path.is_file():
        say("latency: finished earlier")
        return
    say(f"latency: building a host_cpu table and measuring {scale.latency_students} held-out "
        f"students twice (bench/latency_table.py)")
    script = Path(__file__).resolve().parent / "latency_table.py"
    done = subprocess.run([sys.executable, str(script), "--space", "resnet_supernet",
                           "--students", str(scale.latency_students)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"evidence: bench/latency_table.py failed: {done.stderr[-300:]}")
    from gtn_nas.fileio import atomic_write_text

    atomic_write_text(path, done.stdout)


def e2e_stage(out: Path) -> None:
    """README's main command (`gtn-nas run`, default settings) timed: out/e2e.json."""
    path = out / "e2e.json"
    if read_json(path) is not None:
        say("e2e: finished earlier")
        return
    say("e2e: timing README's main command (gtn-nas run on digits)")
    run_dir = out / "e2e-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run([shutil.which("gtn-nas") or "gtn-nas", "run", "--out", str(run_dir)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"evidence: gtn-nas run failed: {done.stderr[-300:]}")
    write_json(path, {"seconds": round(seconds, 1), "command": "gtn-nas run (./dev run)",
                      "environment": "already built"})


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Scale]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/evidence")
    parser.add_argument("--quick", action="store_true", help="a reduced study in minutes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--docs", help="also splice the report into this Markdown file "
                                       "between its evidence markers (docs/BENCHMARKS.md), "
                                       "its figures copied to docs/evidence/")
    parser.add_argument("--stages",
                        default="search,teachers,distill,proxy,cost,speed,latency,e2e,report")
    for field in dataclasses.fields(Scale):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, default=None,
                            help=f"default {getattr(Scale(), field.name)}")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else Scale()
    changes = {}
    for field in dataclasses.fields(Scale):
        value = getattr(args, field.name)
        if value is None:
            continue
        default = getattr(Scale(), field.name)
        if isinstance(default, tuple):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            changes[field.name] = tuple(int(p) if isinstance(default[0], int) else p
                                        for p in parts)
        elif isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                parser.error(f"--{field.name.replace('_', '-')}: expected true or false, "
                             f"got {value!r}")
            changes[field.name] = value.lower() in ("true", "1", "yes")
        else:
            try:
                changes[field.name] = type(default)(value)
            except ValueError:
                parser.error(f"--{field.name.replace('_', '-')}: expected {type(default).__name__}, got {value!r}")
    return args, dataclasses.replace(scale, **changes)


def main(argv: list[str] | None = None) -> int:
    args, scale = parse_args(argv)
    out = Path(args.out)
    scale_path = out / "scale.json"
    previous = read_json(scale_path)
    current = json.loads(json.dumps(dataclasses.asdict(scale)))
    if previous is not None and previous != {k: v for k, v in current.items() if k in previous}:
        raise SystemExit(f"evidence: {out} holds a study at another scale ({previous}); "
                         f"choose another --out or the same options")
    if previous is not None and set(current) - set(previous):  # a study older than a field
        say(f"{out} predates {', '.join(sorted(set(current) - set(previous)))}: resuming adds "
            f"their jobs ({', '.join(f'{k} {current[k]}' for k in current if k not in previous)})")
    ensure_fashion_mnist()
    write_json(scale_path, dataclasses.asdict(scale))
    stages = {s.strip() for s in args.stages.split(",")}
    started = time.perf_counter()
    say(f"scale: {json.dumps(dataclasses.asdict(scale))}; output {out}")
    failures = []
    if "search" in stages:
        search_stage(out, scale)
    if "teachers" in stages:
        failures += run_tasks(teacher_tasks(out, scale), args.workers, "teachers")
    if "distill" in stages:
        failures += run_tasks(distill_tasks(out, scale), args.workers, "distill")
    if "proxy" in stages:
        proxy_stage(out, scale)
    if "cost" in stages:
        cost_stage(out, scale)
    if "speed" in stages:
        speed_stage(out, scale)
    if "latency" in stages:
        latency_stage(out, scale)
    if "e2e" in stages:
        e2e_stage(out)
    if "report" in stages:
        tasks = distill_tasks(out, scale)
        proxy = sum(Path(t["dir"]) == out / "proxy" / "distill" for t in tasks)
        report = write_report(out, scale=dataclasses.asdict(scale),
                              machine=machine_line(), wall=time.perf_counter() - started,
                              planned=(len(tasks) - proxy, proxy))
        say(f"report: {report}")
        if args.docs:
            say(f"docs: {splice_report(report, Path(args.docs))}")
    for failure in failures:
        say(f"FAILED {failure['name']}: {failure['error']}")
    return 1 if failures else 0


def machine_line() -> str:
    from gtn_nas.hardware.machine import machine_record

    record = machine_record()
    return (f"{record.get('cpu_model')}, {record.get('cores')} cores, torch "
            f"{__import__('torch').__version__}, ONNX Runtime {record.get('onnxruntime')}")


if __name__ == "__main__":
    sys.exit(main())
