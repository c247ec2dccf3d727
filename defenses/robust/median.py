"""Coordinate-wise median (Yin, Chen, Ramchandran and Bartlett, ICML 2018)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import torch

from privfl.defenses.robust.base import RobustAggregator
from privfl.defenses.robust.config import RobustConfig, RobustRule
from privfl.defenses.robust.order_statistics import coordinate_median_np
from privfl.stages import AggregationResult, RoundContext
from privfl.update import UpdateBatch

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def coordinate_median(updates: torch.Tensor) -> torch.Tensor:
    """The median of each coordinate over the clients (Yin et al. 2018, Definition 1,
    "coordinate-wise median"); for an even number of clients the mean of the two middle
    values. Unweighted, as in the paper. Its breakdown point is 1/2: fewer than ``n/2``
    arbitrary rows keep every coordinate between two honest values.

    Args:
        updates: float32 ``(n, d)``, ``n >= 1``.
    Returns:
        float32 ``(d,)``.
    """
    return torch.from_numpy(coordinate_median_np(updates))


class Median(RobustAggregator):
    """The coordinate-wise median as an aggregator (no client is excluded as a whole)."""

    rule = RobustRule.MEDIAN

    @classmethod
    def from_config(cls, config: RobustConfig, setup: RunSetup) -> Self:
        return cls()

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        return AggregationResult(coordinate_median(batch.deltas))


__all__ = ["Median", "coordinate_median"]
