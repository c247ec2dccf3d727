"""Centered clipping (Karimireddy, He and Jaggi, ICML 2021, "Learning from History for
Byzantine Robust Optimization")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import numpy as np
import torch

from privfl.defenses.robust.base import RobustAggregator
from privfl.defenses.robust.config import RobustConfig, RobustRule
from privfl.stages import AggregationResult, RoundContext
from privfl.update import UpdateBatch

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def centered_clip(
    updates: torch.Tensor, start: torch.Tensor, tau: float, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Karimireddy et al. 2021, Eq. (CC), iterated ``L`` times from ``v_0 = start``:

    .. math:: v_{l+1} = v_l + \\frac{1}{n} \\sum_{i=1}^n (x_i - v_l)
              \\min\\left(1, \\frac{\\tau}{\\lVert x_i - v_l \\rVert}\\right)

    Each client moves the result by at most ``tau / n`` per iteration, whatever it sends.
    Unweighted, as in the paper.

    Args:
        updates: float32 ``(n, d)``.
        start: float32 ``(d,)``, ``v_0`` (the previous round's aggregate in the paper).
        tau: clipping radius, > 0.
        iterations: ``L >= 1``.
    Returns:
        ``(v_L, clipped)``: float32 ``(d,)`` and a bool ``(n,)`` mask of the updates clipped
        in the last iteration.
    """
    if tau <= 0 or iterations < 1:
        raise ValueError(f"need tau > 0 and iterations >= 1, got {tau}, {iterations}")
    n = updates.shape[0]
    v = start.to(updates.dtype).clone()
    clipped = torch.zeros(n, dtype=torch.bool)
    for _ in range(iterations):
        diff = updates - v
        norms = torch.linalg.vector_norm(diff, dim=1).double()
        scale = (tau / norms).clamp(max=1.0)  # x_i == v_l gives inf -> 1 (a zero step)
        clipped = norms > tau
        v = v + (scale / n).to(updates.dtype) @ diff
    return v, clipped


class CenteredClip(RobustAggregator):
    """Centered clipping as an aggregator. It starts each round from the previous round's
    aggregate (zero in round 1), which it keeps in its checkpointed state."""

    rule = RobustRule.CENTERED_CLIP

    def __init__(self, tau: float, iterations: int = 1) -> None:
        self.tau, self.iterations = tau, iterations
        self.previous: torch.Tensor | None = None

    @classmethod
    def from_config(cls, config: RobustConfig, setup: RunSetup) -> Self:
        return cls(config.tau, config.iterations)

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        start = self.previous if self.previous is not None else torch.zeros(ctx.spec.dim)
        delta, clipped = centered_clip(batch.deltas, start, self.tau, self.iterations)
        self.previous = delta.clone()
        ids = np.sort(batch.client_ids[clipped.numpy()]).tolist()
        return AggregationResult(delta, info={"clipped": ids})

    def state_dict(self) -> dict[str, Any]:
        return {} if self.previous is None else {"previous": self.previous.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prev = state.get("previous")
        self.previous = None if prev is None else prev.clone()


__all__ = ["CenteredClip", "centered_clip"]
