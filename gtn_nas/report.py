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


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | Path,
                         title: str = "teacher training") -> Path:
    """Accuracy of the teacher and of each grafted branch per epoch (the GTN supplement's
    Figure 1), on validation (solid) and training (dashed) data; with a path sampler, a second
    panel shows each ``*/op`` label's probabilities per epoch and a third the entropy of each
    label's distribution (and their sum) per epoch.

    Validation branch accuracies of a GTN run are the means over its K fixed paths; where the
    record has ``val/<branch>_acc_min`` and ``_max`` the spread over the paths is shaded.

    Returns:
        The written PNG's path (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [record["epoch"] for record in history]
    acc_keys = sorted({k.split("/", 1)[1] for record in history for k in record
                       if k.startswith("val/") and k.endswith("acc")},
                      key=lambda k: (k != "acc", k))
    probs = [record.get("sampler/probs") for record in history]
    has_sampler = any(p for p in probs)
    panels = 3 if has_sampler else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels if has_sampler else 6.5, 4.2),
                             squeeze=False)
    ax = axes[0][0]
    for i, key in enumerate(acc_keys):
        name = "teacher" if key == "acc" else key[: -len("_acc")].replace("branch", "stu_branch_")
        colour = f"C{i}"
        validated = [r for r in history if r.get(f"val/{key}") is not None]  # --val-every
        val_epochs = [r["epoch"] for r in validated]
        ax.plot(val_epochs, [r[f"val/{key}"] for r in validated], "-o", color=colour, ms=3,
                label=f"{name} (val)")
        low = [r.get(f"val/{key}_min") for r in validated]
        high = [r.get(f"val/{key}_max") for r in validated]
        if validated and all(v is not None for v in low + high):
            ax.fill_between(val_epochs, low, high, color=colour, alpha=0.12, linewidth=0)
        ax.plot(epochs, [r.get(f"train/{key}") for r in history], "--", color=colour,
                alpha=0.6, label=f"{name} (train)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if has_sampler:
        ax = axes[0][1]
        last = next((p for p in reversed(probs) if p), {})
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
        ax = axes[0][2]
        by_label = [r.get("sampler/entropy_by_label") or {} for r in history]
        names = list(next((e for e in reversed(by_label) if e), {}))
        for i, label in enumerate(names):
            ax.plot(epochs, [e.get(label) for e in by_label], color=f"C{i % 10}",
                    linestyle=styles[(i // 10) % len(styles)], lw=1, label=label)
        twin = ax.twinx()
        twin.plot(epochs, [r.get("sampler/entropy") for r in history], "k-o", ms=3, lw=2,
                  label="sum (right axis)")
        twin.set_ylabel("total entropy (nats)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("entropy per label (nats)")
        ax.set_title("sampler entropy")
        ax.grid(alpha=0.3)
        if names:
            ax.legend(fontsize=5, ncol=3)
        twin.legend(fontsize=6, loc="lower left")
    return save_figure(fig, path)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lays out ``fig``, writes it as a PNG atomically, closes it; returns the path."""
    import matplotlib.pyplot as plt

    from gtn_nas.fileio import atomic_write_bytes

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
