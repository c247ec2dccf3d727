"""Bulyan (El Mhamdi, Guerraoui and Rouault, ICML 2018, "The Hidden Vulnerability of
Distributed Learning in Byzantium")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import numpy as np
import torch

from privfl.defenses.robust.base import RobustAggregator, excluded_ids
from privfl.defenses.robust.config import RobustConfig, RobustRule
from privfl.defenses.robust.distances import pairwise_sq_distances
from privfl.defenses.robust.order_statistics import coordinate_median_np
from privfl.stages import AggregationResult, RoundContext
from privfl.update import UpdateBatch

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def bulyan_select(distances: torch.Tensor, f: int) -> np.ndarray:
    """Step 1 of Bulyan: ``theta = n - 2f`` updates chosen by Krum applied recursively.

    Each step scores the remaining ``r`` updates with Krum (squared distances to their
    ``r - f - 2`` nearest remaining neighbours, at least 0; see
    :func:`privfl.defenses.robust.krum.krum_scores`), moves the best one (ties: lower index)
    to the selection and repeats. The distances come from one matrix product for the whole
    round; each row is sorted once, and a step sums the first ``r - f - 2`` entries of each
    row that are still in play (a cumulative count over the sorted row), O(n^2) per step.

    Args:
        distances: float64 ``(n, n)`` squared distances, zero diagonal.
        f: Byzantine updates tolerated.
    Returns:
        int64 ``(theta,)`` row indices in the order chosen.
    """
    d = distances.detach().cpu().numpy().astype(np.float64, copy=True)
    n = d.shape[0]
    np.fill_diagonal(d, np.inf)  # a point is not its own neighbour; sorted last
    order = np.argsort(d, axis=1, kind="stable")
    sorted_d = np.take_along_axis(d, order, axis=1)
    alive = np.ones(n, dtype=bool)
    chosen: list[int] = []
    for _ in range(n - 2 * f):
        r = int(alive.sum())
        k = r - f - 2
        if k >= 1:
            # k <= r - 2, so the first k alive entries of a row never reach its own (inf).
            in_play = alive[order]
            take = in_play & (np.cumsum(in_play, axis=1) <= k)
            scores = np.where(take, sorted_d, 0.0).sum(axis=1)
        else:
            scores = np.zeros(n)
        scores[~alive] = np.inf
        best = int(np.argmin(scores))  # the first minimum: ties go to the lower index
        chosen.append(best)
        alive[best] = False
    return np.array(chosen, dtype=np.int64)


def bulyan(updates: torch.Tensor, f: int) -> tuple[torch.Tensor, np.ndarray]:
    """Bulyan: select ``theta = n - 2f`` updates by recursive Krum (:func:`bulyan_select`),
    then, coordinate by coordinate, average the ``beta = theta - 2f`` selected values closest
    to their median (El Mhamdi et al. 2018, Section 4). Needs ``n >= 4f + 3``.

    Args:
        updates: float32 ``(n, d)``.
        f: Byzantine updates tolerated.
    Returns:
        ``(aggregate, selected)``: float32 ``(d,)`` and the int64 ``(theta,)`` selected rows.
    """
    n = updates.shape[0]
    if f < 0 or n < 4 * f + 3:
        raise ValueError(f"Bulyan needs n >= 4f + 3, got n={n}, f={f}")
    selected = bulyan_select(pairwise_sq_distances(updates), f)
    chosen = updates[torch.from_numpy(selected)]
    beta = len(selected) - 2 * f
    median = torch.from_numpy(coordinate_median_np(chosen))
    closest = (chosen - median).abs_().topk(beta, dim=0, largest=False).indices
    return chosen.gather(0, closest).mean(dim=0), selected


class Bulyan(RobustAggregator):
    """Bulyan as an aggregator: clients not selected by the recursive Krum are excluded."""

    rule = RobustRule.BULYAN
    flags_clients = True

    def __init__(self, f: int) -> None:
        self.f = f

    @classmethod
    def from_config(cls, config: RobustConfig, setup: RunSetup) -> Self:
        return cls(config.f)

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        self.check_cohort(len(batch), self.f, self.rule)
        delta, selected = bulyan(batch.deltas, self.f)
        return AggregationResult(delta, excluded=excluded_ids(batch.client_ids, selected))


__all__ = ["Bulyan", "bulyan", "bulyan_select"]
