"""Tables and figures of the evidence study (bench/evidence.py) from its output folder.

``write_report(out, ...)`` reads every finished result (a study still running or killed gives
the tables of what is done) and writes ``out/EVIDENCE.md``, ``out/teacher_study.png`` and
``out/proxy_scatter.png``. Confidence intervals are 95% percentile bootstraps (2,000 resamples,
seed 0) over the paired (student, seed) results or over the proxy students.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ROUNDS = 2000


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def bootstrap_ci(values: Sequence[float], statistic: Callable = np.mean,
                 rounds: int = ROUNDS, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of ``statistic`` over resamples of ``values``."""
    data = np.asarray(values, float)
    if len(data) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = [statistic(data[rng.integers(0, len(data), len(data))]) for _ in range(rounds)]
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def rank_ci(x: np.ndarray, y: np.ndarray, fn, rounds: int = ROUNDS, seed: int = 0
            ) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        idx = rng.integers(0, len(x), len(x))
        if len(set(x[idx])) > 1 and len(set(y[idx])) > 1:
            values.append(fn(x[idx], y[idx])[0])
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


# ----------------------------------------------------------------------------- reading
def distill_results(out: Path) -> list[dict[str, Any]]:
    """Every finished (teacher, method, student, seed) of the teacher study."""
    rows = []
    for path in sorted((out / "distill").glob("*/*/*/seed*/result.json")):
        data = _read(path)
        if not data:
            continue
        teacher_dir = path.parents[3].name
        kind = "sftn" if teacher_dir.startswith("sftn-") else teacher_dir
        rows.append({"teacher": kind, "teacher_dir": teacher_dir, "method": data["method"],
                     "student": data["student"], "seed": data["seed"],
                     "test_acc": data["test_acc"], "params": data["params"],
                     "mflops": data["mflops"], "seconds": data.get("seconds")})
    return rows


