"""A search's files: candidates, Pareto front (CSV and plot), students and summary, per device.

One device writes ``<out>/candidates.json``, ``pareto.csv``, ``pareto.png``,
``students/{s,m,l}.yaml`` and ``summary.md`` (:func:`save_search`). Several devices
(:func:`save_multi_search`) write that set under ``<out>/<profile name>/`` for each, plus
``<out>/summary.md`` with a table of the picks across devices.

Example:
    >>> paths = save_search(result, "runs/x/search", space, profile)   # doctest: +SKIP
    >>> paths["students"]["s"]                                          # doctest: +SKIP
    PosixPath('runs/x/search/students/s.yaml')
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping

from gtn_nas.fileio import atomic_write_text
from gtn_nas.report import markdown_table


def plot_pareto(candidates, front, picks, budgets, path: str | Path, cost: str = "latency_ms",
                title: str = "search") -> Path:
    """Cost (latency or MFLOPs) vs score of every candidate, the Pareto front, the tier picks
    and the tiers' budgets on that cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = {"latency_ms": "latency (ms)", "mflops": "MFLOPs"}[cost]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [c.metric(cost) for c in candidates]
    ax.scatter(xs, [c.score for c in candidates], s=8, alpha=0.35, color="grey",
               label="candidates")
    ax.plot([c.metric(cost) for c in front], [c.score for c in front], "-", color="C0",
            label="Pareto front")
    for i, (tier, pick) in enumerate(picks.items()):
        colour = f"C{i + 1}"
        ax.scatter([pick.metric(cost)], [pick.score], s=80, marker="*", color=colour, zorder=3,
                   label=f"tier {tier} pick")
        limit = budgets[tier].get(cost)
        if limit is not None:
            ax.axvline(limit, color=colour, linestyle="--", alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    from gtn_nas.report import save_figure

    return save_figure(fig, path)


def _latency_label(source: str) -> str:
    return source + (" (ESTIMATED from the profile's device facts)"
                     if source == "estimated" else "")


def save_search(result, out_dir, space, profile) -> dict[str, Any]:
    """Writes candidates.json, pareto.csv, pareto.png, students/{tier}.yaml and summary.md.

    Returns:
        ``{"candidates", "pareto_csv", "pareto_png", "summary": path, "students": {tier:
        path}}``.
    """
    from gtn_nas.search.strategy import describe_limits, pareto_front
    from gtn_nas.space.students import save_sample_file

    out = Path(out_dir)
    paths: dict[str, Any] = {}
    paths["candidates"] = atomic_write_text(out / "candidates.json", json.dumps(
        {"profile": profile.name, "space": space.spec, "latency_source": result.latency_source,
         "scored_by": result.scored_by, "remeasurement": result.remeasurement,
         "candidates": [c.to_json() for c in result.candidates]}, indent=1) + "\n")
    cost = "latency_ms" if result.latency_source != "none" else "mflops"
    trained = result.selection is not None
    front = pareto_front(result.candidates, cost) if not trained else trained_front(result, cost)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["latency_ms", "mflops", "params", "score", "sample"])
    for c in front:
        writer.writerow([c.latency_ms, round(c.mflops, 4), c.params, round(c.score, 6),
                         json.dumps(c.sample)])
    paths["pareto_csv"] = atomic_write_text(out / "pareto.csv", buffer.getvalue())
    if trained:
        paths["pareto_png"] = plot_trained_pareto(result, front, out / "pareto.png", cost=cost,
                                                  title=f"{space.spec} on {profile.name}")
        paths["halving_png"] = plot_halving(result.selection, out / "halving.png",
                                            title=f"successive halving on {profile.name}")
        paths["halving"] = atomic_write_text(out / "halving.json", json.dumps(
            {tier: sel.to_json() for tier, sel in result.selection.items()}, indent=1) + "\n")
    else:
        paths["pareto_png"] = plot_pareto(result.candidates, front, result.picks,
                                          result.budgets, out / "pareto.png", cost=cost,
                                          title=f"{space.spec} on {profile.name}")
    paths["students"] = {}
    for tier, pick in result.picks.items():
        paths["students"][tier] = save_sample_file(
            out / "students" / f"{tier}.yaml", pick.sample, space, tier=tier,
            profile=profile.name, score=round(pick.score, 6), params=pick.params,
            mflops=round(pick.mflops, 4),
            latency_ms=None if pick.latency_ms is None else round(pick.latency_ms, 5),
            latency_source=pick.latency_source, **({"measured": pick.measured}
                                                     if pick.measured else {}),
            **({"val_acc": round(pick.val_acc, 6)} if pick.val_acc is not None else {}))
    rows = []
    for tier, pick in result.picks.items():
        latency = "-" if pick.latency_ms is None else \
            f"{pick.latency_ms:.3f} ({pick.latency_source})"
        rows.append([tier, describe_limits(result.budgets[tier]), f"{pick.params:,}",
                     f"{pick.mflops:.1f}", latency, _measured_cell(pick),
                     "-" if pick.val_acc is None else f"{pick.val_acc * 100:.1f}",
                     f"{pick.score:.4f}", space.describe_sample(pick.sample)])
    lines = [f"# Search: {space.spec} on {profile.name}", "",
             f"{len(result.candidates)} distinct candidates; proposals ranked by "
             f"{result.scored_by}; latency: {_latency_label(result.latency_source)}", "",
             f"Budgets: {result.budget_rule or 'the profile' + chr(39) + 's'}.", "",
             markdown_table(["tier", "budget", "params", "MFLOPs", "latency ms",
                             "re-measured ms", "validation top-1 %", "score", "student"],
                            rows), ""]
    lines += selection_lines(result) + [""]
    lines += confidence_lines(result)
    lines += [f"- {note}" for note in result.notes]
    paths["summary"] = atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return paths


