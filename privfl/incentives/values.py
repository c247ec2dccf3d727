"""Contribution values of one round's clients from a utility of client subsets.

A utility maps subsets (rows of a boolean ``(k, n)`` matrix over the round's ``n`` clients) to
``(k,)`` values; evaluating it is the cost (a model evaluation per subset), so every function
here asks for subsets in batches and never twice (:class:`CachedUtility`).

- :func:`leave_one_out`: ``v(N) - v(N \\ {i})``.
- :func:`exact_shapley`: the Shapley value over all ``2^n`` subsets, the per-round value of
  the multi-round reconstruction ("MR") of Song, Tong and Wei, "Profit Allocation for
  Federated Learning", IEEE BigData 2019.
- :func:`gtg_shapley`: the guided truncated Monte Carlo estimate of GTG-Shapley (Liu, Chen,
  Yu, Liu and Cui, "GTG-Shapley: Efficient and Accurate Participant Contribution Evaluation
  in Federated Learning", ACM TIST 2022): permutations cycle through the clients in first
  position (guided sampling), a permutation stops evaluating once its prefix is within
  ``eps`` of the whole cohort's utility (within-round truncation), and sampling stops when the
  running means converge.

Written here because no maintained library computes Shapley values over a batched,
model-evaluating utility (shap and the like value features of one model's input).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import factorial

import numpy as np

#: ``(k, n)`` booleans (subsets of the round's clients) -> ``(k,)`` float64 utilities.
Utility = Callable[[np.ndarray], np.ndarray]


class CachedUtility:
    """A :data:`Utility` that evaluates each subset once; ``evaluations`` counts the subsets
    evaluated."""

    def __init__(self, utility: Utility, n: int) -> None:
        self.utility, self.n = utility, n
        self._values: dict[int, float] = {}
        self._bits = 1 << np.arange(n, dtype=np.int64)

    @property
    def evaluations(self) -> int:
        return len(self._values)

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, dtype=bool).reshape(-1, self.n)
        keys = (masks.astype(np.int64) @ self._bits).tolist()
        todo = sorted({k for k in keys if k not in self._values})
        if todo:
            rows = (np.array(todo, dtype=np.int64)[:, None] & self._bits) != 0
            for k, v in zip(todo, np.asarray(self.utility(rows), dtype=np.float64), strict=True):
                self._values[k] = float(v)
        return np.array([self._values[k] for k in keys], dtype=np.float64)


def leave_one_out(utility: Utility, n: int) -> np.ndarray:
    """``(n,)``: each client's ``v(N) - v(N \\ {i})``.

    >>> leave_one_out(lambda m: m.sum(1) ** 2.0, 3)  # v(S) = |S|^2
    array([5., 5., 5.])
    """
    masks = ~np.eye(n + 1, n, k=-1, dtype=bool)  # row 0: everyone; row i + 1: all but i
    v = np.asarray(utility(masks), dtype=np.float64)
    return v[0] - v[1:]


def exact_shapley(utility: Utility, n: int) -> np.ndarray:
    """``(n,)``: the Shapley values ``phi_i = sum_{S not containing i} |S|! (n - |S| - 1)! / n!
    (v(S + i) - v(S))`` from all ``2^n`` subsets, evaluated in one batch.

    >>> exact_shapley(lambda m: m @ np.array([1.0, 2.0, 3.0]), 3)  # additive: phi = weights
    array([1., 2., 3.])
    """
    codes = np.arange(1 << n, dtype=np.int64)
    bits = 1 << np.arange(n, dtype=np.int64)
    masks = (codes[:, None] & bits) != 0
    v = np.asarray(utility(masks), dtype=np.float64)
    size = masks.sum(1)
    weight = np.array([factorial(s) * factorial(n - s - 1) / factorial(n) for s in range(n)])
    phi = np.empty(n)
    for i in range(n):  # n passes over the 2^n values (vectorized within each)
        without = codes[~masks[:, i]]
        phi[i] = np.sum(weight[size[without]] * (v[without | bits[i]] - v[without]))
    return phi


@dataclass(frozen=True)
class GTGResult:
    """GTG-Shapley's estimate and its cost: ``values`` ``(n,)``, ``permutations`` sampled,
    ``evaluations`` of the utility."""

    values: np.ndarray
    permutations: int
    evaluations: int


def gtg_shapley(
    utility: Utility,
    n: int,
    rng: np.random.Generator,
    *,
    eps: float = 0.001,
    min_permutations: int = 30,
    max_permutations: int = 500,
    tolerance: float = 0.05,
    last_k: int = 10,
) -> GTGResult:
    """GTG-Shapley's within-round estimate (Liu et al. 2022, Algorithm 1's inner loop).

    Permutation ``t`` puts client ``t mod n`` first and the others in random order
    (guided sampling); walking its prefixes, a prefix whose utility is within ``eps`` of
    ``v(N)`` ends the evaluations, and the later clients' marginal contributions are 0
    (truncation). The estimate is the mean marginal contribution. Sampling stops after at
    least ``max(min_permutations, n)`` permutations once each of the last ``last_k`` running
    means is within ``tolerance`` (mean relative error over clients) of the latest, or at
    ``max_permutations``.
    """
    cached = utility if isinstance(utility, CachedUtility) else CachedUtility(utility, n)
    full = cached(np.ones((1, n), dtype=bool))[0]
    empty = cached(np.zeros((1, n), dtype=bool))[0]
    floor = max(min_permutations, n)
    records: list[np.ndarray] = []
    means: list[np.ndarray] = []
    total = np.zeros(n)
    for t in range(max_permutations):
        first = t % n
        order = np.concatenate([[first], rng.permutation(np.delete(np.arange(n), first))])
        marginal = np.zeros(n)
        mask = np.zeros(n, dtype=bool)
        previous = empty
        for client in order:
            if abs(full - previous) < eps:
                break  # the rest add (almost) nothing: truncated
            mask[client] = True
            value = cached(mask[None, :])[0]
            marginal[client] = value - previous
            previous = value
        records.append(marginal)
        total += marginal
        means.append(total / len(records))
        if len(records) >= floor and _converged(means[-last_k:], tolerance):
            break
    return GTGResult(total / len(records), len(records), cached.evaluations)


def _converged(means: list[np.ndarray], tolerance: float) -> bool:
    latest = means[-1]
    errors = [np.mean(np.abs(m - latest) / (np.abs(latest) + 1e-12)) for m in means]
    return max(errors) <= tolerance


__all__ = [
    "CachedUtility",
    "GTGResult",
    "Utility",
    "exact_shapley",
    "gtg_shapley",
    "leave_one_out",
]
