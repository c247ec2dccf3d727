"""Norm bounding (Sun, Kairouz, Suresh and McMahan, 2019, "Can You Really Backdoor Federated
Learning?")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import numpy as np
import torch

from privfl.defenses.robust.base import RobustAggregator
from privfl.defenses.robust.config import RobustConfig, RobustRule
from privfl.stages import AggregationResult, RoundContext
from privfl.update import UpdateBatch

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def norm_bound(
    updates: torch.Tensor, weights: torch.Tensor, bound: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sun et al. 2019, Section 3 ("norm thresholding"): each update is scaled to
    ``x_i / max(1, ||x_i|| / M)``, so its L2 norm is at most ``M``; the clipped updates are
    then averaged with the FedAvg weights. The scaling is folded into the weights, so no
    clipped copy of the matrix is made.

    Args:
        updates: float32 ``(n, d)``.
        weights: ``(n,)`` non-negative FedAvg weights with a positive sum.
        bound: ``M > 0``.
    Returns:
        ``(aggregate, clipped)``: float32 ``(d,)`` and a bool ``(n,)`` mask of the updates
        whose norm exceeded ``M``.
    """
    if bound <= 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    w = weights.to(torch.float64)
    if not bool(w.sum() > 0):
        raise ValueError("weights must have a positive sum")
    norms = torch.linalg.vector_norm(updates, dim=1).double()
    factors = (bound / norms).clamp(max=1.0)  # a zero update gives inf -> 1
    coeff = (w / w.sum() * factors).to(updates.dtype)
    return coeff @ updates, norms > bound


class NormBound(RobustAggregator):
    """Norm bounding as an aggregator; the clipped clients are reported in ``clipped``."""

    rule = RobustRule.NORM_BOUND

    def __init__(self, bound: float) -> None:
        self.bound = bound

    @classmethod
    def from_config(cls, config: RobustConfig, setup: RunSetup) -> Self:
        return cls(config.norm)

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        delta, clipped = norm_bound(batch.deltas, torch.from_numpy(batch.weights), self.bound)
        ids = np.sort(batch.client_ids[clipped.numpy()]).tolist()
        return AggregationResult(delta, info={"clipped": ids})


__all__ = ["NormBound", "norm_bound"]
