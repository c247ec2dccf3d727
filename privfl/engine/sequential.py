"""The sequential engine: clients train one after another in this process, on one model."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from privfl.engine.base import Engine
from privfl.seeding import torch_generator
from privfl.update import Update


class SequentialEngine(Engine):
    """One worker model is reused for every client (its parameters are reloaded from the
    global vector each time), so a round allocates no models."""

    name = "sequential"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._model = self.make_model().to(self.device)

    def train(
        self,
        global_params: torch.Tensor,
        clients: Sequence[int],
        round: int,
        *,
        starts: torch.Tensor | None = None,
    ) -> list[Update]:
        updates = []
        dev = self.device
        for i, cid in enumerate(clients):
            x, y = self.data.client_train(int(cid))
            g = torch_generator(self.seed, "client", round, int(cid))
            start = global_params if starts is None else starts[i]
            delta, metrics = self.trainer.train(
                self._model,
                self.spec,
                start.to(dev),
                x.to(dev),
                y.to(dev),
                g,
                client_id=int(cid),
                round=round,
            )
            updates.append(Update(int(cid), delta.cpu(), len(y), metrics))
        return updates