def teacher_records(out: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for folder in sorted((out / "teachers").glob("*")):
        done = _read(folder / "done.json")
        if not done:
            continue
        test = None
        for method in ("kd", "dkd"):
            info = _read(out / "distill" / folder.name / method / "teacher.json")
            if info:
                test = info["test_acc"]
                break
        epochs = [t for t in done.get("epoch_seconds", []) if t]
        # the time a teacher costs: its epochs' seconds (training and validation), which a
        # killed and resumed teacher counts once each; its last invocation's wall time if none
        seconds = float(sum(epochs)) if epochs else done["wall_seconds"]
        records[folder.name] = {**done, "seconds": seconds, "test_acc": test}
    return records


# ----------------------------------------------------------------------------- tables
def fmt_ms(mean: float, std: float) -> str:
    return f"{mean * 100:.1f} ± {std * 100:.1f}"


def teacher_order(rows: list[dict[str, Any]]) -> list[str]:
    kinds = {r["teacher"] for r in rows}
    first = ["standard", "sftn"]
    gtn = sorted(k for k in kinds if k.startswith("gtn-"))
    return [k for k in first if k in kinds] + gtn + [k for k in TEACHERLESS if k in kinds]


TEACHERLESS = {"baseline": "none", "ls": "ls"}
"""Teacherless arms (folder -> method): training alone and label smoothing."""


def _arm(teacher: str, method: str) -> str:
    return TEACHERLESS.get(teacher, method)


def power_line(diffs: Sequence[float]) -> str:
    """The smallest true difference a paired study of these pairs detects 80% of the time at
    the 5% level (2.8 x paired sd / sqrt(n))."""
    if len(diffs) < 2:
        return "-"
    return f"{2.8 * float(np.std(diffs, ddof=1)) / np.sqrt(len(diffs)):.2f}"


def study_tables(rows: list[dict[str, Any]], methods: Sequence[str]) -> tuple[list[str], dict]:
    """Markdown lines of the per-student table and the paired deltas; a summary dict."""
    lines: list[str] = []
    summary: dict[str, Any] = {"pool": {}, "deltas": {}}
    teachers = teacher_order(rows)
    students = sorted({r["student"] for r in rows}, key=lambda s: (len(s) > 1, s))
    by = defaultdict(dict)
    for r in rows:
        by[(r["teacher"], _arm(r["teacher"], r["method"]), r["student"])][r["seed"]] = \
            r["test_acc"]
    for method in methods:
        columns = teachers
        lines += [f"**{method.upper()}**: student test top-1 % (mean ± std over seeds); "
                  f"`baseline` is the student trained without a teacher, `ls` with label "
                  f"smoothing (no teacher).", "",
                  "| student | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns)]
        pool = {t: [] for t in columns}
        for student in students:
            cells = []
            for teacher in columns:
                key = (teacher, _arm(teacher, method), student)
                values = list(by.get(key, {}).values())
                if values:
                    cells.append(fmt_ms(np.mean(values), np.std(values)))
                    pool[teacher].append(np.mean(values))
                else:
                    cells.append("-")
            lines.append(f"| {student} | " + " | ".join(cells) + " |")
        lines.append("| **pool mean** | " + " | ".join(
            f"**{np.mean(v) * 100:.2f}**" if v else "-" for v in pool.values()) + " |")
        common = [st for st in students if all(
            by.get((t, _arm(t, method), st)) for t in columns)]
        if common and len(common) < len(students):  # SFTN covers s/m/l only, say
            cells = [np.mean([np.mean(list(by[(t, _arm(t, method), st)].values()))
                              for st in common]) for t in columns]
            lines.append(f"| **pool mean, {', '.join(common)} only** (every column has them) | "
                         + " | ".join(f"**{c * 100:.2f}**" for c in cells) + " |")
            summary.setdefault("pool_common", {})[method] = {
                "students": common, **{t: float(c) for t, c in zip(columns, cells)}}
        lines.append("")
        summary["pool"][method] = {t: float(np.mean(v)) if v else None for t, v in pool.items()}

        lines += [f"Paired differences ({method.upper()}), in points of top-1, over the "
                  f"(student, seed) pairs both have; 95% bootstrap interval:", "",
                  "| comparison | pairs | mean difference [95% CI] | pairs won | detectable "
                  "(80% power) |", "|---|---|---|---|---|"]
        comparisons = [(t, "standard") for t in columns if t != "standard"]
        comparisons += [(t, "sftn") for t in columns if t.startswith("gtn-") and "sftn" in columns]
        samplers = [t for t in columns if t.startswith("gtn-")]
        comparisons += [(a, b) for i, a in enumerate(samplers) for b in samplers[i + 1:]]
        comparisons += [(t, base) for base in TEACHERLESS if base in columns
                        for t in columns if t not in TEACHERLESS]
        if all(base in columns for base in TEACHERLESS):
            comparisons.append(("ls", "baseline"))
        for a, b in comparisons:
            diffs = []
            for student in students:
                ka = (a, _arm(a, method), student)
                kb = (b, _arm(b, method), student)
                for seed, value in by.get(ka, {}).items():
                    if seed in by.get(kb, {}):
                        diffs.append((value - by[kb][seed]) * 100)
            if not diffs:
                continue
            low, high = bootstrap_ci(diffs)
            won = sum(d > 0 for d in diffs)
            lines.append(f"| {a} - {b} | {len(diffs)} | {np.mean(diffs):+.2f} "
                         f"[{low:+.2f}, {high:+.2f}] | {won}/{len(diffs)} | "
                         f"{power_line(diffs)} |")
            summary["deltas"].setdefault(method, {})[f"{a} - {b}"] = {
                "pairs": len(diffs), "mean": float(np.mean(diffs)), "ci": [low, high],
                "won": won, "detectable": power_line(diffs)}
        lines.append("")
    return lines, summary


def proxy_table(out: Path) -> tuple[list[str], dict]:
    from scipy import stats

    scores = _read(out / "proxy" / "scores.json")
    by_seed: dict[str, dict[int, float]] = defaultdict(dict)
    mflops = {}
    for path in (out / "proxy" / "distill").glob("*/seed*/result.json"):
        data = _read(path)
        if data:
            by_seed[data["student"]][data.get("seed", 0)] = data["test_acc"]
            if "mflops" in data:
                mflops[data["student"]] = data["mflops"]
    results = {student: seeds[min(seeds)] for student, seeds in by_seed.items()}  # first seed
    if not scores or len(results) < 4:
        return ["(proxy study not finished)", ""], {}
    rows = [dict(r) for r in scores["rows"] if r["student"] in results]
    acc = np.array([results[r["student"]] for r in rows])
    names = [k for k in rows[0] if k != "student"]
    single = list(names)
    combined = combined_scores(rows, single)
    if combined and len(rows) > len(single) + 2:
        combined["regression (LOO)"] = loo_regression(rows, single, acc)
    for name, values in combined.items():
        for row, value in zip(rows, values):
            row[name] = float(value)
        names.append(name)
    repeated = [sorted(seeds.values()) for seeds in by_seed.values() if len(seeds) >= 2]
    noise = (f" Seed noise: {len(repeated)} students trained twice differ by "
             f"{np.mean([abs(v[-1] - v[0]) for v in repeated]) * 100:.2f} points on average, "
             f"against a pool spread (std) of {acc.std() * 100:.2f} points."
             if repeated else "")
    twice = [(seeds[min(seeds)], seeds[max(seeds)]) for seeds in by_seed.values()
             if len(seeds) >= 2]
    if len(twice) >= 4 and len({a for a, _ in twice}) > 1 and len({b for _, b in twice}) > 1:
        ceiling = float(stats.spearmanr([a for a, _ in twice], [b for _, b in twice])[0])
        noise += (f" The two seeds' Spearman over those {len(twice)} students is "
                  f"{ceiling:+.2f}, so a score that ranked their true accuracies perfectly would "
                  f"reach about {np.sqrt(max(ceiling, 0.0)):+.2f} against one seed (the square "
                  f"root: the ceiling noise sets).")
    lines = [f"{len(rows)} random students, each distilled (KD) from the standard teacher with "
             f"the study's student recipe; test top-1 min / median / max "
             f"{acc.min() * 100:.1f} / {np.median(acc) * 100:.1f} / {acc.max() * 100:.1f} %. "
             f"Scores computed before training.{noise}", "",
             "| score | Spearman [95% CI] | Kendall τ [95% CI] |", "|---|---|---|"]
    summary = {}
    for name in names:
        values = np.array([r[name] for r in rows])
        rho = float(stats.spearmanr(values, acc)[0])
        tau = float(stats.kendalltau(values, acc)[0])
        rho_ci = rank_ci(values, acc, stats.spearmanr)
        tau_ci = rank_ci(values, acc, stats.kendalltau)
        summary[name] = {"spearman": rho, "spearman_ci": rho_ci, "kendall": tau,
                         "kendall_ci": tau_ci}
        lines.append(f"| {name} | {rho:+.2f} [{rho_ci[0]:+.2f}, {rho_ci[1]:+.2f}] | "
                     f"{tau:+.2f} [{tau_ci[0]:+.2f}, {tau_ci[1]:+.2f}] |")
    if len(mflops) == len(rows):
        costs = np.array([mflops[r["student"]] for r in rows])
        lines += ["", "What a search needs: within each tier's budget (MFLOPs at the pool's 25th, "
                  "50th and 90th percentiles, as `gtn-nas run`'s auto budgets), is the score's "
                  "top pick among the truly best 10% of the students under the budget? Hits "
                  "over the 3 tiers, and the hit rate over 1,000 bootstrap resamples of the pool:",
                  "", "| score | hits (s, m, l) | bootstrap hit rate |", "|---|---|---|"]
        for name in names:
            values = np.array([r[name] for r in rows])
            hits = top_pick_hits(values, acc, costs)
            rate = top_pick_rate(values, acc, costs)
            summary[name].update(hits=hits, hit_rate=rate)
            lines.append(f"| {name} | {sum(hits)}/3 ({', '.join('yes' if h else 'no' for h in hits)}) "
                         f"| {rate:.2f} |")
    best = max(summary, key=lambda n: summary[n]["spearman"]
               if np.isfinite(summary[n]["spearman"]) else -9)
    lines += ["", f"Best ranking score here: **{best}** (Spearman {summary[best]['spearman']:+.2f})."
              f" Parameter count: {summary.get('params', {}).get('spearman', float('nan')):+.2f}.",
              ""]
    auto, auto_lines = auto_score(rows, acc, summary)
    lines += auto_lines
    _proxy_figure(out, rows, acc, names, summary)
    return lines, {"scores": summary, "best": best, "auto": auto, "students": len(rows)}


AUTO_CANDIDATES = ("params", "flops", "synflow", "naswot", "short")
"""The scores ``--score auto`` may stand for: those a search computes for one candidate without a
GTN teacher (a branch score needs one; the rank average needs the whole pool; the fitted
regression needs the accuracies it predicts)."""


def auto_score(rows: Sequence[dict[str, Any]], acc: np.ndarray, summary: dict,
               rounds: int = ROUNDS, seed: int = 0) -> tuple[str | None, list[str]]:
    """The study's choice for ``--score auto``, by a rule fixed before reading the results: among
    :data:`AUTO_CANDIDATES`, the highest Spearman; the candidates whose Spearman the best's does
    not beat (the paired bootstrap interval of the difference spans 0) are tied with it, and
    among the tied the highest bootstrap top-pick rate (what a search needs) wins, then the
    higher Spearman. Returns the choice (None without candidates) and the lines saying why."""
    from scipy import stats

    names = [n for n in AUTO_CANDIDATES if n in summary and np.isfinite(summary[n]["spearman"])]
    if not names:
        return None, []
    leader = max(names, key=lambda n: summary[n]["spearman"])
    values = {n: np.array([r[n] for r in rows], dtype=float) for n in names}
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, len(acc), len(acc)) for _ in range(rounds)]
    tied, gaps = [leader], {}
    for name in names:
        if name == leader:
            continue
        diffs = [stats.spearmanr(values[leader][i], acc[i])[0]
                 - stats.spearmanr(values[name][i], acc[i])[0] for i in picks]
        diffs = [d for d in diffs if np.isfinite(d)]
        low, high = np.percentile(diffs, [2.5, 97.5]) if diffs else (np.nan, np.nan)
        gaps[name] = (float(low), float(high))
        if not low > 0:
            tied.append(name)
    choice = max(tied, key=lambda n: (summary[n].get("hit_rate", 0.0), summary[n]["spearman"]))
    gap_text = "; ".join(f"{n} [{lo:+.2f}, {hi:+.2f}]" for n, (lo, hi) in gaps.items())
    lines = [f"`--score auto` (among {', '.join(names)}: the highest Spearman, ties broken by "
             f"the top-pick rate): the highest Spearman is {leader}'s "
             f"({summary[leader]['spearman']:+.2f}); its lead over each other score, paired "
             f"95% bootstrap interval: {gap_text or 'none'}. Tied with it: "
             f"{', '.join(tied)}. **Choice: {choice}**"
             + (f" (bootstrap top-pick rate {summary[choice]['hit_rate']:.2f})"
                if "hit_rate" in summary[choice] else "") + ".", ""]
    return choice, lines


