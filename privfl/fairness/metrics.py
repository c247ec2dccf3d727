"""Fairness figures of a distribution of per-client accuracies.

- worst 10%: the mean accuracy of the worst ``ceil(10%)`` of clients (Li et al., ICLR 2020,
  Table 1's "Worst 10%");
- Jain's index ``(sum x)^2 / (n sum x^2)`` (Jain, Chiu and Hawe, "A Quantitative Measure of
  Fairness and Discrimination for Resource Allocation in Shared Computer Systems", DEC-TR-301,
  1984): 1 when every client gets the same, ``1/n`` when one client gets everything.

Written with numpy by hand: neither scipy nor scikit-learn has these two.
"""

from __future__ import annotations

import math

import numpy as np


def _values(x: np.ndarray | list[float]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or len(a) == 0:
        raise ValueError(f"expected a non-empty 1-D array of per-client values, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("per-client values must be finite")
    return a


def jain_index(x: np.ndarray | list[float]) -> float:
    """Jain's fairness index ``(sum x)^2 / (n sum x^2)`` of non-negative values (Jain, Chiu
    and Hawe 1984, eq. 1). It lies in ``[1/n, 1]``; all values equal give 1 (also when they are
    all 0, the limit of equal shares).

    >>> jain_index([0.5, 0.5, 0.5, 0.5]), jain_index([1.0, 0.0, 0.0, 0.0])
    (1.0, 0.25)
    """
    a = _values(x)
    if (a < 0).any():
        raise ValueError("Jain's index is defined for non-negative values")
    sq = float(a @ a)
    if sq == 0.0:
        return 1.0
    return float(a.sum() ** 2 / (len(a) * sq))


def worst_fraction_mean(x: np.ndarray | list[float], fraction: float = 0.1) -> float:
    """Mean of the ``ceil(fraction * n)`` smallest values (at least one): the "worst 10%"
    accuracy of Li et al. 2020 for ``fraction = 0.1``.

    >>> worst_fraction_mean([0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.6, 0.4, 0.2, 1.0, 0.95])
    0.15000000000000002
    """
    a = _values(x)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    k = max(1, math.ceil(fraction * len(a)))
    return float(np.partition(a, k - 1)[:k].mean())


def fairness_figures(
    acc: np.ndarray | list[float], prefix: str = "fed_accuracy"
) -> dict[str, float]:
    """The fairness figures of per-client accuracies ``acc``: ``{prefix}_mean``, ``_std``
    (population std, ``ddof = 0``, the square root of Li et al.'s "Variance"), ``_worst10``,
    ``_best10`` and ``_jain``."""
    a = _values(acc)
    return {
        f"{prefix}_mean": float(a.mean()),
        f"{prefix}_std": float(a.std()),
        f"{prefix}_worst10": worst_fraction_mean(a, 0.1),
        f"{prefix}_best10": -worst_fraction_mean(-a, 0.1),
        f"{prefix}_jain": jain_index(a),
    }


__all__ = ["fairness_figures", "jain_index", "worst_fraction_mean"]
