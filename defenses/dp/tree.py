"""Tree aggregation: noisy prefix sums of a stream of vectors, and their sensitivity.

The binary-tree mechanism (Dwork, Naor, Pitassi and Rothblum 2010; Chan, Shi and Song 2011)
as DP-FTRL uses it (Kairouz, McMahan, Song, Thakkar, Thakurta and Xu, "Practical and Private
(Deep) Learning without Sampling or Shuffling", ICML 2021, arXiv 2103.00039, Section 3 and
Appendix D). The leaves are the rounds ``1..T`` of one tree; a node of level ``h`` covers the
``2^h`` leaves ``k 2^h + 1 .. (k + 1) 2^h`` and is released, with fresh Gaussian noise, when its
last leaf arrives. The prefix sum of leaves ``1..t`` is the sum of the nodes of its binary
decomposition, one per set bit of ``t``; its noise is the sum of ``popcount(t)`` node noises.

:class:`TreeAggregator` keeps, per level, the exact sum of the node in progress and the noisy
value of the last released node: ``O(d log T)`` memory, one prefix sum per leaf.

:func:`squared_sensitivity_by_round` is the accounting: for a user taking part in rounds
``t_1..t_k`` (each contribution clipped to norm ``C``), the vector of every released node moves
by at most ``sqrt(sum over nodes n_node^2) C`` in L2 norm, ``n_node`` the user's rounds under
the node (contributions aligned: the worst case), summed over restarted trees. That is the
quantity tensorflow_privacy's ``tree_aggregation_accountant._tree_sensitivity_square_sum``
maximizes over participation patterns (Appendix D.2); here the pattern is known (the cohorts
are a seeded, data-independent function of the config), so the sum is taken over the actual
one. Numpy has no tree-aggregation routine, and tensorflow_privacy (TensorFlow) is not a
dependency, so both are written here by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from privfl.stages import Stateful


def prefix_levels(t: int) -> list[int]:
    """The levels of the nodes whose sum is the prefix ``1..t`` (the set bits of ``t``).

    >>> prefix_levels(6)  # [1..4] (level 2) + [5..6] (level 1)
    [1, 2]
    """
    return [h for h in range(max(t, 1).bit_length()) if t >> h & 1]


def completed_levels(t: int) -> list[int]:
    """The levels of the nodes that leaf ``t`` completes: ``h`` with ``2^h`` dividing ``t``.

    >>> completed_levels(4)  # [4], [3..4], [1..4]
    [0, 1, 2]
    """
    return [h for h in range(t.bit_length()) if t % (1 << h) == 0]


class TreeAggregator(Stateful):
    """Online noisy prefix sums of one tree (Kairouz et al. 2021, Algorithm 1's tree).

    Args:
        dim: length of each leaf vector.
        size: the most leaves the tree will hold (its levels are ``0..floor(log2 size)``).
    """

    def __init__(self, dim: int, size: int) -> None:
        if size < 1:
            raise ValueError(f"a tree holds at least one leaf, got size {size}")
        self.dim, self.size = dim, size
        self.reset()

    def reset(self) -> None:
        """Start a new tree (a restart): no leaf, no node."""
        self.leaves = 0
        self.partial: dict[int, torch.Tensor] = {}  # level -> exact sum of the node in progress
        self.noisy: dict[int, torch.Tensor] = {}  # level -> noisy value of its last node

    def prefix(self) -> torch.Tensor:
        """The noisy prefix sum of the leaves added so far (zeros before the first)."""
        out = torch.zeros(self.dim, dtype=torch.float64)
        for h in prefix_levels(self.leaves) if self.leaves else []:
            out += self.noisy[h]
        return out

    def add(self, leaf: torch.Tensor, noise: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """Add the next leaf, release the nodes it completes with ``noise(level)`` added to
        each, and return the new noisy prefix sum (float64)."""
        if self.leaves >= self.size:
            raise ValueError(f"the tree is full ({self.size} leaves): restart it first")
        self.leaves += 1
        t = self.leaves
        x = leaf.to(torch.float64)
        for h in range(self.size.bit_length()):  # every node in progress holds the leaf
            self.partial[h] = self.partial.get(h, torch.zeros(self.dim, dtype=torch.float64)) + x
        for h in completed_levels(t):
            self.noisy[h] = self.partial.pop(h) + noise(h)
        return self.prefix()

    def state_dict(self) -> dict[str, Any]:
        return {
            "leaves": self.leaves,
            "partial": {int(h): v.clone() for h, v in self.partial.items()},
            "noisy": {int(h): v.clone() for h, v in self.noisy.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.leaves = int(state["leaves"])
        self.partial = {int(h): v.to(torch.float64) for h, v in state["partial"].items()}
        self.noisy = {int(h): v.to(torch.float64) for h, v in state["noisy"].items()}


def tree_of_round(round: int, restart_every: int | None) -> tuple[int, int]:
    """``(tree, leaf)``, both from the start: which tree round ``round`` (1-based) falls in,
    and its 1-based leaf in that tree."""
    if restart_every is None:
        return 0, round
    return (round - 1) // restart_every, (round - 1) % restart_every + 1


def squared_sensitivity_by_round(
    participation: np.ndarray, restart_every: int | None = None
) -> np.ndarray:
    """Each user's squared L2 sensitivity (in clip norms squared) of every node released up
    to each round: ``out[t - 1, u] = sum over nodes completed by round t of n_{node,u}^2``,
    ``n_{node,u}`` the number of user ``u``'s rounds under the node, over restarted trees.

    Args:
        participation: ``(rounds, users)``, 1 where the user takes part in the round.
        restart_every: leaves per tree (None: one tree for all rounds).

    Vectorized over users and nodes (one reshape-sum per level and tree).
    """
    p = np.asarray(participation, dtype=np.int64)
    rounds = p.shape[0]
    size = rounds if restart_every is None else restart_every
    inc = np.zeros(p.shape, dtype=np.float64)  # squared counts of the nodes ending at each round
    for start in range(0, rounds, max(size, 1)):
        seg = p[start : min(start + size, rounds)]
        width = 1
        while width <= len(seg):
            m = len(seg) // width
            counts = seg[: m * width].reshape(m, width, -1).sum(axis=1)
            ends = start + width * np.arange(1, m + 1) - 1  # 0-based row of each node's end
            inc[ends] += counts.astype(np.float64) ** 2
            width *= 2
    return np.cumsum(inc, axis=0)


def worst_squared_sensitivity(
    participation: np.ndarray, restart_every: int | None = None
) -> np.ndarray:
    """``(rounds,)``: the largest user's squared sensitivity of the nodes released up to each
    round (:func:`squared_sensitivity_by_round` maximized over users; non-decreasing)."""
    by_round = squared_sensitivity_by_round(participation, restart_every)
    if by_round.shape[1] == 0:
        return np.zeros(by_round.shape[0])
    return by_round.max(axis=1)


__all__ = [
    "TreeAggregator",
    "completed_levels",
    "prefix_levels",
    "squared_sensitivity_by_round",
    "tree_of_round",
    "worst_squared_sensitivity",
]
