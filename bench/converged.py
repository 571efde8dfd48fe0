"""GTN where the papers' effect should appear: teachers trained until they fit their images
(issue 29). The evidence study's machinery (bench/evidence.py) at another regime:

    ./dev python bench/converged.py --out ~/.cache/gtn-nas/bench/converged \
        [--students DIR] [--docs docs/BENCHMARKS.md]
    ./dev python bench/converged.py --quick --out /tmp/converged-quick       # minutes

- Teachers (resnet32, 16x16 Fashion-MNIST) trained on ``--limit`` 3,000 stratified images for
  ``--teacher-epochs`` 60 on a cosine schedule, long enough to fit them (the ``fit`` stage
  measures it: train top-1 >= 99% is the regime's precondition); every teacher the same
  epochs: standard, GTN from scratch with the uniform sampler (the first study's better GTN,
  and the cheaper), ``gtn-warmup`` (``gtn-nas run``'s recipe: standard pre-training, then
  ``--gtn-warmup`` epochs of GTN fine-tuning) and SFTN for the ``m`` pick.
- Students distilled (KD at the regime's recipe) 30 epochs on **those same images** (the
  papers' setting: teachers and students validate on one split, so ``--labelled`` 3,000 are
  exactly the teachers' images), beside training alone and label smoothing; and, for
  contrast, on 1,000 of them (``contrast/``, the same teachers).
- ``fit``: each teacher's train top-1 on its (unaugmented) images and test top-1, and the mean
  entropy and maximum of its soft labels (temperature 1, the KD recipe's) on each student
  regime's images.

Every job is resumable (a re-run skips what is finished). Budget: about 5 hours on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import evidence  # noqa: E402
from evidence import Scale, read_json, say, write_json  # noqa: E402

BEGIN, END = "<!-- converged:begin -->", "<!-- converged:end -->"
CONTRAST = 1000  # the contrast regime's student images (a subset of the teachers')

CONVERGED = Scale(limit=3000, labelled=3000, teacher_epochs=60, student_epochs=30,
                  student_val_fraction=0.02, seeds=(1, 2, 3, 4, 5), random_students=3,
                  proxy_students=0, samplers=("uniform",), gtn_warmup=24, methods=("kd",),
                  sftn_for=("m",), shared_split=True)
QUICK = dataclasses.replace(CONVERGED, limit=600, labelled=600, teacher_epochs=4,
                            student_epochs=4, seeds=(1, 2), random_students=1, gtn_warmup=2)
QUICK_CONTRAST = 200


def contrast_scale(scale: Scale, labelled: int) -> Scale:
    return dataclasses.replace(scale, labelled=labelled)


def link_shared(out: Path, contrast: Path) -> None:
    """The contrast study uses the main study's teachers and students (no second copy)."""
    contrast.mkdir(parents=True, exist_ok=True)
    for name in ("teachers", "students"):
        target = contrast / name
        if not target.exists():
            target.symlink_to((out / name).resolve(), target_is_directory=True)


def copy_students(source: Path, out: Path) -> None:
    """Sample files of the students (s/m/l picks + random) from another folder."""
    folder = out / "students"
    if folder.is_dir() and any(folder.glob("*.yaml")):
        return
    folder.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.glob("*.yaml")):
        shutil.copy(file, folder / file.name)
    write_json(out / "search" / "search.json", {"from": str(source), "devices": {}})


# ----------------------------------------------------------------------------- fit
def fit_stage(out: Path, scale: Scale, contrast: int) -> dict[str, Any]:
    """Each teacher's train and test top-1 and its soft labels on the students' images."""
    import torch

    from gtn_nas.data import load_dataset
    from gtn_nas.distill.jobs import accuracy
    from gtn_nas.teacher.zoo import load_teacher

    path = out / "fit.json"
    record = read_json(path) or {}
    teachers = sorted(p.parent for p in (out / "teachers").glob("*/teacher.pt"))
    if all(t.name in record for t in teachers):
        return record

    def splits(limit: int):
        return load_dataset(evidence.DATA, image_size=scale.image_size, limit=limit, seed=0,
                            augment=False, val_fraction=scale.student_val_fraction)

    teacher_splits = splits(scale.limit)
    regimes = {scale.labelled: splits(scale.labelled), contrast: splits(contrast)}
    for folder in teachers:
        if folder.name in record:
            continue
        teacher, _ = load_teacher(folder / "teacher.pt")
        teacher.eval()
        entry = {"train_acc": accuracy(teacher, teacher_splits.train),
                 "test_acc": accuracy(teacher, teacher_splits.test), "soft_labels": {}}
        for images, data in regimes.items():
            loader = torch.utils.data.DataLoader(data.train, batch_size=256)
            entropy = top = count = 0.0
            with torch.no_grad():
                for x, _ in loader:
                    p = torch.softmax(teacher(x), dim=1)
                    entropy += float(-(p * p.clamp_min(1e-12).log()).sum(1).sum())
                    top += float(p.max(1).values.sum())
                    count += len(x)
            entry["soft_labels"][str(images)] = {"entropy": entropy / count,
                                                 "max_prob": top / count}
        record[folder.name] = entry
        write_json(path, record)
    return record


