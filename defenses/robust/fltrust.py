"""FLTrust (Cao, Fang, Liu and Gong, NDSS 2021, "FLTrust: Byzantine-robust Federated Learning
via Trust Bootstrapping").

The server holds a small clean root data set and each round trains on it from the global
model, as a client would; its update ``g_0`` is the trust anchor. Root set: ``root_size``
examples drawn uniformly without replacement from the train split (the union of the clients'
data, the paper's default setting), from the stream ``(seed, "fltrust", "root")``, fixed for the
run. The central test split is left untouched, so test accuracy stays unbiased.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Self

import numpy as np
import torch
from torch import nn

from privfl.client import LocalTrainer, LocalTraining, SGDTrainer
from privfl.defenses.robust.base import RobustAggregator
from privfl.defenses.robust.config import RobustConfig, RobustRule
from privfl.errors import ConfigError
from privfl.seeding import numpy_rng, torch_generator
from privfl.stages import AggregationResult, RoundContext
from privfl.update import UpdateBatch

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup

#: ``client_id`` the server's own training passes to the trainer (no client has it).
SERVER_ID = -1


def fltrust(
    updates: torch.Tensor, server_update: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cao et al. 2021, Algorithm 1 (lines 9-12), Eqs. (2)-(4):

    .. math::
        TS_i = \\mathrm{ReLU}(\\cos(g_i, g_0)), \\quad
        \\bar g_i = \\frac{\\lVert g_0 \\rVert}{\\lVert g_i \\rVert} g_i, \\quad
        g = \\frac{\\sum_i TS_i \\bar g_i}{\\sum_j TS_j}

    An update of norm zero gets trust 0; when every trust score is 0 (or ``g_0 = 0``) the
    aggregate is the zero vector, as the formula's limit and the paper's code give.

    Args:
        updates: float32 ``(n, d)``, the clients' updates ``g_i``.
        server_update: float32 ``(d,)``, the server's root-data update ``g_0``.
    Returns:
        ``(aggregate, trust)``: float32 ``(d,)`` and float64 ``(n,)`` trust scores.
    """
    norms = torch.linalg.vector_norm(updates, dim=1).double()
    g0_norm = float(torch.linalg.vector_norm(server_update.double()))
    dots = (updates @ server_update).double()
    positive = norms > 0
    safe = torch.where(positive, norms, torch.ones_like(norms))
    trust = torch.where(
        positive & (g0_norm > 0), (dots / (safe * max(g0_norm, 1e-300))).clamp(min=0.0), 0.0
    )
    total = float(trust.sum())
    if total == 0.0:
        return torch.zeros(updates.shape[1], dtype=updates.dtype), trust
    coeff = (trust * g0_norm / safe / total).to(updates.dtype)
    return coeff @ updates, trust


class FLTrust(RobustAggregator):
    """FLTrust as an aggregator: trains the server update on the root set each round with
    plain SGD and the clients' local-training settings; clients with trust 0 are excluded."""

    rule = RobustRule.FLTRUST
    flags_clients = True

    def __init__(
        self,
        trainer: LocalTrainer,
        make_model: Callable[[], nn.Module],
        root_x: torch.Tensor,
        root_y: torch.Tensor,
        seed: int,
    ) -> None:
        self.trainer, self.root_x, self.root_y, self.seed = trainer, root_x, root_y, seed
        self._model = make_model()

    @classmethod
    def from_config(cls, config: RobustConfig, setup: RunSetup) -> Self:
        train = setup.data.bundle.train
        if config.root_size > len(train):
            raise ConfigError(
                f"defense.robust.root_size = {config.root_size} exceeds the {len(train)} "
                "training examples"
            )
        rng = numpy_rng(setup.config.seed, "fltrust", "root")
        idx = torch.from_numpy(np.sort(rng.choice(len(train), config.root_size, replace=False)))
        trainer = SGDTrainer(LocalTraining.from_config(setup.config))
        return cls(trainer, setup.make_model, train.x[idx], train.y[idx], setup.config.seed)

    def server_update(self, ctx: RoundContext) -> torch.Tensor:
        """``g_0``: the server's update on the root set this round, float32 ``(d,)``;
        its shuffles come from the stream ``(seed, "fltrust", "server", round)``."""
        g = torch_generator(self.seed, "fltrust", "server", ctx.round)
        delta, _ = self.trainer.train(
            self._model,
            ctx.spec,
            ctx.global_params,
            self.root_x,
            self.root_y,
            g,
            client_id=SERVER_ID,
            round=ctx.round,
        )
        return delta

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        delta, trust = fltrust(batch.deltas, self.server_update(ctx))
        zero = (trust == 0).numpy()
        return AggregationResult(delta, excluded=np.sort(batch.client_ids[zero]).astype(np.int64))


__all__ = ["SERVER_ID", "FLTrust", "fltrust"]
