"""The table of ``privfl data summary``: per-client example and label counts that fit the
terminal whatever the number of classes (FEMNIST has 62) or clients.

With few classes every label gets a column (the full histogram). When those columns would not
fit in ``width`` characters, each client's row shows its class count and its most frequent
labels instead (``label:count``, most frequent first, cut to fit). Past ``max_rows`` clients
the rest are summarised in one row.
"""

from __future__ import annotations

import numpy as np
from rich.table import Table

# rich draws a column as its content plus one space of padding on each side and one rule.
_PER_COLUMN = 3


def _full_width(counts: np.ndarray) -> int:
    n, k = counts.shape
    widths = [max(len("client"), len(str(n - 1))), max(len("examples"), len(str(counts.sum())))]
    widths += [max(len(str(c)), len(str(int(counts[:, c].max())))) for c in range(k)]
    return 1 + sum(w + _PER_COLUMN for w in widths)


def _top_labels(row: np.ndarray, room: int) -> str:
    """``label:count`` pairs, most frequent first, as many as fit in ``room`` characters."""
    order = np.argsort(-row, kind="stable")
    parts: list[str] = []
    used = 0
    for c in order:
        if row[c] == 0:
            break
        part = f"{c}:{int(row[c])}"
        if used + len(part) + (1 if parts else 0) > room - 2:  # keep room for " …"
            parts.append("…")
            break
        parts.append(part)
        used += len(part) + (1 if len(parts) > 1 else 0)
    return " ".join(parts) if parts else "-"


def summary_table(counts: np.ndarray, *, title: str, width: int = 80, max_rows: int = 40) -> Table:
    """A rich table of per-client training counts, ``counts`` of shape ``(clients, classes)``,
    no wider than ``width`` characters and no longer than ``max_rows`` client rows (plus one
    row for the rest)."""
    counts = np.asarray(counts)
    n, k = counts.shape
    full = _full_width(counts) <= width
    table = Table(title=title, width=None if full else width)
    # The counting columns never shrink (rich would cut "39-299" to "39…"); the labels
    # column takes what is left.
    table.add_column("client", justify="right", no_wrap=True, min_width=len(f"{n}-{n}"))
    table.add_column("examples", justify="right", no_wrap=True)
    if full:
        for c in range(k):
            table.add_column(str(c), justify="right", style="dim", no_wrap=True)
    else:
        table.add_column("classes", justify="right", no_wrap=True, min_width=len(f"{k}-{k}"))
        table.add_column("top labels (label:count)", no_wrap=True, overflow="ellipsis")
        fixed = max(6, len(f"{n}-{n}")) + 8 + max(7, len(f"{k}-{k}"))
        room = width - 1 - fixed - 4 * _PER_COLUMN
    shown = n if n <= max_rows else max_rows - 1
    for i in range(shown):
        row = counts[i]
        if full:
            cells = [str(int(v)) if v else "." for v in row]
        else:
            cells = [str(int((row > 0).sum())), _top_labels(row, room)]
        table.add_row(str(i), str(int(row.sum())), *cells)
    if shown < n:
        rest = counts[shown:]
        sizes = rest.sum(axis=1)
        label = f"{shown}-{n - 1}"
        spread = f"{int(sizes.min())}-{int(sizes.max())}"
        if full:
            table.add_row(label, spread, *["" for _ in range(k)], style="italic")
        else:
            kinds = (rest > 0).sum(axis=1)
            table.add_row(
                label,
                spread,
                f"{int(kinds.min())}-{int(kinds.max())}",
                f"{n - shown} more (--rows N)",
                style="italic",
            )
    return table


__all__ = ["summary_table"]
