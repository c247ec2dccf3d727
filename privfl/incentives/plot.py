"""The clients' contribution scores as a sorted bar chart, malicious clients marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_contributions(records: list[dict[str, Any]], path: Path, method: str) -> Path:
    """Write ``path`` (PNG): each client's score, sorted, malicious clients in red."""
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    ranked = sorted(records, key=lambda r: r["score"])
    fig = Figure(figsize=(max(4.0, 0.12 * len(ranked) + 2), 3.2))
    ax = fig.add_subplot()
    colors = ["tab:red" if r["malicious"] else "tab:blue" for r in ranked]
    ax.bar(range(len(ranked)), [r["score"] for r in ranked], color=colors)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(
        xlabel="clients, by score",
        ylabel="contribution (sum over rounds)",
        title=f"{method}: red = malicious (ground truth)",
    )
    ax.set_xticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