def fit_lines(fit: dict[str, Any], scale: Scale, contrast: int) -> list[str]:
    import math

    rows = []
    for name, entry in sorted(fit.items()):
        soft = entry["soft_labels"]
        rows.append(f"| {name} | {entry['train_acc'] * 100:.1f} | {entry['test_acc'] * 100:.1f} "
                    f"| {soft[str(scale.labelled)]['entropy']:.3f} / "
                    f"{soft[str(scale.labelled)]['max_prob']:.3f} | "
                    f"{soft[str(contrast)]['entropy']:.3f} / "
                    f"{soft[str(contrast)]['max_prob']:.3f} |")
    fitted = [n for n, e in fit.items() if e["train_acc"] >= 0.99]
    return ["### Do the teachers fit their images?", "",
            f"Train top-1 on the teachers' {scale.limit:,} images (unaugmented), test top-1 "
            f"on the official test set, and the mean entropy (nats; a uniform guess is "
            f"{math.log(10):.3f}) / mean maximum probability of the soft labels (temperature "
            f"1) on each student regime's images.", "",
            f"| teacher | train top-1 % | test top-1 % | soft labels on the {scale.labelled:,} "
            f"| on the {contrast:,} |", "|---|---|---|---|---|", *rows, "",
            f"Teachers at train top-1 >= 99% (the regime's precondition): "
            f"{', '.join(sorted(fitted)) or 'none'}.", ""]


# ----------------------------------------------------------------------------- report
def report(out: Path, scale: Scale, contrast: int, fit: dict[str, Any], wall: dict) -> Path:
    from evidence_tables import distill_results, gtn_tried_table, study_tables, teacher_figure
    from evidence_tables import teacher_records

    lines = [f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `./dev python bench/converged.py "
             f"--out {out}` on {evidence.machine_line()}.", "",
             f"Scale: teachers resnet32 on {scale.limit:,} stratified Fashion-MNIST images at "
             f"{scale.image_size}x{scale.image_size}, {scale.teacher_epochs} epochs (cosine); "
             f"students of resnet_supernet (width 0.25) {scale.student_epochs} epochs on the "
             f"teachers' own {scale.labelled:,} images and, for contrast, on {contrast:,} of "
             f"them; seeds {list(scale.seeds)}; students {', '.join(sorted(p.stem for p in (out / 'students').glob('*.yaml')))}; "
             f"KD at T 1, 0.5 CE + 0.5 KD; SFTN for {', '.join(scale.sftn_for)} only.", ""]
    lines += ["Wall time per stage: " + ", ".join(f"{k} {v / 3600:.2f} h"
                                                    for k, v in wall.items()) + ".", ""]
    lines += fit_lines(fit, scale, contrast)
    records = teacher_records(out)
    for label, folder, images in (("main", out, scale.labelled),
                                  ("contrast", out / "contrast", contrast)):
        rows = distill_results(folder)
        if not rows:
            continue
        study, summary = study_tables(rows, list(scale.methods))
        teacher_figure(folder, summary)
        figure = folder / "teacher_study.png"
        name = f"converged_{label}.png"
        if figure.is_file():
            shutil.copy(figure, out / name)
        lines += [f"### Students on {images:,} images ({'the teachers own' if label == 'main' else 'a subset'})",
                  "", *study, f"![paired differences]({name})", ""]
        lines += gtn_tried_table(folder, records, summary, list(scale.methods))
    path = out / "CONVERGED.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def splice(out: Path, docs: Path) -> None:
    text = docs.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"converged: {docs} has no {BEGIN} ... {END} markers")
    figures = docs.parent / "converged"
    figures.mkdir(exist_ok=True)
    body = (out / "CONVERGED.md").read_text()
    for png in out.glob("converged_*.png"):
        shutil.copy(png, figures / png.name)
        body = body.replace(f"]({png.name})", f"](converged/{png.name})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    docs.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/converged")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--students", help="a folder of sample files (s/m/l + random*.yaml) "
                                           "to use instead of the evidence study's search")
    parser.add_argument("--stages", default="students,teachers,distill,contrast,fit,report")
    parser.add_argument("--docs", help="splice the report into this markdown file")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else CONVERGED
    contrast = QUICK_CONTRAST if args.quick else CONTRAST
    out = Path(args.out).expanduser()
    saved = read_json(out / "scale.json")
    current = json.loads(json.dumps(dataclasses.asdict(scale)))
    if saved is not None and saved != current:
        raise SystemExit(f"converged: {out} holds a study at another scale; use another --out")
    evidence.ensure_fashion_mnist()
    write_json(out / "scale.json", current)
    stages = args.stages.split(",")
    wall = read_json(out / "wall.json") or {}
    say(f"converged: {current}; machine {evidence.machine_line()}")

    def timed(name: str, work) -> None:
        started = time.perf_counter()
        work()
        wall[name] = wall.get(name, 0.0) + time.perf_counter() - started
        write_json(out / "wall.json", wall)

    if "students" in stages:
        timed("students", lambda: copy_students(Path(args.students), out) if args.students
              else evidence.search_stage(out, scale))
    if "teachers" in stages:
        timed("teachers", lambda: evidence.run_tasks(evidence.teacher_tasks(out, scale),
                                                     args.workers, "teachers"))
    if "distill" in stages:
        timed("distill", lambda: evidence.run_tasks(evidence.distill_tasks(out, scale),
                                                    args.workers, "distill"))
    if "contrast" in stages:
        link_shared(out, out / "contrast")
        small = contrast_scale(scale, contrast)
        timed("contrast", lambda: evidence.run_tasks(
            evidence.distill_tasks(out / "contrast", small), args.workers, "contrast"))
    fit = {}
    if "fit" in stages:
        fit = fit_stage(out, scale, contrast)
    if "report" in stages:
        fit = fit or read_json(out / "fit.json") or {}
        path = report(out, scale, contrast, fit, wall)
        say(f"report: {path}")
        if args.docs:
            splice(out, Path(args.docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
