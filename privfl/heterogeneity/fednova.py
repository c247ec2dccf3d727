"""FedNova (Wang, Liu, Liang, Joshi and Poor, "Tackling the objective inconsistency problem in
heterogeneous federated optimization", NeurIPS 2020, Sec. 4, eq. (7)).

With unequal local steps ``tau_i``, FedAvg's weighted mean of the updates minimizes a
surrogate objective weighted by ``p_i tau_i``, not the true ``sum p_i F_i``. FedNova divides
each update by ``||a_i||_1`` (the l1 norm of the client's aggregation vector: ``tau_i`` for
plain local SGD, ``[tau - rho (1 - rho^tau) / (1 - rho)] / (1 - rho)`` with momentum ``rho``)
and rescales the mean by ``tau_eff = sum_i p_i ||a_i||_1``:

    Delta = tau_eff * sum_i p_i Delta_i / ||a_i||_1,   p_i = w_i / sum_j w_j.
"""

from __future__ import annotations

import numpy as np
import torch

from privfl.stages import AggregationResult, Aggregator, RoundContext
from privfl.update import UpdateBatch

STEPS_METRIC = "steps"


def a_norm(steps: np.ndarray, momentum: float = 0.0) -> np.ndarray:
    """``||a_i||_1`` for ``steps`` local SGD steps with momentum ``rho`` (Wang et al. 2020,
    Sec. 4, "local momentum"): ``tau`` when ``rho = 0``."""
    tau = np.asarray(steps, dtype=np.float64)
    if momentum == 0:
        return tau
    r = momentum
    return (tau - r * (1 - r**tau) / (1 - r)) / (1 - r)


def fednova(
    deltas: torch.Tensor, weights: np.ndarray, steps: np.ndarray, momentum: float = 0.0
) -> torch.Tensor:
    """FedNova's aggregate (module docstring).

    Args:
        deltas: float32 ``(n, d)``; weights ``(n,)`` with a positive sum; steps ``(n,)``
            local steps, each >= 1.
    Returns:
        float32 ``(d,)``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if not w.sum() > 0:
        raise ValueError(f"weights must have a positive sum, got {w.sum()}")
    if np.any(~np.isfinite(steps)) or np.any(np.asarray(steps) < 1):
        raise ValueError(f"FedNova needs every client's local steps >= 1, got {steps}")
    p = w / w.sum()
    a = a_norm(steps, momentum)
    tau_eff = float(p @ a)
    coef = torch.from_numpy(tau_eff * p / a).to(deltas.dtype)
    return (coef @ deltas).contiguous()


class FedNova(Aggregator):
    """FedNova over the clients' reported ``steps`` (``UpdateBatch.metrics['steps']``)."""

    def __init__(self, momentum: float = 0.0) -> None:
        self.momentum = momentum

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        if STEPS_METRIC not in batch.metrics:
            raise ValueError("FedNova needs each client's 'steps' metric (its local SGD steps)")
        steps = batch.metrics[STEPS_METRIC]
        delta = fednova(batch.deltas, batch.weights, steps, self.momentum)
        tau_eff = float(np.dot(batch.weights / batch.weights.sum(), a_norm(steps, self.momentum)))
        return AggregationResult(delta, info={"fednova_tau_eff": tau_eff})


__all__ = ["FedNova", "a_norm", "fednova"]
