"""Clients that do unequal local work at unequal speeds (simulated time)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from privfl.client import LocalTraining, SGDTrainer
from privfl.heterogeneity.config import HeterogeneityConfig
from privfl.seeding import numpy_rng
from privfl.stages import ClientTransform, RoundContext
from privfl.update import ParamSpec, UpdateBatch

SECONDS_METRIC = "sim_seconds"


class HeterogeneousTrainer(SGDTrainer):
    """Plain SGD where client ``c`` in round ``r`` takes ``tau`` steps drawn from the stream
    ``(seed, "heterogeneity-steps", r, c)`` (or the configured epochs/steps), and reports
    ``sim_seconds = tau / speed_c`` beside ``steps``."""

    def __init__(self, config: LocalTraining, het: HeterogeneityConfig, seed: int) -> None:
        super().__init__(config)
        self.het, self.seed = het, seed
        self.distribution = het.steps_distribution()

    def steps_of(self, client_id: int, round: int) -> int | None:
        """The steps client ``client_id`` takes in ``round`` (None: the configured epochs)."""
        if self.distribution is None:
            return None
        return self.distribution.draw(numpy_rng(self.seed, "heterogeneity-steps", round, client_id))

    def train(
        self,
        model: nn.Module,
        spec: ParamSpec,
        global_params: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        *,
        client_id: int,
        round: int,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        steps = self.steps_of(client_id, round)
        inner = SGDTrainer(self.config if steps is None else replace(self.config, steps=steps))
        delta, metrics = inner.train(
            model, spec, global_params, x, y, generator, client_id=client_id, round=round
        )
        metrics[SECONDS_METRIC] = metrics["steps"] / self.het.speed_of(client_id)
        return delta, metrics


class DropStragglers(ClientTransform):
    """Clients whose simulated time exceeds the round's ``deadline`` never deliver: their rows
    are removed and listed in the round's ``dropped`` (``stragglers`` counts them)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def apply(self, batch: UpdateBatch, ctx: RoundContext) -> UpdateBatch:
        seconds = batch.metrics.get(SECONDS_METRIC)
        if seconds is None or len(batch) == 0:
            return batch
        # Rows without a time (audit canaries) are not devices: they are never late.
        late = np.nan_to_num(seconds, nan=0.0) > self.deadline
        kept = batch.select(~late)
        return replace(
            kept,
            dropped=np.concatenate([batch.dropped, batch.client_ids[late]]).astype(np.int64),
            info={**kept.info, "stragglers": int(late.sum())},
        )


__all__ = ["DropStragglers", "HeterogeneousTrainer", "SECONDS_METRIC"]