def _measured_cell(pick) -> str:
    measured = pick.measured
    if not measured or measured.get("median_ms") is None:
        return "-"
    text = f"{measured['median_ms']:.3f}"
    if measured.get("normalized_ms") is not None and measured.get("load") is not None:
        text += f" (load-normalised {measured['normalized_ms']:.3f})"
    return text


def confidence_lines(result) -> list[str]:
    """How sure the search is about its latencies: the table's validation, the machine's
    noise during re-measurement, and the picks' re-measured error."""
    lines = []
    val = result.latency_validation
    if val.get("students"):
        line = (f"- latency table validation: MAPE {val['mape'] * 100:.1f}%, "
                f"{val['within_10pct'] * 100:.0f}% of {val['students']} held-out students "
                f"within +-10%")
        if val.get("noise_floor") is not None:
            line += f" (the machine's noise floor at build time: {val['noise_floor'] * 100:.1f}%)"
        lines.append(line)
    elif result.latency_source == "estimated":
        lines.append("- latencies are roofline ESTIMATES from the profile's device facts: "
                     "expect errors of several x; build a table on the device")
    elif result.latency_source == "measured":
        lines.append("- latencies were measured on this machine with ONNX Runtime, one "
                     "measurement per candidate")
    check = result.remeasurement
    if check.get("noise") is not None:
        load = "" if check.get("load") is None else \
            f", {check['load']:.2f}x the reference's build-time latency"
        lines.append(f"- re-measurement: the reference model's repeated measurements spread "
                     f"{check['noise'] * 100:.1f}%{load}; "
                     f"{'trusted' if check.get('trusted') else 'NOT trusted (picks kept)'}")
    for tier, pick in result.picks.items():
        measured = pick.measured or {}
        value = measured.get("normalized_ms") or measured.get("median_ms")
        if value and pick.latency_ms:
            error = pick.latency_ms / value - 1.0
            lines.append(f"- tier {tier}: predicted {pick.latency_ms:.3f} ms, measured "
                         f"{value:.3f} ms ({error * 100:+.0f}%)")
    return lines


def save_multi_search(results: Mapping[str, Any], out_dir, space,
                      profiles: list) -> dict[str, Any]:
    """Writes each device's search under ``<out>/<profile name>/`` and a summary of the picks
    across devices at ``<out>/summary.md``.

    Returns:
        ``{"devices": {name: save_search's paths}, "summary": path}``.
    """
    from gtn_nas.search.strategy import describe_limits

    out = Path(out_dir)
    by_name = {p.name: p for p in profiles}
    paths: dict[str, Any] = {"devices": {}}
    rows = []
    for name, result in results.items():
        paths["devices"][name] = save_search(result, out / name, space, by_name[name])
        for tier, pick in result.picks.items():
            source = "ESTIMATED" if pick.latency_source == "estimated" else pick.latency_source
            latency = "-" if pick.latency_ms is None else f"{pick.latency_ms:.3f} ({source})"
            rows.append([name, tier, describe_limits(result.budgets[tier]), f"{pick.params:,}",
                         f"{pick.mflops:.1f}", latency, _measured_cell(pick),
                         "-" if pick.val_acc is None else f"{pick.val_acc * 100:.1f}",
                         f"{pick.score:.4f}", space.describe_sample(pick.sample),
                         f"{name}/students/{tier}.yaml"])
    lines = [f"# Search: {space.spec} on {len(results)} devices", "",
             markdown_table(["device", "tier", "budget", "params", "MFLOPs", "latency ms",
                             "re-measured ms", "validation top-1 %", "score", "student",
                             "file"], rows), ""]
    for name, result in results.items():
        lines += [f"## {name}", "", f"latency: {_latency_label(result.latency_source)}; "
                  f"budgets: {result.budget_rule or 'the profile' + chr(39) + 's'}", ""]
        lines += selection_lines(result)
        lines += confidence_lines(result) + [f"- {note}" for note in result.notes] + [""]
    paths["summary"] = atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return paths


