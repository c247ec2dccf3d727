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


# Up to this many classes the partition plot draws each class. Past it (word vocabularies of
# thousands) a bar segment or heatmap row per class is unreadable, and matplotlib takes seconds
# per thousand bar series (18 s for 6 clients x 3276 pydoc words), so the plot keeps the classes
# with the most examples over all clients: _TOP_IN_BARS in the stacked bars, where the rest
# stack as one hatched "other", or this many heatmap rows.
_ALL_CLASSES_UP_TO = 100
_TOP_IN_BARS = 20


def partition_figure(label_counts: np.ndarray, title: str = "") -> Figure:
    """Per-client label histogram: a stacked bar per client (a heatmap above 100 clients).

    Above 100 classes only the most frequent classes over all clients are drawn: 20 in the
    bars, the others stacked as one hatched "other" segment (a bar is still the client's examples),
    or 100 heatmap rows, in order of frequency; the title says how many of how many.

    Args:
        label_counts: int, shape ``(clients, classes)``.
    """
    label_counts = np.asarray(label_counts)
    k, c = label_counts.shape
    labels = np.arange(c)
    note = ""
    if c > _ALL_CLASSES_UP_TO:
        top = _TOP_IN_BARS if k <= 100 else _ALL_CLASSES_UP_TO
        labels = np.argsort(-label_counts.sum(axis=0), kind="stable")[:top]
        note = f" ({top} most frequent of {c} labels)"
    fig = Figure(figsize=(min(max(6.0, 0.18 * k + 2), 16), 4))
    ax = fig.subplots()
    if k <= 100:
        cmap = matplotlib.colormaps["tab20" if len(labels) > 10 else "tab10"]
        bottom = np.zeros(k)
        for j, label in enumerate(labels):
            ax.bar(
                np.arange(k),
                label_counts[:, label],
                bottom=bottom,
                color=cmap(j % cmap.N),
                width=0.85,
                label=str(label),
            )
            bottom += label_counts[:, label]
        if len(labels) < c:
            rest = label_counts.sum(axis=1) - bottom
            ax.bar(  # hatched: tab20 has greys of its own
                np.arange(k),
                rest,
                bottom=bottom,
                color="0.93",
                edgecolor="0.6",
                hatch="//",
                linewidth=0,
                width=0.85,
                label="other",
            )
        ax.set(xlabel="client", ylabel="examples")
        if len(labels) <= 20:
            ax.legend(title="label", ncol=2, fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    else:
        shown = label_counts[:, labels].T
        im = ax.imshow(shown, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set(xlabel="client", ylabel="label" if len(labels) == c else "label (frequency rank)")
        fig.colorbar(im, ax=ax, label="examples")
    ax.set_title((title or f"label histogram of {k} clients") + note)
    fig.tight_layout()
    return fig


def plot_partition(label_counts: np.ndarray, path: Path, title: str = "") -> Path:
    """:func:`partition_figure` saved as a PNG at ``path``. Returns ``path``."""
    partition_figure(label_counts, title).savefig(path, dpi=110)
    return path


def client_accuracy_figure(metrics: list[dict[str, Any]], title: str = "") -> Figure | None:
    """The distribution of per-client accuracy (``fed_client_accuracy``, the federated
    evaluations of :func:`privfl.evaluation.federated_evaluate`): on the left the empirical
    CDF of the last evaluation (Li et al. 2020 plot accuracy distributions the same way), with
    its mean, worst 10% and Jain's index; on the right its evolution, a box per evaluation
    round with the mean and worst-10% lines. None when no round has a federated evaluation.

    >>> rows = [{"round": r, "fed_client_accuracy": [0.2 * r, 0.5, 0.9]} for r in (1, 2)]
    >>> [ax.get_title() for ax in client_accuracy_figure(rows).axes]
    ['last federated evaluation (round 2)', 'evolution']
    """
    from privfl.fairness.metrics import fairness_figures

    evals = [
        (m["round"], np.asarray(m["fed_client_accuracy"], dtype=np.float64))
        for m in metrics
        if m.get("fed_client_accuracy")
    ]
    if not evals:
        return None
    fig = Figure(figsize=(10, 3.8))
    ax_cdf, ax_evo = fig.subplots(1, 2)
    r_last, acc = evals[-1]
    xs = np.sort(acc)
    ax_cdf.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label="ECDF")
    figs = fairness_figures(acc)
    ax_cdf.axvline(figs["fed_accuracy_mean"], color="C1", ls="-", label="mean")
    ax_cdf.axvline(figs["fed_accuracy_worst10"], color="C3", ls="--", label="worst 10%")
    ax_cdf.set(
        xlabel="client accuracy",
        ylabel="share of clients",
        xlim=(-0.02, 1.02),
        ylim=(0, 1.02),
        title=f"last federated evaluation (round {r_last})",
    )
    ax_cdf.text(
        0.04,
        0.6,
        f"{len(acc)} clients\nstd {figs['fed_accuracy_std']:.3f}\n"
        f"Jain {figs['fed_accuracy_jain']:.3f}",
        transform=ax_cdf.transAxes,
        va="top",
        fontsize=8,
    )
    ax_cdf.legend(loc="lower right", fontsize=8)
    rounds = [r for r, _ in evals]
    width = 0.6 * (min(np.diff(rounds)) if len(rounds) > 1 else 1)
    ax_evo.boxplot([a for _, a in evals], positions=rounds, widths=width, manage_ticks=False)
    stats = [fairness_figures(a) for _, a in evals]
    ax_evo.plot(
        rounds, [f["fed_accuracy_mean"] for f in stats], "o-", color="C1", ms=3, label="mean"
    )
    ax_evo.plot(
        rounds,
        [f["fed_accuracy_worst10"] for f in stats],
        "s--",
        color="C3",
        ms=3,
        label="worst 10%",
    )
    ax_evo.set(xlabel="round", ylabel="client accuracy", ylim=(-0.02, 1.02), title="evolution")
    ax_evo.set_xlim(min(rounds) - width, max(rounds) + width)
    ax_evo.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_evo.legend(loc="lower right", fontsize=8)
    for ax in (ax_cdf, ax_evo):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_client_accuracy(metrics: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """:func:`client_accuracy_figure` saved as a PNG at ``path``; None (nothing written) when
    no round has a federated evaluation."""
    fig = client_accuracy_figure(metrics, title)
    if fig is None:
        return None
    fig.savefig(path, dpi=110)
    return path


__all__ = [
    "client_accuracy_figure",
    "partition_figure",
    "plot_client_accuracy",
    "plot_partition",
    "plot_training",
    "training_figure",
]
