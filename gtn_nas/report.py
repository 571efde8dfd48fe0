"""Reports: plain-text, Markdown and JSON tables, and matplotlib plots (training curves).

Table functions are pure (data to strings; :mod:`gtn_nas.cli` prints them); plot functions
write a PNG atomically and return its path.

Example:
    >>> print(text_table(["a", "b"], [[1, "x"], [22, "yy"]]))
    a   b
    --  --
    1   x
    22  yy
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from gtn_nas.costs import LayerCost


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed rule under the header."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


LAYER_HEADERS = ("module", "type", "in", "out", "kernel", "stride", "params", "MFLOPs")


def layer_table_rows(costs: Sequence[LayerCost]) -> list[list[Any]]:
    """Rows for :data:`LAYER_HEADERS` (the supplement's columns plus params and MFLOPs)."""
    return [[c.module, c.row.type, c.row.in_channels, c.row.out_channels, c.row.kernel,
             c.row.stride, f"{c.params:,}", f"{c.flops / 1e6:.3f}"] for c in costs]


def layer_table_json(costs: Sequence[LayerCost]) -> list[dict[str, Any]]:
    """The layer table as JSON-ready dicts (FLOPs as integers)."""
    return [{"module": c.module, "type": c.row.type, "in": c.row.in_channels,
             "out": c.row.out_channels, "kernel": c.row.kernel, "stride": c.row.stride,
             "params": c.params, "flops": c.flops} for c in costs]


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | Path,
                         title: str = "teacher training") -> Path:
    """Accuracy of the teacher and of each grafted branch per epoch (the GTN supplement's
    Figure 1), on validation (solid) and training (dashed) data; with a path sampler, a second
    panel shows each ``*/op`` label's probabilities per epoch.

    Returns:
        The written PNG's path (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gtn_nas.fileio import atomic_write_bytes

    epochs = [record["epoch"] for record in history]
    acc_keys = sorted({k.split("/", 1)[1] for record in history for k in record
                       if k.startswith("val/") and k.endswith("acc")},
                      key=lambda k: (k != "acc", k))
    probs = [record.get("sampler/probs") for record in history]
    has_sampler = any(p for p in probs)
    fig, axes = plt.subplots(1, 2 if has_sampler else 1, figsize=(12 if has_sampler else 6.5, 4.2),
                             squeeze=False)
    ax = axes[0][0]
    for i, key in enumerate(acc_keys):
        name = "teacher" if key == "acc" else key[: -len("_acc")].replace("branch", "stu_branch_")
        colour = f"C{i}"
        ax.plot(epochs, [r.get(f"val/{key}") for r in history], "-o", color=colour, ms=3,
                label=f"{name} (val)")
        ax.plot(epochs, [r.get(f"train/{key}") for r in history], "--", color=colour,
                alpha=0.6, label=f"{name} (train)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if has_sampler:
        ax = axes[0][1]
        last = probs[-1] or {}
        labels = [lb for lb in last if lb.endswith("/op")] or list(last)[:6]
        styles = ("-", "--", ":", "-.")
        for i, label in enumerate(labels):
            for j, value in enumerate(last[label]):
                ax.plot(epochs, [p[label][value] if p else None for p in probs],
                        color=f"C{i % 10}", linestyle=styles[j % len(styles)],
                        label=f"{label}={value}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("probability")
        ax.set_title("path distribution")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def plot_pareto(candidates, front, picks, budgets, path: str | Path, cost: str = "latency_ms",
                title: str = "search") -> Path:
    """Cost (latency or MFLOPs) vs score of every candidate, the Pareto front, the tier picks
    and the tiers' budgets on that cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gtn_nas.fileio import atomic_write_bytes

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
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def save_search(result, out_dir, space, profile) -> dict[str, Any]:
    """Writes candidates.json, pareto.csv, pareto.png, students/{tier}.yaml and summary.md."""
    import csv
    import io
    import json
    from pathlib import Path

    from gtn_nas.fileio import atomic_write_text
    from gtn_nas.search import describe_limits, pareto_front
    from gtn_nas.students import save_sample_file

    out = Path(out_dir)
    paths: dict[str, Any] = {}
    paths["candidates"] = atomic_write_text(out / "candidates.json", json.dumps(
        {"profile": profile.name, "space": space.spec, "latency_source": result.latency_source,
         "scored_by": result.scored_by,
         "candidates": [c.to_json() for c in result.candidates]}, indent=1) + "\n")
    cost = "latency_ms" if result.latency_source != "none" else "mflops"
    front = pareto_front(result.candidates, cost)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["latency_ms", "mflops", "params", "score", "sample"])
    for c in front:
        writer.writerow([c.latency_ms, round(c.mflops, 4), c.params, round(c.score, 6),
                         json.dumps(c.sample)])
    paths["pareto_csv"] = atomic_write_text(out / "pareto.csv", buffer.getvalue())
    paths["pareto_png"] = plot_pareto(result.candidates, front, result.picks, result.budgets,
                                      out / "pareto.png", cost=cost,
                                      title=f"{space.spec} on {profile.name}")
    paths["students"] = {}
    for tier, pick in result.picks.items():
        paths["students"][tier] = save_sample_file(
            out / "students" / f"{tier}.yaml", pick.sample, space, tier=tier,
            profile=profile.name, score=round(pick.score, 6), params=pick.params,
            mflops=round(pick.mflops, 4),
            latency_ms=None if pick.latency_ms is None else round(pick.latency_ms, 5),
            latency_source=pick.latency_source, **({"measured": pick.measured}
                                                     if pick.measured else {}))
    rows = []
    for tier, pick in result.picks.items():
        latency = "-" if pick.latency_ms is None else f"{pick.latency_ms:.3f} ({pick.latency_source})"
        measured = pick.measured.get("median_ms")
        rows.append([tier, describe_limits(result.budgets[tier]), f"{pick.params:,}",
                     f"{pick.mflops:.1f}", latency,
                     "-" if measured is None else f"{measured:.3f} (measured)",
                     f"{pick.score:.4f}", space.describe_sample(pick.sample)])
    lines = [f"# Search: {space.spec} on {profile.name}", "",
             f"{len(result.candidates)} distinct candidates; score: {result.scored_by}; "
             f"latency: {result.latency_source}"
             + (" (ESTIMATED from the profile's device facts)"
                if result.latency_source == "estimated" else ""), "",
             markdown_table(["tier", "budget", "params", "MFLOPs", "latency ms",
                             "re-measured", "score", "student"], rows), ""]
    lines += confidence_lines(result)
    lines += [f"- {note}" for note in result.notes]
    paths["summary"] = atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return paths


def confidence_lines(result) -> list[str]:
    """How sure the search is about its latencies: the table's validation and the picks'
    re-measured error."""
    lines = []
    val = result.latency_validation
    if val:
        lines.append(f"- latency table validation: MAPE {val['mape'] * 100:.1f}%, "
                     f"{val['within_10pct'] * 100:.0f}% of {val['students']} held-out students "
                     f"within +-10%")
    elif result.latency_source == "estimated":
        lines.append("- latencies are roofline ESTIMATES from the profile's device facts: "
                     "expect errors of several x; build a table on the device")
    for tier, pick in result.picks.items():
        if pick.measured and pick.latency_ms:
            error = pick.latency_ms / pick.measured["median_ms"] - 1.0
            lines.append(f"- tier {tier}: predicted {pick.latency_ms:.3f} ms, measured "
                         f"{pick.measured['median_ms']:.3f} ms ({error * 100:+.0f}%)")
    return lines
