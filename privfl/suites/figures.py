"""A suite's figures (PNG): one attack x defense heatmap per metric, a panel per parameter
setting, and accuracy against epsilon when the suite spends privacy.

Drawn on :class:`matplotlib.figure.Figure` directly: no pyplot, no backend selected.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from privfl.suites.cell import CellStatus, Metric
from privfl.suites.records import SuiteRun
from privfl.suites.table import FORMATS, Group, groups

#: The heatmaps drawn (when at least one cell has the figure), with their titles.
HEATMAPS: dict[Metric, str] = {
    Metric.ACCURACY: "final test accuracy",
    Metric.ACCURACY_DROP: "accuracy drop caused by the attack",
    Metric.ATTACK_SUCCESS: "backdoor attack success rate",
    Metric.PSNR: "inversion PSNR (dB, median of the records)",
    Metric.PERPLEXITY: "test perplexity (text)",
    Metric.TOKEN_RECALL: "tokens recovered from an update (median recall)",
    Metric.MEMBERSHIP_AUC: "membership inference AUC",
    Metric.MEMBERSHIP_TPR: "membership inference TPR at 0.1% FPR",
    Metric.EPSILON: "epsilon (worst party)",
    Metric.BYTES_OVERHEAD: "upload bytes / no defense",
    Metric.SECONDS_OVERHEAD: "round seconds / no defense",
    Metric.FED_ACCURACY_STD: "std of per-client accuracy",
    Metric.FED_ACCURACY_WORST10: "worst-10% client accuracy",
    Metric.FED_ACCURACY_JAIN: "Jain's index of client accuracy",
}
#: Colour maps: high is bad for the defender in red.
_CMAP = {
    Metric.ACCURACY: "viridis",
    Metric.ACCURACY_DROP: "Reds",
    Metric.ATTACK_SUCCESS: "Reds",
    Metric.PSNR: "Reds",
    Metric.PERPLEXITY: "viridis_r",
    Metric.TOKEN_RECALL: "Reds",
    Metric.MEMBERSHIP_AUC: "Reds",
    Metric.MEMBERSHIP_TPR: "Reds",
    Metric.EPSILON: "Oranges",
    Metric.BYTES_OVERHEAD: "Blues",
    Metric.SECONDS_OVERHEAD: "Blues",
    Metric.FED_ACCURACY_STD: "Reds",
    Metric.FED_ACCURACY_WORST10: "viridis",
    Metric.FED_ACCURACY_JAIN: "viridis",
}


def heatmap(run: SuiteRun, metric: Metric, path: Path) -> Path | None:
    """Attack (rows) x defense (columns) of ``metric``'s mean over seeds, one panel per
    parameter setting; invalid and failed cells are grey and say so. None when no cell has
    the figure."""
    gs = groups(run)
    if not any(g.values(metric) for g in gs):
        return None
    spec = run.suite.spec
    attacks, defenses = list(spec.attacks), list(spec.defenses)
    panels = list(dict.fromkeys(g.params_label for g in gs))
    by = {(g.attack, g.defense, g.params_label): g for g in gs}
    finite = [x for g in gs for x in [_mean(g, metric)] if x is not None and math.isfinite(x)] or [
        0.0
    ]
    vmin, vmax = min(finite), max(finite)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    # Fixed margins (inches) instead of bbox_inches="tight", which draws every label twice.
    left, bottom, top, right, gap = 1.4, 1.1, 0.55, 1.0, 0.35
    w, h = 0.62 * len(defenses), 0.3 * len(attacks)
    fig_w = left + cols * w + (cols - 1) * (gap + left * 0.2) + right
    fig_h = top + rows * (h + bottom) + (rows - 1) * gap
    fig = Figure(figsize=(fig_w, fig_h))
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(
        left=left / fig_w,
        right=1 - right / fig_w,
        bottom=bottom / fig_h,
        top=1 - top / fig_h,
        wspace=(gap + left * 0.2) / w,
        hspace=(gap + bottom) / h,
    )
    image = None
    for k, panel in enumerate(panels):
        ax = axes[k // cols][k % cols]
        grid = np.full((len(attacks), len(defenses)), np.nan)
        for i, a in enumerate(attacks):
            for j, d in enumerate(defenses):
                g = by.get((a, d, panel))
                v = None if g is None else _mean(g, metric)
                if v is not None and math.isfinite(v):
                    grid[i, j] = v
        cmap = matplotlib.colormaps[_CMAP[metric]].with_extremes(bad="#e6e6e6")
        image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        for i, a in enumerate(attacks):
            for j, d in enumerate(defenses):
                g = by.get((a, d, panel))
                label, colour = _label(g, metric, grid[i, j], vmin, vmax)
                ax.text(j, i, label, ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(range(len(defenses)), defenses, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(attacks)), attacks, fontsize=8)
        ax.set_xlabel("defense", fontsize=8)
        ax.set_ylabel("attack", fontsize=8)
        if panel:
            ax.set_title(panel, fontsize=9)
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(f"{spec.name}: {HEATMAPS.get(metric, metric.value)}", fontsize=10)
    if image is not None:
        cax = fig.add_axes(
            (1 - (right - 0.25) / fig_w, bottom / fig_h, 0.15 / fig_w, 1 - (top + bottom) / fig_h)
        )
        fig.colorbar(image, cax=cax)
    fig.savefig(path, dpi=100)
    return path


def _mean(g: Group, metric: Metric) -> float | None:
    ms = g.mean_std(metric)
    return None if ms is None else ms[0]


def _label(
    g: Group | None, metric: Metric, value: float, vmin: float, vmax: float
) -> tuple[str, str]:
    if g is None:
        return "", "black"
    if g.status is CellStatus.INVALID:
        return "invalid", "#555555"
    if g.status is not CellStatus.OK:
        return g.status.value, "#b00000"
    ms = g.mean_std(metric)
    if ms is None:
        return "-", "#777777"
    if math.isinf(ms[0]):
        return "inf", "black"
    t = (value - vmin) / (vmax - vmin)
    dark = t < 0.45 if _CMAP[metric] == "viridis" else t > 0.6  # viridis is dark at the bottom
    return format(ms[0], FORMATS[metric]), "white" if dark else "black"


#: The figures drawn against epsilon when a suite spends privacy, with their axis labels.
AGAINST_EPSILON: dict[Metric, str] = {
    Metric.ACCURACY: "final test accuracy",
    Metric.MEMBERSHIP_AUC: "membership inference AUC",
    Metric.MEMBERSHIP_TPR: "membership TPR at 0.1% FPR",
}


def accuracy_vs_epsilon(run: SuiteRun, path: Path) -> Path | None:
    """Final accuracy against epsilon (:func:`against_epsilon`)."""
    return against_epsilon(run, Metric.ACCURACY, path)


#: What a membership attack scores by guessing (a score independent of membership): drawn as
#: a dotted line so that a curve near it reads as "no leak measured", not as a trend.
CHANCE: dict[Metric, float] = {Metric.MEMBERSHIP_AUC: 0.5, Metric.MEMBERSHIP_TPR: 0.001}


def against_epsilon(run: SuiteRun, metric: Metric, path: Path) -> Path | None:
    """``metric`` against epsilon, one line per (attack, defense) over its parameter
    settings, the baseline defense's value dashed, chance dotted (:data:`CHANCE`). None when
    no curve has two points."""
    gs = groups(run)
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    baseline: dict[str, float] = {}
    for g in gs:
        value, eps = _mean(g, metric), _mean(g, Metric.EPSILON)
        if value is None:
            continue
        if eps is not None and math.isfinite(eps):
            series.setdefault((g.attack, g.defense), []).append((eps, value))
        elif g.defense == run.suite.spec.baseline_defense:
            baseline.setdefault(g.attack, value)
    if not any(len(pts) > 1 for pts in series.values()):
        return None  # no curve: every DP setting ran at one epsilon (the table has them)
    label = AGAINST_EPSILON[metric]
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    # An attack that does not change training (membership inference on the released model)
    # repeats the no-attack row's accuracy: one line per distinct curve, naming every attack.
    curves: dict[tuple[str, tuple[tuple[float, float], ...]], list[str]] = {}
    for (a, d), pts in series.items():
        curves.setdefault((d, tuple(sorted(pts))), []).append(a)
    multi_attack = len({a for a, _ in series}) > 1
    for (d, pts), attacks in curves.items():
        x, y = zip(*pts, strict=True)
        name = f"{', '.join(attacks)} / {d}" if multi_attack else d
        ax.plot(x, y, marker="o", ms=4, label=name)
    levels: dict[float, list[str]] = {}
    for a, value in baseline.items():
        levels.setdefault(value, []).append(a)
    for value, attacks in levels.items():
        ax.axhline(value, ls="--", color="grey", lw=1)
        ax.annotate(
            f"no DP ({', '.join(attacks)})" if multi_attack else "no DP",
            (ax.get_xlim()[1], value),
            ha="right",
            va="bottom",
            fontsize=8,
            color="grey",
        )
    ax.set_xscale("log")
    if metric in CHANCE:
        ax.axhline(CHANCE[metric], ls=":", color="black", lw=1)
        ax.annotate("chance", (ax.get_xlim()[0], CHANCE[metric]), va="bottom", fontsize=8)
    ax.set(xlabel="epsilon (worst party)", ylabel=label)
    ax.set_title(f"{run.suite.spec.name}: {label} against epsilon", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


__all__ = [
    "AGAINST_EPSILON",
    "CHANCE",
    "HEATMAPS",
    "accuracy_vs_epsilon",
    "against_epsilon",
    "heatmap",
]
