"""Plots of a run: training curves and the partition's per-client label histogram.

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure` (a notebook shows it
inline); each ``plot_*`` function saves that figure as a PNG. Neither touches pyplot or the
matplotlib backend, so a notebook's or script's own matplotlib settings are left as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def training_figure(metrics: list[dict[str, Any]], title: str = "") -> Figure:
    """Test accuracy and test/train loss per round, side by side.

    In a notebook, the returned figure shows inline; ``fig.savefig(path)`` writes it:

    >>> metrics = [{"round": r, "test_accuracy": 0.5 + r / 10, "test_loss": 1 / r} for r in (1, 2)]
    >>> fig = training_figure(metrics, title="demo")
    >>> [ax.get_title() for ax in fig.axes]
    ['accuracy', 'loss']
    """
    rounds = [m["round"] for m in metrics]
    fig = Figure(figsize=(10, 3.8))
    ax_acc, ax_loss = fig.subplots(1, 2)
    pts = [(m["round"], m["test_accuracy"]) for m in metrics if m.get("test_accuracy") is not None]
    if pts:
        ax_acc.plot(*zip(*pts, strict=True), marker="o", ms=3, label="test (central)")
    fed = [(m["round"], m["fed_accuracy_mean"]) for m in metrics if "fed_accuracy_mean" in m]
    if fed:
        ax_acc.plot(*zip(*fed, strict=True), marker="s", ms=3, label="clients (mean)")
        worst = [
            (m["round"], m["fed_accuracy_worst10"]) for m in metrics if "fed_accuracy_worst10" in m
        ]
        ax_acc.plot(*zip(*worst, strict=True), ls="--", label="clients (worst 10%)")
    ax_acc.set(xlabel="round", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    ax_acc.legend(loc="lower right")
    losses = [(m["round"], m["test_loss"]) for m in metrics if m.get("test_loss") is not None]
    if losses:
        ax_loss.plot(*zip(*losses, strict=True), marker="o", ms=3, label="test")
    train = [(m["round"], m["train_loss"]) for m in metrics if m.get("train_loss") is not None]
    if train:
        ax_loss.plot(*zip(*train, strict=True), marker=".", label="train (clients)")
    ax_loss.set(xlabel="round", ylabel="cross-entropy", title="loss")
    ax_loss.legend(loc="upper right")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if rounds:
            ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_training(metrics: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """:func:`training_figure` saved as a PNG at ``path``. Returns ``path``."""
    training_figure(metrics, title).savefig(path, dpi=110)
    return path


def partition_figure(label_counts: np.ndarray, title: str = "") -> Figure:
    """Per-client label histogram: a stacked bar per client (a heatmap above 100 clients).

    Args:
        label_counts: int, shape ``(clients, classes)``.
    """
    k, c = label_counts.shape
    fig = Figure(figsize=(min(max(6.0, 0.18 * k + 2), 16), 4))
    ax = fig.subplots()
    if k <= 100:
        cmap = matplotlib.colormaps["tab20" if c > 10 else "tab10"]
        bottom = np.zeros(k)
        for j in range(c):
            ax.bar(
                np.arange(k),
                label_counts[:, j],
                bottom=bottom,
                color=cmap(j % cmap.N),
                width=0.85,
                label=str(j),
            )
            bottom += label_counts[:, j]
        ax.set(xlabel="client", ylabel="examples")
        if c <= 20:
            ax.legend(title="label", ncol=2, fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    else:
        im = ax.imshow(label_counts.T, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set(xlabel="client", ylabel="label")
        fig.colorbar(im, ax=ax, label="examples")
    ax.set_title(title or f"label histogram of {k} clients")
    fig.tight_layout()
    return fig


def plot_partition(label_counts: np.ndarray, path: Path, title: str = "") -> Path:
    """:func:`partition_figure` saved as a PNG at ``path``. Returns ``path``."""
    partition_figure(label_counts, title).savefig(path, dpi=110)
    return path


__all__ = ["partition_figure", "plot_partition", "plot_training", "training_figure"]
