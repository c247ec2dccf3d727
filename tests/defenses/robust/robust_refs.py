"""Slow, obviously correct references for the robust rules (loops over pairs and rows in
float64), shared by this folder's tests."""

from __future__ import annotations

import numpy as np


def brute_distances(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            d[i, j] = float(np.sum((x[i] - x[j]) ** 2))
    return d


def brute_krum_scores(x: np.ndarray, f: int) -> np.ndarray:
    """Blanchard et al.'s score: squared distances to the n - f - 2 closest other vectors."""
    d = brute_distances(x)
    n = len(x)
    scores = []
    for i in range(n):
        others = sorted(d[i, j] for j in range(n) if j != i)
        scores.append(sum(others[: n - f - 2]))
    return np.array(scores)


def brute_bulyan(x: np.ndarray, f: int) -> tuple[np.ndarray, list[int]]:
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    remaining, chosen = list(range(n)), []
    for _ in range(n - 2 * f):
        k = max(len(remaining) - f - 2, 0)
        best, best_score = None, None
        for i in remaining:
            dists = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in remaining if j != i)
            s = sum(dists[:k])
            if best_score is None or s < best_score:
                best, best_score = i, s
        chosen.append(best)
        remaining.remove(best)
    sel = x[chosen]
    beta = len(chosen) - 2 * f
    out = np.empty(x.shape[1])
    for c in range(x.shape[1]):
        col = sel[:, c]
        med = np.median(col)
        closest = sorted(col, key=lambda v, med=med: abs(v - med))[:beta]
        out[c] = np.mean(closest)
    return out, chosen
