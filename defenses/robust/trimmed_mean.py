"""Coordinate-wise trimmed mean (Yin, Chen, Ramchandran and Bartlett, ICML 2018)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import torch

from privfl.defenses.robust.base import RobustAggregator
from privfl.defenses.robust.config import RobustConfig, RobustRule
from privfl.defenses.robust.order_statistics import central_rows
from privfl.errors import AggregationError
from privfl.stages import AggregationResult, RoundContext
from privfl.update import UpdateBatch

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def trimmed_count(n: int, beta: float) -> int:
    """Values cut from each end of a coordinate: ``floor(beta * n)``, computed exactly as
    ``scipy.stats.trim_mean`` does (``int(beta * n)``)."""
    return int(beta * n)


def trimmed_mean(updates: torch.Tensor, beta: float) -> torch.Tensor:
    """Yin et al. 2018, Definition 2: for each coordinate, drop the largest and the smallest
    ``k = floor(beta * n)`` values and average the remaining ``n - 2k``. Unweighted, as in the
    paper; ``beta = 0`` is the plain mean. Up to ``k`` arbitrary rows keep every coordinate
    between the smallest and largest honest values.

    Args:
        updates: float32 ``(n, d)``.
        beta: share cut from each end, ``0 <= beta < 1/2``.
    Returns:
        float32 ``(d,)``.
    """
    n = updates.shape[0]
    if not 0 <= beta < 0.5:
        raise ValueError(f"beta must be in [0, 0.5), got {beta}")
    k = trimmed_count(n, beta)
    if n - 2 * k < 1:
        raise ValueError(f"trimming {k} from each end of {n} leaves nothing")
    return torch.from_numpy(central_rows(updates, k).mean(axis=0, dtype="float64")).float()


class TrimmedMean(RobustAggregator):
    """The coordinate-wise trimmed mean as an aggregator."""

    rule = RobustRule.TRIMMED_MEAN

    def __init__(self, beta: float) -> None:
        self.beta = beta

    @classmethod
    def from_config(cls, config: RobustConfig, setup: RunSetup) -> Self:
        return cls(config.trim)

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        n = len(batch)
        if n - 2 * trimmed_count(n, self.beta) < 1:
            raise AggregationError(f"trim = {self.beta} leaves no update of {n}")
        return AggregationResult(trimmed_mean(batch.deltas, self.beta))


__all__ = ["TrimmedMean", "trimmed_count", "trimmed_mean"]
