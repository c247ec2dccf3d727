"""Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui and Stainer, NeurIPS 2017).

Variant: each update's score sums its squared distances to its ``n - f - 2`` nearest other
updates, as in the paper (Section 4, "i -> j denotes that V_j belongs to the n - f - 2
closest vectors to V_i"); byzfl's Krum uses ``n - f - 1``. The paper needs ``n > 2f + 2``.
Pairwise distances come from one matrix product (:func:`pairwise_sq_distances`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Self

import numpy as np
import torch

from privfl.defenses.robust.base import RobustAggregator, excluded_ids
from privfl.defenses.robust.config import RobustConfig, RobustRule
from privfl.defenses.robust.distances import pairwise_sq_distances
from privfl.stages import AggregationResult, RoundContext
from privfl.update import UpdateBatch

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup

log = logging.getLogger(__name__)


def krum_scores(distances: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score of every update.

    .. math:: s(i) = \\sum_{i \\to j} \\lVert V_i - V_j \\rVert^2

    over the ``n - f - 2`` updates ``V_j`` (``j != i``) closest to ``V_i``.

    Args:
        distances: float64 ``(n, n)`` squared distances with a zero diagonal.
        f: Byzantine updates tolerated; ``n - f - 2 >= 1`` is required.
    Returns:
        float64 ``(n,)``.
    """
    n = distances.shape[0]
    k = n - f - 2
    if k < 1 or f < 0:
        raise ValueError(f"Krum needs n > f + 2 (and n > 2f + 2 for its guarantee); n={n}, f={f}")
    others = distances.clone()
    others.fill_diagonal_(float("inf"))
    return others.topk(k, dim=1, largest=False).values.sum(dim=1)


def multi_krum_select(updates: torch.Tensor, f: int, m: int) -> np.ndarray:
    """Row indices of the ``m`` updates with the lowest Krum scores, best first (ties broken
    by the lower index).

    Args:
        updates: float32 ``(n, d)``.
        f: Byzantine updates tolerated.
        m: how many to select, ``1 <= m <= n``.
    Returns:
        int64 ``(m,)``.
    """
    n = updates.shape[0]
    if not 1 <= m <= n:
        raise ValueError(f"m must be in [1, {n}], got {m}")
    scores = krum_scores(pairwise_sq_distances(updates), f)
    return torch.argsort(scores, stable=True)[:m].numpy().astype(np.int64)


def multi_krum(updates: torch.Tensor, f: int, m: int) -> tuple[torch.Tensor, np.ndarray]:
    """Multi-Krum: the plain mean of the ``m`` updates :func:`multi_krum_select` picks
    (Blanchard et al. 2017, Section 5, "Multi-Krum").

    Args:
        updates: float32 ``(n, d)``.
    Returns:
        ``(aggregate, selected)``: float32 ``(d,)`` and the int64 ``(m,)`` selected rows.
    """
    selected = multi_krum_select(updates, f, m)
    return updates[torch.from_numpy(selected)].mean(dim=0), selected


def krum(updates: torch.Tensor, f: int) -> tuple[torch.Tensor, int]:
    """Krum: the single update with the lowest score (Multi-Krum with ``m = 1``).

    Args:
        updates: float32 ``(n, d)``.
    Returns:
        ``(aggregate, selected)``: a float32 ``(d,)`` copy of the chosen row and its index.
    """
    selected = multi_krum_select(updates, f, 1)
    return updates[int(selected[0])].clone(), int(selected[0])


class Krum(RobustAggregator):
    """Krum as an aggregator: every client but the chosen one is excluded."""

    rule = RobustRule.KRUM
    flags_clients = True

    def __init__(self, f: int) -> None:
        self.f = f

    @classmethod
    def from_config(cls, config: RobustConfig, setup: RunSetup) -> Self:
        return cls(config.f)

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        self.check_cohort(len(batch), self.f, self.rule)
        delta, chosen = krum(batch.deltas, self.f)
        return AggregationResult(delta, excluded=excluded_ids(batch.client_ids, np.array([chosen])))


class MultiKrum(RobustAggregator):
    """Multi-Krum as an aggregator: the ``m`` best-scored updates are averaged (``m``
    defaults to ``n - f`` of the round), the rest excluded."""

    rule = RobustRule.MULTI_KRUM
    flags_clients = True

    def __init__(self, f: int, m: int | None = None) -> None:
        self.f, self.m = f, m

    @classmethod
    def from_config(cls, config: RobustConfig, setup: RunSetup) -> Self:
        return cls(config.f, config.m)

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        n = len(batch)
        self.check_cohort(n, self.f, self.rule)
        m = n - self.f if self.m is None else self.m
        if m > n:
            log.warning("round %d: multi_krum m = %d > %d updates; averaging all", ctx.round, m, n)
            m = n
        delta, selected = multi_krum(batch.deltas, self.f, m)
        return AggregationResult(delta, excluded=excluded_ids(batch.client_ids, selected))


__all__ = ["Krum", "MultiKrum", "krum", "krum_scores", "multi_krum", "multi_krum_select"]
