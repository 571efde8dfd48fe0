"""``report.md`` of a ``gtn-nas run``: what ran, the curves, the Pareto plots and the students'
table with the gain of distillation over the no-teacher baseline.

Everything is derived from the files in the run directory (``run.json``, the stages'
summaries and metrics), so ``gtn-nas report DIR`` rebuilds it at any time.

Example:
    >>> path, rows = write_report(Path("runs/demo"), json.load(open("runs/demo/run.json")))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from gtn_nas.fileio import atomic_write_text
from gtn_nas.report import markdown_table, save_figure


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                if line.strip()]
    except (OSError, ValueError):
        return []


def student_rows(run_dir: Path, methods: list[str], main: str | None = None
                 ) -> list[dict[str, Any]]:
    """Per student: costs, latency, top-1 per method (mean, std over seeds) and the gains of
    the distiller ``main`` (default: the first method) over ``none`` and ``ls``."""
    by_student: dict[str, dict[str, Any]] = {}
    for method in methods:
        summary = _read_json(run_dir / "distill" / method / "summary.json") or {}
        for row in summary.get("rows", []):
            entry = by_student.setdefault(row["student"], {
                "student": row["student"], "params": row["params"], "mflops": row["mflops"],
                "latency_ms": row["latency_ms"], "latency_source": row["latency_source"],
                "methods": {}})
            entry["methods"][method] = row
    rows = []
    main = main or methods[0]
    for entry in by_student.values():
        distilled = entry["methods"].get(main)
        gains = {}
        for baseline in ("none", "ls"):
            other = entry["methods"].get(baseline)
            gains[baseline] = (distilled["test_acc_best_mean"] - other["test_acc_best_mean"]
                               if distilled and other else None)
        rows.append({**entry, "gain": gains["none"], "gain_ls": gains["ls"]})
    order = {"s": 0, "m": 1, "l": 2}
    rows.sort(key=lambda r: (order.get(r["student"], 9), r["params"]))
    return rows


def plot_distill_curves(run_dir: Path, methods: list[str], path: Path) -> Path | None:
    """Validation accuracy per epoch of every distilled student (solid) and its baselines
    (dashed, dotted: ``methods`` after the first), seed 0 of each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = 0
    order = {"s": 0, "m": 1, "l": 2}
    students = sorted({p.parent.parent.name for m in methods
                       for p in (run_dir / "distill" / m).glob("*/seed*/metrics.jsonl")},
                      key=lambda name: (order.get(name, 9), name))
    for i, student in enumerate(students):
        for method, style in zip(methods, ("-", "--", ":")):
            seeds = sorted((run_dir / "distill" / method / student).glob("seed*"))
            history = _metrics(seeds[0]) if seeds else []
            if not history:
                continue
            validated = [r for r in history if r.get("val/acc") is not None]  # --val-every
            ax.plot([r["epoch"] for r in validated], [r["val/acc"] for r in validated],
                    style, color=f"C{i}", label=f"{student} ({method})")
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    names = {"none": "alone", "ls": "label smoothing"}
    ax.set_title("students: " + ", ".join(f"{names.get(m, m)} ({s})" for m, s in zip(
        methods, ("solid", "dashed", "dotted"))), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _budget_check(value: float, limit: float, noise: float | None) -> str:
    """``yes``, ``yes (within the noise, +N%)`` for a re-measurement over the budget by no
    more than the machine's spread (the search's own rule, which keeps such a pick), else
    ``NO (+N%)``."""
    from gtn_nas.search.remeasure import noise_margin

    if value <= limit:
        return "yes"
    if noise is not None and noise is not False and value <= limit * noise_margin(noise):
        return f"yes (within the noise, {value / limit - 1:+.0%})"
    return f"NO ({value / limit - 1:+.0%})"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def _points(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}"


def _teacher_vs_students(run_dir: Path, distill: dict[str, Any]) -> list[str]:
    """The teacher's test top-1 beside each student's alone, and the guard's lines."""
    main = distill.get("main")
    if not main:
        return []
    summary = _read_json(run_dir / "distill" / main / "summary.json") or {}
    teacher_acc = summary.get("teacher_test_acc")
    if teacher_acc is None:
        return []
    alone = {r["student"]: r for r in (_read_json(run_dir / "distill" / "none" /
                                                  "summary.json") or {}).get("rows", [])}
    lines = [f"The teacher's test top-1 is **{teacher_acc * 100:.1f}%**"]
    if alone:
        table = [[name, f"{r['test_acc_best_mean'] * 100:.1f}",
                  f"{(teacher_acc - r['test_acc_best_mean']) * 100:+.1f}"]
                 for name, r in sorted(alone.items(), key=lambda kv: kv[1]["params"])]
        lines[0] += "; each student trained alone (best-on-validation weights, test top-1):"
        lines += ["", markdown_table(["student", "alone top-1 %", "teacher - student"], table)]
    else:
        lines[0] += "."
    guard = summary.get("guard") or []
    lines += [""] + [f"**Guard:** {line}." for line in guard]
    if alone and not guard:
        lines.append("The teacher is above every student trained alone.")
    return lines + [""]


def _deploy_lines(deploy: dict[str, Any] | None) -> list[str]:
    if not deploy:
        return ["not run yet", ""]
    rows = []
    for tier, info in deploy["tiers"].items():
        vals = ", ".join(f"{m} {v * 100:.1f}" for m, v in info["val_by_method"].items())
        rows.append([tier, f"**{info['method']}** (seed {info['seed']})", vals,
                     f"{info['test_acc'] * 100:.1f}", _points(info.get("test_gain_vs_none")),
                     f"[{info['onnx']}]({info['onnx']})",
                     f"dominated by {info['dominated_by']}" if info.get("dominated_by")
                     else "-"])
    lines = [f"On {deploy['device']}: {deploy['rule']}.", "",
             markdown_table(["tier", "deployed", "validation top-1 % per method (mean over "
                             "seeds)", "deployed test top-1 %", "chosen method - none on "
                             "test (mean over seeds)", "ONNX", "dominated"], rows), ""]
    lines += [f"- {note}" for note in deploy.get("notes", [])]
    return lines + [""]


def _acc(row: dict[str, Any] | None) -> str:
    if not row:
        return "-"
    return f"{row['test_acc_best_mean'] * 100:.1f} ± {row['test_acc_best_std'] * 100:.1f}"


def _data_name(config: dict[str, Any]) -> Any:
    """The dataset of a run's recorded config: its ``data`` section's name (``data`` itself in
    a run recorded before the section existed)."""
    data = config.get("data")
    return data.get("name") if isinstance(data, dict) else data


def write_report(run_dir: Path, state: dict[str, Any]) -> tuple[Path, list[dict[str, Any]]]:
    """Writes ``report.md`` (and ``distill_curves.png``); returns its path and the students'
    rows."""
    config = state.get("config", {})
    stages = state.get("stages", {})
    teacher = stages.get("teacher") or {}
    search = stages.get("search") or {}
    distill = stages.get("distill") or {}
    methods = list((distill.get("methods") or {}).keys())
    lines = [f"# gtn-nas run: {run_dir.name}", "",
             f"Data: **{_data_name(config)}**, seed {config.get('seed')}. Stages finished: "
             f"{', '.join(s for s in ('teacher', 'search', 'distill', 'deploy') if s in stages) or 'none'}."
             , ""]

    # ---- teacher
    lines += ["## 1. Teacher", ""]
    if teacher:
        tconf = config.get("teacher", {})
        final = teacher.get("final", {})
        accs = {k[4:]: v for k, v in final.items() if k.startswith("val/") and k.endswith("acc")}
        classes = _num_classes(run_dir)
        chance = 1.0 / classes if classes else None
        lines.append(f"{tconf.get('method')} teacher `{tconf.get('teacher')}`, sampler "
                     f"`{tconf.get('sampler')}`, {final.get('epoch', '?')} epochs; space "
                     f"`{tconf.get('space')}` at width {tconf.get('width_mult')}. Validation "
                     f"accuracy after the last epoch (chance: "
                     f"{'-' if chance is None else f'{chance:.3f}'}):")
        lines += ["", markdown_table(["network", "val top-1", "vs chance"],
                                     [[k, f"{v:.3f}", "-" if not chance else f"{v / chance:.1f}x"]
                                      for k, v in sorted(accs.items())]), ""]
        if chance and any(k != "acc" and v < 2 * chance for k, v in accs.items()):
            lines.append("**Warning:** a branch is below 2x chance: its path scores are weak "
                         "evidence; train the teacher longer (teacher.train.epochs).")
            lines.append("")
        pretrain = teacher.get("pretrain")
        if pretrain:
            acc = (pretrain.get("final") or {}).get("val/acc")
            curves = f", [curves]({pretrain['curves']})" if pretrain.get("curves") else ""
            warm = teacher.get("warmup_epochs", 0)
            lines += [f"It started from a standard pre-training of {pretrain.get('epochs')} "
                      f"epochs (validation top-1 {_pct(acc)}%{curves}); "
                      + (f"the fine-tuning's first {warm} epochs trained the branches with the "
                         f"teacher frozen." if warm else "the fine-tuning trained branches and "
                         "teacher jointly from its first epoch."), ""]
        lines += _teacher_vs_students(run_dir, distill)
        if teacher.get("curves"):
            lines += [f"![teacher curves]({teacher['curves']})", ""]
    else:
        lines += ["not run yet", ""]

    # ---- search
    lines += ["## 2. Search", ""]
    for device, info in (search.get("devices") or {}).items():
        lines += _search_lines(search, device, info)
    if not search:
        lines += ["not run yet", ""]

    # ---- students
    lines += ["## 3. Students", ""]
    main = distill.get("main") or next((m for m in methods if m not in ("none", "ls")),
                                       methods[0] if methods else None)
    labelled = (config.get("distill") or {}).get("labelled")
    if labelled:
        lines += [f"The students learn from {labelled:,} labelled training images (the teacher "
                  f"from all of them); `{main}` also learns from every other training image "
                  f"through the teacher's soft labels, without their labels. `none` and `ls` "
                  f"see the {labelled:,} labelled images only.", ""]
    rows = student_rows(run_dir, methods, main) if methods else []
    if rows:
        has_ls = "ls" in methods
        table = [[r["student"], f"{r['params']:,}", f"{r['mflops']:.2f}",
                  "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}",
                  _acc(r["methods"].get(main)), _acc(r["methods"].get("none"))]
                 + ([_acc(r["methods"].get("ls"))] if has_ls else [])
                 + [_points(r["gain"])] + ([_points(r["gain_ls"])] if has_ls else [])
                 for r in rows]
        lines += [markdown_table(["student", "params", "MFLOPs", "latency ms",
                                  f"{main} top-1 %", "alone (none) top-1 %"]
                                 + (["label smoothing (ls) top-1 %"] if has_ls else [])
                                 + [f"{main} - none"] + ([f"{main} - ls"] if has_ls else []),
                                 table), ""]
        for key, name in (("gain", "training alone (none)"), ("gain_ls", "label smoothing (ls)")):
            gains = [r[key] for r in rows if r[key] is not None]
            if gains:
                mean_gain = round(statistics.fmean(gains), 4) + 0.0  # no "-0.0"
                verdict = "beat" if mean_gain > 0 else "did NOT beat"
                lines.append(f"On average the {main}-distilled students {verdict} {name}: "
                             f"{mean_gain * 100:+.1f} points of test top-1 "
                             f"({sum(g > 0 for g in gains)} of {len(gains)} students gained).")
        lines += ["", "Top-1 is that of each seed's best-on-validation weights (the ones "
                  "deployed), mean ± std over seeds, on the test split; a gain within one "
                  "seed's spread (or, with one seed, within a few test images) is noise, not "
                  "evidence.", ""]
        curves = plot_distill_curves(run_dir, [main] + [m for m in methods if m != main],
                                     run_dir / "distill_curves.png")
        if curves is not None:
            lines += ["![distillation curves](distill_curves.png)", ""]
        lines += _export_lines(run_dir, methods)
    else:
        lines += ["not run yet", ""]

    # ---- deploy
    lines += ["## 4. Deployed students", ""]
    lines += _deploy_lines(stages.get("deploy"))

    # ---- what ran
    lines += ["## What ran", ""]
    tconf = config.get("teacher", {})
    dconf = config.get("distill", {})
    pre = teacher.get("pretrain")
    lines.append(f"- teacher: {tconf.get('method')} / {tconf.get('teacher')}, sampler "
                 f"`{tconf.get('sampler')}`, {tconf.get('train', {}).get('epochs')} epochs"
                 + (f", after {pre.get('epochs')} epochs of standard pre-training" if pre
                    else ""))
    lines.append(f"- search: {config.get('search', {}).get('strategy')}, "
                 f"{config.get('search', {}).get('budget_evals')} candidates per device; score: "
                 f"{search.get('scored_by', '-')}")
    for device, info in (search.get("devices") or {}).items():
        errors = []
        for pick in (info.get("picks") or {}).values():
            measured = (pick.get("measured") or {}).get("median_ms")
            if measured and pick.get("latency_ms"):
                errors.append(abs(pick["latency_ms"] / measured - 1))
        spread = f"; picks' latency error {max(errors) * 100:.0f}% at most" if errors else ""
        lines.append(f"- latency on {device}: {info.get('latency_source')}{spread}")
    lines.append(f"- distillation: {', '.join(methods) or '-'}, "
                 f"{dconf.get('train', {}).get('epochs')} epochs, seeds {dconf.get('seeds')}")
    lines.append("")
    path = atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    return path, rows


def _num_classes(run_dir: Path) -> int | None:
    from gtn_nas.errors import ConfigError
    from gtn_nas.fileio import safe_torch_load

    try:
        return int(safe_torch_load(run_dir / "teacher" / "teacher.pt", "teacher")["num_classes"])
    except (ConfigError, KeyError, TypeError, ValueError):
        return None


def _export_lines(run_dir: Path, methods: list[str]) -> list[str]:
    rows = []
    for method in methods:
        for result in sorted((run_dir / "distill" / method).glob("*/seed*/result.json")):
            data = _read_json(result) or {}
            export = data.get("export")
            if not export:
                continue
            onnx = result.parent / export["onnx"]
            rows.append([str(onnx.relative_to(run_dir)), f"{export['max_abs_diff']:.1e}",
                         "-" if export.get("ort_ms_batch1") is None
                         else f"{export['ort_ms_batch1']:.3f}",
                         "-" if export.get("torch_ms_batch1") is None
                         else f"{export['torch_ms_batch1']:.3f}"])
    if not rows:
        return []
    return ["ONNX exports (parity on real test images; latency on this machine, batch 1):", "",
            markdown_table(["file", "max abs diff", "ORT ms", "PyTorch eager ms"], rows), ""]


def _search_lines(search: dict[str, Any], device: str, info: dict[str, Any]) -> list[str]:
    """One device's search: its budgets in ms and how they were set, how the picks were
    chosen (the halving's candidates per rung, or the proxy), the picks, the plots."""
    units = {"latency_ms": ("latency", "ms"), "mflops": ("", "MFLOPs"),
             "params_m": ("", "M parameters")}
    budgets = "; ".join(f"{t} " + ", ".join(
        f"{units[k][0]} <= {v:.4g} {units[k][1]}".strip() for k, v in b.items())
        for t, b in (info.get("budgets") or {}).items())
    lines = [f"### {device}", "",
             f"Latency: {info.get('latency_source')}"
             f"{' (measured on this machine)' if info.get('runs_here') else ''}. "
             f"Budgets: {budgets} ({info.get('budget_rule') or 'the profile' + chr(39) + 's'}). "
             f"Proposals ranked by {search.get('scored_by')}.", ""]
    selection = info.get("selection") or {}
    if selection:
        lines.append("Picks chosen by **trained accuracy**: each tier's best proposals "
                     "trained on the students' recipe (without a teacher) by successive "
                     "halving, the most accurate on validation after the full recipe picked "
                     "(its run is reused as the pick's `none` baseline):")
        lines.append("")
        for tier, chosen in selection.items():
            counts = ", ".join(f"{n} to epoch {e}" for n, e in zip(chosen["per_rung"],
                                                                   chosen["rungs"]))
            lines.append(f"- tier {tier}: {counts}; {chosen['why']}")
            lines += [f"  - {note}" for note in chosen.get("notes", [])]
    else:
        lines.append(f"Picks chosen by the score ({search.get('scored_by')}) alone: a "
                     f"zero-training **proxy**, not measured accuracy.")
    rows = []
    for tier, pick in (info.get("picks") or {}).items():
        again = pick.get("measured") or {}
        measured = again.get("normalized_ms", again.get("median_ms"))
        predicted = pick.get("latency_ms")
        limit = ((info.get("budgets") or {}).get(tier) or {}).get("latency_ms")
        check = "-"
        if limit is not None:  # an untrusted re-measurement (busy machine) does not decide
            trusted = measured is not None and again.get("trusted", True)
            value = measured if trusted else predicted
            check = "-" if value is None else _budget_check(value, limit, trusted and
                                                            again.get("noise"))
            if measured is not None and not trusted:
                check += " (by the search's latency; re-measurement not trusted)"
        val = pick.get("val_acc")
        rows.append([tier, f"{pick['params']:,}", f"{pick['mflops']:.2f}",
                     "-" if predicted is None else f"{predicted:.3f} ({pick['latency_source']})",
                     "-" if measured is None else f"{measured:.3f}", check,
                     "-" if val is None else f"{val * 100:.1f}", f"{pick['score']:.3f}"])
    lines += ["", markdown_table(["tier", "params", "MFLOPs", "latency ms", "re-measured ms",
                                  "within budget", "validation top-1 %", "score"], rows), ""]
    lines += [f"- {note}" for note in info.get("notes", [])]
    lines += ["", f"![Pareto front]({info.get('pareto_png')})", ""]
    if info.get("halving_png"):
        lines += [f"![successive halving]({info['halving_png']})", ""]
    return lines
