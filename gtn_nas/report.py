"""Plain-text, Markdown and JSON renderings of tables (layer tables, space summaries).

Pure functions from data to strings; :mod:`gtn_nas.cli` prints them.

Example:
    >>> print(text_table(["a", "b"], [[1, "x"], [22, "yy"]]))
    a   b
    --  --
    1   x
    22  yy
"""

from __future__ import annotations

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
