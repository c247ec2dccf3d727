"""The log-log ROC curve of a membership attack (Carlini et al. 2022, Figure 1's axes: the
low-FPR region, where an attack matters, is visible only on log scales)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privfl.attacks.membership.metrics import Roc


def plot_roc(curves: dict[str, Roc], path: Path, title: str = "") -> Path:
    """Write ``path`` (PNG): one ROC per label, log-log, with the chance diagonal."""
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    fig = Figure(figsize=(4.6, 4.0))
    ax = fig.add_subplot()
    low = 1.0
    for label, roc in curves.items():
        floor = 1.0 / max(roc.non_members, 1)
        low = min(low, floor / 2)
        fpr, tpr = np.maximum(roc.fpr, floor / 2), np.maximum(roc.tpr, floor / 2)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc.auc:.3f})")
    ax.plot([low, 1], [low, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(low, 1), ylim=(low, 1.05))
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
