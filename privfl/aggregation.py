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
    return (mean_coefficients(weights).to(deltas.dtype) @ deltas).contiguous()


def mean_coefficients(weights: torch.Tensor) -> torch.Tensor:
    """``w / sum(w)`` in float64, checked: the coefficients of a weighted mean."""
    w = weights.to(torch.float64)
    total = w.sum()
    if not bool(total > 0):
        raise ValueError(f"weights must have a positive sum, got {total.item()}")
    return w / total


class WeightedMean(Aggregator):
    """FedAvg's aggregation: updates weighted by their clients' example counts. A batch that
    carries its updates in factored form (``batch.factors``, the batched MLP kernel's) is
    averaged from the factors, whether or not a stage wrote its rows out, so the model does
    not depend on who looked."""

    is_weighted_mean = True

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        weights = torch.from_numpy(batch.weights)
        if batch.factors is not None:
            coefficients = mean_coefficients(weights).to(torch.float32)
            mean = batch.factors.weighted_sum(coefficients)
        else:
            mean = weighted_mean(batch.deltas, weights)
        return AggregationResult(mean, weight_sum=float(batch.weights.sum()))


__all__ = ["WeightedMean", "mean_coefficients", "weighted_mean"]