def combined_scores(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """``rank average``: the mean of the students' ranks under every finite, non-constant score
    (NAS-Bench-Suite-Zero: combinations beat single proxies); empty with fewer than two such
    scores. The fitted combination is :func:`loo_regression`."""
    from scipy import stats

    columns = []
    for name in names:
        values = np.array([r[name] for r in rows], dtype=float)
        if np.all(np.isfinite(values)) and np.ptp(values) > 0:
            columns.append(values)
    if len(columns) < 2:
        return {}
    ranks = np.mean([stats.rankdata(c) for c in columns], axis=0)
    return {"rank average": ranks}


def loo_regression(rows: Sequence[dict[str, Any]], names: Sequence[str],
                   acc: np.ndarray) -> np.ndarray:
    """Leave-one-out predictions of ``acc`` from the z-scored finite scores (a least-squares fit
    with intercept on the other students): it sees the accuracies, so it is an upper estimate
    of what a search could do with a fitted combination."""
    columns = [np.array([r[n] for r in rows], dtype=float) for n in names]
    columns = [c for c in columns if np.all(np.isfinite(c)) and np.ptp(c) > 0]
    z = np.stack([(c - c.mean()) / c.std() for c in columns], axis=1)
    design = np.hstack([np.ones((len(acc), 1)), z])
    predictions = np.empty(len(acc))
    for i in range(len(acc)):
        keep = np.arange(len(acc)) != i
        coef, *_ = np.linalg.lstsq(design[keep], acc[keep], rcond=None)
        predictions[i] = design[i] @ coef
    return predictions


TIER_PERCENTILES = (25, 50, 90)


def top_pick_hits(score: np.ndarray, acc: np.ndarray, mflops: np.ndarray,
                  top: float = 0.10) -> list[bool]:
    """Per tier budget (MFLOPs percentiles of the pool): is the highest-scoring student under
    the budget among the ``top`` fraction (at least one) of those students by accuracy?"""
    hits = []
    for percentile in TIER_PERCENTILES:
        under = np.flatnonzero(mflops <= np.percentile(mflops, percentile))
        best = under[np.argsort(-acc[under], kind="stable")][:max(1, int(np.ceil(top * len(under))))]
        hits.append(bool(under[np.argmax(score[under])] in set(best.tolist())))
    return hits


def top_pick_rate(score: np.ndarray, acc: np.ndarray, mflops: np.ndarray, rounds: int = 1000,
                  seed: int = 0) -> float:
    """The mean of :func:`top_pick_hits` over bootstrap resamples of the students."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(rounds):
        pick = rng.integers(0, len(acc), len(acc))
        total += np.mean(top_pick_hits(score[pick], acc[pick], mflops[pick]))
    return total / rounds


def _proxy_figure(out: Path, rows, acc, names, summary) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gtn_nas.report import save_figure

    shown = [n for n in names if "shared BN" not in n][:8]
    cols = 4
    fig, axes = plt.subplots((len(shown) + cols - 1) // cols, cols,
                             figsize=(3.2 * cols, 2.8 * ((len(shown) + cols - 1) // cols)),
                             squeeze=False)
    for ax, name in zip(axes.flat, shown):
        ax.scatter([r[name] for r in rows], acc * 100, s=12)
        if name == "synflow":
            ax.set_xscale("symlog")
        ax.set_xlabel({"params": "log10(parameters)", "flops": "log10(FLOPs)"}.get(name, "score"),
                      fontsize=8)
        ax.set_title(f"{name}\nSpearman {summary[name]['spearman']:+.2f}", fontsize=8)
        ax.set_ylabel("test top-1 %", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, out / "proxy_scatter.png")


def teacher_figure(out: Path, summary: dict) -> None:
    """Paired differences with their 95% intervals, per method: each teacher's students minus
    the same students (and seeds) from the standard teacher, and minus the same students
    trained alone; each bar over exactly the pairs both arms have (its count beside it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gtn_nas.report import save_figure

    deltas = summary.get("deltas", {})
    methods = [m for m in deltas if deltas[m]]
    if not methods:
        return
    references = ("standard", "baseline")
    fig, axes = plt.subplots(len(methods), 2, figsize=(10, 2.2 + 1.4 * len(methods)),
                             squeeze=False)
    for row, method in enumerate(methods):
        for col, reference in enumerate(references):
            ax = axes[row][col]
            items = [(name.split(" - ")[0], d) for name, d in deltas[method].items()
                     if name.endswith(f" - {reference}")
                     and name.split(" - ")[0] not in TEACHERLESS]
            if reference == "baseline":  # label smoothing beside the teachers: the control
                items += [("ls", d) for name, d in deltas[method].items()
                          if name == "ls - baseline"]
            if not items:
                ax.set_visible(False)
                continue
            ys = np.arange(len(items))
            means = [d["mean"] for _, d in items]
            errors = [[d["mean"] - d["ci"][0] for _, d in items],
                      [d["ci"][1] - d["mean"] for _, d in items]]
            colours = ["C2" if d["ci"][0] > 0 else "C3" if d["ci"][1] < 0 else "C7"
                       for _, d in items]
            ax.barh(ys, means, xerr=errors, color=colours, alpha=0.8, capsize=3)
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_yticks(ys, [f"{name} ({d['pairs']} pairs)" for name, d in items],
                          fontsize=8)
            ax.grid(axis="x", alpha=0.3)
            against = "the standard teacher" if reference == "standard" else "training alone"
            ax.set_title(f"{method.upper()}: minus {against}", fontsize=9)
            ax.set_xlabel("points of test top-1 (95% CI)", fontsize=8)
    fig.suptitle("Paired differences over the same (student, seed) pairs (Fashion-MNIST)",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "teacher_study.png")


def cost_table(out: Path, records: dict[str, dict[str, Any]], scale: dict) -> list[str]:
    if not records:
        return ["(no teacher finished)", ""]
    steps = -(-int(scale["limit"]) // int(scale["batch_size"]))
    lines = ["Time: the sum of a teacher's epochs (training and validation; gtn-warmup's include "
             "its pre-training), which a killed and resumed teacher counts once each.", "",
             "| teacher | test top-1 % | time (s) | s/epoch | ms/step | time vs standard |",
             "|---|---|---|---|---|---|"]
    standard = records.get("standard", {}).get("seconds")
    for name, rec in records.items():
        epochs = [s for s in rec.get("epoch_seconds", []) if s]
        per_epoch = float(np.mean(epochs)) if epochs else float("nan")
        ratio = rec["seconds"] / standard if standard else float("nan")
        acc = f"{rec['test_acc'] * 100:.1f}" if rec.get("test_acc") is not None else "-"
        lines.append(f"| {name} | {acc} | {rec['seconds']:.0f} | {per_epoch:.1f} | "
                     f"{per_epoch / steps * 1e3:.0f} | {ratio:.2f}x |")
    cost = _read(out / "cost.json")
    if cost:
        lines += ["", f"Training step on one batch of {cost['batch']} (median of 10-20 steps "
                  f"after 2 warm-up, {cost['threads']} thread; no evaluation), and forward "
                  f"FLOPs per image of what the step runs (teacher + grafted branches):", "",
                  "| teacher method | step ms | step vs standard | forward MFLOPs / image | "
                  "FLOPs vs standard |", "|---|---|---|---|---|"]
        for name, row in cost["rows"].items():
            lines.append(f"| {name}{' (' + row['note'] + ')' if row.get('note') else ''} | "
                         f"{row['step_ms']:.0f} | {row['step_ratio']:.2f}x | "
                         f"{row['mflops']:.2f} | {row['flops_ratio']:.2f}x |")
    sftn = [r["seconds"] for n, r in records.items() if n.startswith("sftn-")]
    gtn = {n: r["seconds"] for n, r in records.items() if n.startswith("gtn-")}
    if sftn and gtn:
        mean_sftn = float(np.mean(sftn))
        lines += ["", "Amortised teacher cost for a pool of n students (one GTN teacher for "
                  "all vs one SFTN teacher per student, mean SFTN time "
                  f"{mean_sftn:.0f} s):", "",
                  "| n students | " + " | ".join(gtn) + " | SFTN (n teachers) | standard |",
                  "|---|" + "---|" * (len(gtn) + 2)]
        for n in (3, 6, 12):
            cells = [f"{v:.0f} s ({v / n:.0f} s/student)" for v in gtn.values()]
            lines.append(f"| {n} | " + " | ".join(cells) + f" | {n * mean_sftn:.0f} s "
                         f"({mean_sftn:.0f} s/student) | {standard or float('nan'):.0f} s |")
    lines.append("")
    return lines


RECIPE_KEYS = ("sampler", "alpha", "path_prior", "warmup_epochs", "full_branch", "sandwich",
               "inplace_distill")


def _recipe(out: Path, name: str) -> str:
    """A teacher's recipe from its config.yaml (the GTN options that differ between variants)."""
    import yaml

    try:
        config = yaml.safe_load((out / "teachers" / name / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return "?"
    train = config.get("train") or {}
    epochs = train.get("epochs", "?")
    if config.get("method") == "gtn":
        options = ", ".join(f"{k} {config[k]}" for k in RECIPE_KEYS if k in config)
        if not config.get("teacher_weights"):
            return f"GTN, {options}, {epochs} epochs"
        try:  # gtn-warmup: fine-tuned from its own standard pre-training
            pre = yaml.safe_load((out / "teachers" / name / "pretrain" / "config.yaml"
                                  ).read_text()) or {}
            pre_epochs = (pre.get("train") or {}).get("epochs", "?")
        except (OSError, yaml.YAMLError):
            pre_epochs = "?"
        return (f"{pre_epochs} standard epochs, then GTN for {epochs} epochs at lr "
                f"{train.get('lr', '?')} ({options})")
    if config.get("method") == "sftn":
        return (f"SFTN for {Path(str(config.get('student'))).stem}, alpha {config.get('alpha')}, "
                f"{epochs} epochs")
    return f"{config.get('method', '?')}, {epochs} epochs"


def gtn_tried_table(out: Path, records: dict[str, dict[str, Any]], summary: dict,
                    methods: Sequence[str]) -> list[str]:
    """What was tried for GTN, at the same teacher epochs as every other teacher: each variant's
    recipe, cost and result (paired differences from the study tables), and whether it meets
    the target (>= +1.0 point over the standard teacher, interval above 0)."""
    teachers = [n for n in records if n == "standard" or n.startswith("gtn-")]
    sftn = [n for n in records if n.startswith("sftn-")]
    if not teachers:
        return ["(no teacher finished)", ""]
    standard = records.get("standard", {}).get("seconds")
    header = ["teacher", "recipe", "teacher test top-1 %", "time (s)", "cost vs standard"]
    for method in methods:
        header += [f"{method.upper()}: vs standard", f"{method.upper()}: vs alone"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def delta(method: str, a: str, b: str) -> str:
        d = summary.get("deltas", {}).get(method, {}).get(f"{a} - {b}")
        if not d:
            return "-"
        return f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}] ({d['pairs']} pairs)"

    rows = [(n, _recipe(out, n), records[n].get("test_acc"), records[n]["seconds"])
            for n in teachers]
    if sftn:
        accs = [records[n]["test_acc"] for n in sftn if records[n].get("test_acc") is not None]
        rows.append(("sftn", f"one SFTN teacher per student ({', '.join(sftn)})",
                     float(np.mean(accs)) if accs else None,
                     float(np.mean([records[n]["seconds"] for n in sftn]))))
    for name, recipe, acc, wall in rows:
        cells = [name, recipe, f"{acc * 100:.1f}" if acc is not None else "-", f"{wall:.0f}"
                 + (" per teacher" if name == "sftn" else ""),
                 f"{wall / standard:.2f}x" if standard else "-"]
        for method in methods:
            cells += ["-" if name == "standard" else delta(method, name, "standard"),
                      delta(method, name, "baseline")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name in teachers:
        if name == "standard":
            continue
        for method in methods:
            d = summary.get("deltas", {}).get(method, {}).get(f"{name} - standard")
            if d:
                met = d["mean"] >= 1.0 and d["ci"][0] > 0
                lines.append(f"- {name}, {method.upper()}: {d['mean']:+.2f} points over the "
                             f"standard teacher, 95% CI [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}], "
                             f"detects {d['detectable']} points: target (>= +1.0, CI above 0) "
                             f"{'**met**' if met else '**not met**'}"
                             f"{_precondition(summary, method)}.")
    lines.append("")
    return lines



def _precondition(summary: dict, method: str) -> str:
    """The caveat of a teacher comparison under ``method`` where its precondition fails: the
    standard teacher's students trail the students trained alone (interval below 0), so the
    comparison ranks teachers inside a method that loses to training alone."""
    d = summary.get("deltas", {}).get(method, {}).get("standard - baseline")
    if not d or d["ci"][1] >= 0:
        return ""
    return (f", but its precondition fails: {method.upper()} from the standard teacher trails "
            f"training alone by {-d['mean']:.2f} points [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}], "
            f"so this ranks teachers inside a method that loses to training alone and is no "
            f"evidence that the teacher gives better students")


def speed_lines(out: Path) -> list[str]:
    speed = _read(out / "speed.json")
    if not speed:
        return ["(speed stage not run)", ""]
    lines = [f"Picks at the study's input (batch 1, the study's image size), {speed['threads']} "
             "threads, median of the profile's 50 runs after 10 warm-up:", "",
             "| pick | ONNX Runtime ms | PyTorch eager ms | eager / ORT |", "|---|---|---|---|"]
    for tier, p in speed["picks"].items():
        lines.append(f"| {tier} | {p['ort_ms']:.3f} | {p['torch_ms']:.3f} | "
                     f"{p['torch_ms'] / p['ort_ms']:.1f}x |")
    lines += ["", f"Search time (NNI evolution; latency: {speed['latency_mode']}; candidates "
              f"are the distinct students among the evaluations asked for):", "",
              "| score | distinct candidates | seconds | ms per candidate |", "|---|---|---|---|"]
    for score, t in speed["search"].items():
        lines.append(f"| {score} | {t['candidates']} | {t['seconds']:.1f} | "
                     f"{t['seconds'] / max(1, t['candidates']) * 1e3:.1f} |")
    lines.append("")
    return lines


# ----------------------------------------------------------------------------- report
def write_report(out: Path, *, scale: dict, machine: str, wall: float,
                 planned: tuple[int, int] | None = None) -> Path:
    """Writes EVIDENCE.md (and its PNGs, evidence.json) from what ``out`` holds; ``planned``:
    how many teacher-study and proxy-study jobs the study runs (the "Finished" line)."""
    out = Path(out)
    rows = distill_results(out)
    records = teacher_records(out)
    study, summary = study_tables(rows, scale["methods"])
    teacher_figure(out, summary)
    proxy, proxy_summary = proxy_table(out)
    search = _read(out / "search" / "search.json") or {}
    picks = search.get("devices", {}).get("host_cpu", {}).get("picks", {})
    lines = [
        "# Evidence study", "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `./dev bench --out {out}` on {machine}; "
        f"this invocation ran {wall / 60:.0f} min.", "",
        f"Scale: Fashion-MNIST, {scale['limit']} training images (stratified), "
        f"{scale['image_size']}x{scale['image_size']}, official 10,000 test images; teacher "
        f"{scale['teacher']} trained {scale['teacher_epochs']} epochs; students of "
        f"resnet_supernet (width 0.25) trained {scale['student_epochs']} epochs (SGD 0.05, "
        f"cosine, batch {scale['batch_size']}; their validation split is "
        f"{scale.get('student_val_fraction', 0.1):.0%} of the official training set; every "
        f"accuracy below is the last epoch's on the test set); seeds {list(scale['seeds'])}; "
        f"{scale['random_students']} random students beside the s/m/l picks; proxy study "
        f"{scale['proxy_students']} students.", "",
        "## Students", "",
        "| student | params | MFLOPs |", "|---|---|---|"]
    proxy_done = len(list((out / "proxy" / "distill").glob("*/seed*/result.json")))
    if planned:
        lines[6:6] = [f"Finished: {len(rows)} of {planned[0]} teacher-study jobs, {proxy_done} "
                      f"of {planned[1]} proxy-study jobs"
                      + (" (**partial: a re-run of the same command finishes the rest**)."
                         if len(rows) < planned[0] or proxy_done < planned[1] else "."), ""]
    seen = {}
    for r in rows:
        seen.setdefault(r["student"], r)
    for name, r in sorted(seen.items(), key=lambda kv: (len(kv[0]) > 1, kv[0])):
        lines.append(f"| {name} | {r['params']:,} | {r['mflops']:.2f} |")
    if picks:
        lines += ["", f"s/m/l: host_cpu search ({search.get('scored_by', '')}), "
                  f"{search.get('seconds', 0):.0f} s."]
    lines += ["", "## Teacher study", "", "![teacher study](teacher_study.png)", ""] + study
    lines += ["## What was tried for GTN", "",
              f"Every teacher trained {scale['teacher_epochs']} epochs on the same "
              f"{scale['limit']} images (equal budget in epochs; the cost column says what "
              f"each epoch costs). Differences in points of student test top-1, paired over "
              f"(student, seed), 95% bootstrap intervals.", ""]
    lines += gtn_tried_table(out, records, summary, scale["methods"])
    lines += ["## Teachers and cost", ""] + cost_table(out, records, scale)
    lines += ["## Proxy study", "", "![proxy scatter](proxy_scatter.png)", ""] + proxy
    lines += ["## Speed", ""] + speed_lines(out)
    latency = out / "latency.md"
    lines += ["## Latency predicted vs measured (host_cpu)", "",
              latency.read_text().strip() if latency.is_file() else "(latency stage not run)", ""]
    e2e = _read(out / "e2e.json")
    lines += ["## README's main command", "",
              f"`{e2e['command']}`, environment {e2e['environment']}: {e2e['seconds'] / 60:.1f} "
              f"min." if e2e else "(e2e stage not run)", ""]
    path = out / "EVIDENCE.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "evidence.json").write_text(json.dumps(
        {"scale": scale, "machine": machine, "study": summary, "proxy": proxy_summary,
         "teachers": records}, indent=1, default=str))
    return path


BEGIN, END = "<!-- evidence:begin -->", "<!-- evidence:end -->"


def splice_report(report: Path, doc: Path) -> Path:
    """Replaces the text between ``doc``'s evidence markers with ``report`` (EVIDENCE.md without
    its title, headings one level down), copying its figures into ``doc``'s ``evidence/``
    folder and pointing the image links there. The text outside the markers (the curated
    headlines) is left as it is.

    Raises:
        SystemExit: ``doc`` lacks the markers (one line).
    """
    import re
    import shutil

    text = doc.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"evidence: {doc} needs one {BEGIN} ... {END} pair to splice into")
    figures = doc.parent / "evidence"
    figures.mkdir(exist_ok=True)
    body = report.read_text().split("\n", 1)[1].strip()  # without "# Evidence study"
    for name in sorted(set(re.findall(r"\]\(([\w.-]+\.png)\)", body))):
        if (report.parent / name).is_file():
            shutil.copyfile(report.parent / name, figures / name)
        body = body.replace(f"]({name})", f"](evidence/{name})")
    body = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", body, flags=re.M)
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    doc.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")
    return doc
