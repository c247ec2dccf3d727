"""The plain aggregation rule: the example-weighted mean of FedAvg (McMahan et al. 2017)."""

from __future__ import annotations

import torch

from privfl.stages import AggregationResult, Aggregator, RoundContext
from privfl.update import UpdateBatch


def weighted_mean(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i * deltas[i] / sum_i w_i`` as one matrix-vector product.

    Args:
        deltas: float32, shape ``(n, dim)``.
        weights: shape ``(n,)``, non-negative with a positive sum.
    Returns:
        float32, shape ``(dim,)``.
    """
    w = weights.to(torch.float64)
    total = w.sum()
    if not bool(total > 0):
        raise ValueError(f"weights must have a positive sum, got {total.item()}")
    return ((w / total).to(deltas.dtype) @ deltas).contiguous()


class WeightedMean(Aggregator):
    """FedAvg's aggregation: updates weighted by their clients' example counts."""

    is_weighted_mean = True

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        return AggregationResult(
            weighted_mean(batch.deltas, torch.from_numpy(batch.weights)),
            weight_sum=float(batch.weights.sum()),
        )


__all__ = ["WeightedMean", "weighted_mean"]