def selection_lines(result) -> list[str]:
    """How the picks were chosen: per tier the candidates each rung trained, the pick and why;
    or, for a proxy-picked search, that its score is a proxy."""
    if not result.selection:
        return [f"- picks chosen by the score ({result.scored_by}) alone: a zero-training "
                f"proxy, not measured accuracy (in the evidence study no such score ranked "
                f"trained students above Spearman 0.74); choose by trained accuracy with "
                f"the students' data (`--data`)"]
    lines = []
    for tier, selection in result.selection.items():
        counts = ", ".join(f"{n} to epoch {e}" for n, e in zip(selection.per_rung(),
                                                               selection.rungs))
        trained = sum(t.trained_epochs for t in selection.trials)
        seconds = sum(t.trained_seconds for t in selection.trials)
        lines.append(f"- tier {tier}: successive halving trained {counts} ({trained} "
                     f"student-epochs, {seconds:.0f} s); pick {selection.pick.key}: "
                     f"{selection.why}")
        lines += [f"  - {note}" for note in selection.notes]
    return lines


def trained_front(result, cost: str = "latency_ms") -> list:
    """The candidates no other *finished* candidate beats on both lower cost and higher
    validation accuracy."""
    import math

    finished = sorted((c for c in result.candidates
                       if c.val_acc is not None and c.metric(cost) is not None),
                      key=lambda c: (c.metric(cost), -c.val_acc))
    front, best = [], -math.inf
    for candidate in finished:
        if candidate.val_acc > best:
            front.append(candidate)
            best = candidate.val_acc
    return front


def plot_trained_pareto(result, front, path: str | Path, cost: str = "latency_ms",
                        title: str = "search") -> Path:
    """Cost vs validation top-1 of every candidate the halving trained: those trained to the
    end (filled; their front), those stopped early at the accuracy they had then (hollow),
    the picks (stars) and the tiers' budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gtn_nas.search.selection import sample_key

    label = {"latency_ms": "latency (ms)", "mflops": "MFLOPs"}[cost]
    metric = {sample_key(c.sample): c.metric(cost) for c in result.candidates}
    stopped = {}
    for selection in result.selection.values():
        for trial in selection.trials:
            if trial.final is None and trial.values:
                stopped[trial.key] = trial.values[max(trial.values)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    finished = [c for c in result.candidates if c.val_acc is not None]
    ax.scatter([c.metric(cost) for c in finished], [c.val_acc * 100 for c in finished], s=18,
               color="grey", label="trained to the end")
    ax.scatter([metric[k] for k in stopped], [v * 100 for v in stopped.values()], s=18,
               facecolors="none", edgecolors="grey", label="stopped early (accuracy then)")
    ax.plot([c.metric(cost) for c in front], [c.val_acc * 100 for c in front], "-", color="C0",
            label="front of the finished")
    for i, (tier, pick) in enumerate(result.picks.items()):
        colour = f"C{i + 1}"
        if pick.val_acc is not None:
            ax.scatter([pick.metric(cost)], [pick.val_acc * 100], s=120, marker="*",
                       color=colour, zorder=3, label=f"tier {tier} pick")
        limit = result.budgets[tier].get(cost)
        if limit is not None:
            ax.axvline(limit, color=colour, linestyle="--", alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    from gtn_nas.report import save_figure

    return save_figure(fig, path)


def plot_halving(selection: Mapping[str, Any], path: str | Path,
                 title: str = "successive halving") -> Path:
    """One panel per tier: each candidate's validation top-1 at every epoch it reached, the
    rungs as vertical lines, the pick highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiers = list(selection)
    fig, axes = plt.subplots(1, len(tiers), figsize=(4.2 * len(tiers), 3.8), squeeze=False,
                             sharey=True)
    for ax, tier in zip(axes[0], tiers):
        tier_selection = selection[tier]
        for trial in tier_selection.trials:
            epochs = sorted(trial.values)
            values = [trial.values[e] * 100 for e in epochs]
            chosen = trial.key == tier_selection.pick.key
            ax.plot(epochs, values, "-" if trial.final is not None else ":",
                    color="C3" if chosen else "grey", linewidth=2 if chosen else 1,
                    alpha=1 if chosen else 0.7, marker="o" if chosen else None, markersize=3,
                    label=f"pick {trial.key}" if chosen else None)
        for rung in tier_selection.rungs:
            ax.axvline(rung, color="C0", alpha=0.25)
        counts = "/".join(str(n) for n in tier_selection.per_rung())
        ax.set_title(f"tier {tier}: {counts} candidates per rung", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if tier_selection.pick.key not in {t.key for t in tier_selection.trials}:
            ax.text(0.02, 0.02, f"pick {tier_selection.pick.key}: trained for another tier",
                    transform=ax.transAxes, fontsize=7)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("validation top-1 (%)")
    fig.suptitle(title, fontsize=10)
    from gtn_nas.report import save_figure

    return save_figure(fig, path)
