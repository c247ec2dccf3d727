"""signSGD with majority vote (Bernstein et al., "signSGD with majority vote is communication
efficient and fault tolerant", ICLR 2019, Algorithm 1): the server returns the sign of the sum
of the clients' signs, here scaled by the mean of their scales ``||v||_1 / d`` so that the
step has the size of an update (Karimireddy et al. 2019's scaled sign)."""

from __future__ import annotations

import torch

from privfl.stages import AggregationResult, Aggregator, RoundContext
from privfl.update import UpdateBatch


def majority_vote(deltas: torch.Tensor) -> torch.Tensor:
    """``mean_i(s_i) * sgn(sum_i sgn(deltas[i]))`` where each row is ``s_i`` times a sign
    vector; a tied coordinate gets 0.

    Args:
        deltas: float32 ``(n, d)``, rows of the form ``s_i * (+-1, ..., +-1)``.
    Returns:
        float32 ``(d,)``.
    """
    votes = torch.sign(deltas).sum(dim=0)
    scale = deltas.abs().amax(dim=1).mean()
    return (scale * torch.sign(votes)).to(torch.float32)


class MajorityVote(Aggregator):
    """The aggregator of ``compression.method = 'sign'``: one vote per client (example counts
    are ignored, as in the paper)."""

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        return AggregationResult(majority_vote(batch.deltas))


__all__ = ["MajorityVote", "majority_vote"]
