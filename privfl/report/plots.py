"""The privacy report's figures (PNG): epsilon per round, the distribution of per-client
epsilon, and accuracy against epsilon.

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure` (a notebook shows it
inline); each ``plot_*`` function saves it as a PNG. Neither uses pyplot nor selects a backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def epsilon_per_round_figure(
    points: Sequence[tuple[int, float]], *, delta: float, who: str, accountant: str
) -> Figure:
    """Cumulative epsilon after each round in which privacy was spent."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    if points:
        r, e = zip(*points, strict=True)
        ax.plot(r, e, marker="o", ms=3)
    ax.set(
        xlabel="round",
        ylabel=f"epsilon at delta = {delta:g}",
        title=f"privacy spent: {who} ({accountant})",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def client_epsilons_figure(eps: Sequence[float], *, delta: float, unit: str) -> Figure:
    """Histogram of every client's epsilon (each client has its own budget)."""
    x = np.asarray([e for e in eps if math.isfinite(e)], dtype=float)
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    if len(x):
        bins = min(30, max(5, len(np.unique(np.round(x, 4)))))
        ax.hist(x, bins=bins, color="#4c72b0", edgecolor="white")
        ax.axvline(x.max(), color="#c44e52", ls="--", label=f"worst {x.max():.3g}")
        ax.axvline(float(np.median(x)), color="#55a868", ls=":", label=f"median {np.median(x):.3g}")
        ax.legend()
    ax.set(
        xlabel=f"epsilon at delta = {delta:g} (per {unit})",
        ylabel="clients",
        title=f"per-client epsilon ({len(x)} clients)",
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def accuracy_vs_epsilon_figure(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    title: str,
    labels: Sequence[tuple[float, float, str]] = (),
) -> Figure:
    """Test accuracy against epsilon: one line per series (a run's rounds, or the runs of one
    DP mode), each point optionally annotated.

    Args:
        series: ``(label, epsilons, accuracies)``.
        labels: ``(epsilon, accuracy, text)`` annotations.
    """
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for label, eps, acc in series:
        pts = [(e, a) for e, a in zip(eps, acc, strict=True) if math.isfinite(e)]
        if not pts:
            continue
        e, a = zip(*pts, strict=True)
        ax.plot(e, a, marker="o", ms=4, label=label)
    for e, a, text in labels:
        if math.isfinite(e):
            ax.annotate(text, (e, a), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set(xlabel="epsilon", ylabel="test accuracy", title=title, ylim=(0, 1))
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_epsilon_per_round(
    points: Sequence[tuple[int, float]], path: Path, *, delta: float, who: str, accountant: str
) -> Path:
    """:func:`epsilon_per_round_figure` saved as a PNG at ``path``. Returns ``path``."""
    epsilon_per_round_figure(points, delta=delta, who=who, accountant=accountant).savefig(
        path, dpi=110
    )
    return path


def plot_client_epsilons(eps: Sequence[float], path: Path, *, delta: float, unit: str) -> Path:
    """:func:`client_epsilons_figure` saved as a PNG at ``path``. Returns ``path``."""
    client_epsilons_figure(eps, delta=delta, unit=unit).savefig(path, dpi=110)
    return path


def plot_accuracy_vs_epsilon(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    path: Path,
    *,
    title: str,
    labels: Sequence[tuple[float, float, str]] = (),
) -> Path:
    """:func:`accuracy_vs_epsilon_figure` saved as a PNG at ``path``. Returns ``path``."""
    accuracy_vs_epsilon_figure(series, title=title, labels=labels).savefig(path, dpi=110)
    return path


__all__ = [
    "accuracy_vs_epsilon_figure",
    "client_epsilons_figure",
    "epsilon_per_round_figure",
    "plot_accuracy_vs_epsilon",
    "plot_client_epsilons",
    "plot_epsilon_per_round",
]
