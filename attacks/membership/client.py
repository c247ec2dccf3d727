"""Membership inference against one client's update: the honest-but-curious server's attack.

In a round it attacks, the server takes one client's update ``Delta`` from its view and queries
the model that client trained, ``w + Delta`` (``w``: the global model it sent): were these
examples in that client's data? The candidates are half that client's examples and half test
examples. LiRA and RMIA calibrate with shadow updates: the server replays the clients' own
local training (the run's trainer, DP-SGD included) from the same ``w`` on population sets of
the client's size, each holding half the candidates, which is the shadow design of Carlini et
al. 2022 (Section IV) with one local training in place of a whole training run. The client
transforms after training (clipping, local noise, compression) are not replayed: the shadows
calibrate on what training produced, so under those defenses the attack is, if anything,
weaker than an attacker who replays them too.

Under secure aggregation and HE the view holds no individual update: the record says the
client target is not observable, as the inversion attacks' records do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.attacks.membership.attack import Population, run_membership
from privfl.attacks.membership.config import MembershipConfig
from privfl.seeding import derive_seed, numpy_rng, torch_generator
from privfl.stages import Observer, ObserverContext
from privfl.update import ServerView

if TYPE_CHECKING:
    from torch import nn

    from privfl.client import LocalTrainer
    from privfl.data.federated import FederatedData
    from privfl.update import ParamSpec

#: ``status`` of a record whose round showed the server no individual update.
NOT_OBSERVABLE = "not observable"


class ClientMembershipObserver(Observer):
    """Runs ``cfg``'s membership attack on one client's update in each of ``rounds``.

    Args:
        cfg: the ``[attack.membership]`` section (``target = "client"``).
        rounds: the rounds in which the server attacks.
        data: the run's data (the population: training and test splits; the attacked
            client's examples are the members, read for the candidate draw and scoring).
        trainer: the honest clients' local training, replayed for the shadows.
        spec, make_model: the layout of flat parameters and a fresh module of the run's
            architecture.
        seed: root of the attack's streams (which client, candidates, shadows).
        notes: sentences added to every record (what the run's defenses do to the view).
    """

    def __init__(
        self,
        cfg: MembershipConfig,
        *,
        rounds: frozenset[int],
        data: FederatedData,
        trainer: Callable[[], LocalTrainer],
        spec: ParamSpec,
        make_model: Callable[[], nn.Module],
        seed: int,
        notes: tuple[str, ...] = (),
    ) -> None:
        self.cfg, self.rounds, self.data = cfg, rounds, data
        self.trainer, self.spec, self.make_model = trainer, spec, make_model
        self.seed, self.notes = seed, notes
        self._trainer: LocalTrainer | None = None

    def observe(self, view: ServerView, ctx: ObserverContext) -> list[dict[str, Any]]:
        """One record for ``attacks.json`` in an attacked round: the attack on one client's
        update, or ``status = "not observable"`` when the view holds no plaintext update."""
        if view.round not in self.rounds:
            return []
        batch = view.updates
        if batch is None or len(batch) == 0:
            return [self._not_observable(view)]
        row = int(numpy_rng(self.seed, "membership-client", view.round).integers(len(batch)))
        client = int(batch.client_ids[row])
        w = view.global_params
        held = np.asarray(self.data.partition.indices[client], dtype=np.int64)
        b = self.data.bundle
        pop = Population.of(b.train.x, b.train.y, b.test.x, b.test.y, held)
        count = 2 * min(self.cfg.candidates // 2, len(held), len(b.test.y))
        target = self._model(w + batch.deltas[row])
        shadows = (
            None
            if self.cfg.method == "loss"
            else self._shadow_trainer(w, client, view, pop, ctx.device)
        )
        about = {"round": view.round, "client": client, "channel": view.channel, "status": "ok"}
        if count < self.cfg.candidates:
            about["note"] = (
                f"client {client} holds {len(held)} examples: {count} candidates, not "
                f"{self.cfg.candidates}"
            )
        if self.notes:
            about["note"] = "; ".join([n for n in (about.get("note"), *self.notes) if n])
        seed = derive_seed(self.seed, "membership-client-candidates", view.round)
        return run_membership(
            self.cfg, target, pop, shadows, seed, count=count, about=about
        ).records

    def _model(self, params: torch.Tensor) -> nn.Module:
        model = self.make_model()
        self.spec.load_into(model, params)
        return model.eval()

    def _shadow_trainer(
        self, w: torch.Tensor, client: int, view: ServerView, pop: Population, device: torch.device
    ):
        if self._trainer is None:  # built once, when the first update is attacked
            self._trainer = self.trainer()
        trainer = self._trainer
        pop_x, pop_y = pop.x, pop.y

        def train(ids: np.ndarray, seed: int) -> nn.Module:
            # The shadow trains on the run's device, as the clients do; it is queried on the
            # CPU, as the target.
            model = self.make_model().to(device)
            delta, _ = trainer.train(
                model,
                self.spec,
                w.to(device),
                pop_x[ids].to(device),
                pop_y[ids].to(device),
                torch_generator(seed, "membership-shadow"),
                client_id=client,
                round=view.round,
            )
            return self._model(w + delta.cpu())

        return train

    def _not_observable(self, view: ServerView) -> dict[str, Any]:
        note = (
            f"the {view.channel!r} channel shows the server no individual update, only "
            + ("their sum" if view.aggregate is not None else "ciphertexts")
            + ": the client target is not observable"
        )
        return {
            "attack": f"membership-{self.cfg.method}",
            "target": "client",
            "round": view.round,
            "client": None,
            "channel": view.channel,
            "status": NOT_OBSERVABLE,
            "auc": None,
            "tpr_at_fpr_0.001": None,
            "tpr_at_fpr_0.01": None,
            "seconds": 0.0,
            "note": "; ".join([note, *self.notes]),
        }


__all__ = ["NOT_OBSERVABLE", "ClientMembershipObserver"]
