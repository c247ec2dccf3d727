"""The engine interface: train a round's cohort and return their updates."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from privfl.client import LocalTrainer
from privfl.data.federated import FederatedData
from privfl.device import resolve_device
from privfl.engine.allocator import keep_freed_memory
from privfl.update import ParamSpec, Update, UpdateBatch

if TYPE_CHECKING:
    from privfl.config import FederationConfig


class Engine(ABC):
    """Runs local training for the sampled clients of a round.

    Every client's randomness is the stream ``(seed, "client", round, client_id)``, so any
    engine (sequential, vectorized, distributed) must give the same updates for the same seed.
    """

    #: The ``[federation] engine`` name of this class.
    name: str = ""

    def __init__(
        self,
        make_model: Callable[[], nn.Module],
        spec: ParamSpec,
        data: FederatedData,
        trainer: LocalTrainer,
        seed: int,
        federation: FederationConfig | None = None,
    ) -> None:
        """``federation``: the run's ``[federation]`` section, for engines with options of
        their own (``[federation.ray]``); None in tests that build an engine by hand."""
        self.make_model, self.spec, self.data = make_model, spec, data
        self.trainer, self.seed, self.federation = trainer, seed, federation
        #: Where the clients train (``[federation] device``); updates come back on the CPU.
        self.device = resolve_device(federation.device) if federation else torch.device("cpu")
        # Rounds reuse the same large buffers: keep them out of mmap/trim (see the module).
        keep_freed_memory()

    @abstractmethod
    def train(
        self,
        global_params: torch.Tensor,
        clients: Sequence[int],
        round: int,
        *,
        starts: torch.Tensor | None = None,
    ) -> list[Update]:
        """One :class:`Update` per client in ``clients``, in the same order, each delta a
        float32 CPU vector whatever the engine's device.

        ``starts``: float32 ``(len(clients), dim)``, each client's own start model (the nodes
        of a decentralized topology, :mod:`privfl.decentralized`); each update is then the
        client's trained model minus its own row. None: every client starts from
        ``global_params``.
        """

    def train_batch(
        self,
        global_params: torch.Tensor,
        clients: Sequence[int],
        round: int,
        *,
        starts: torch.Tensor | None = None,
    ) -> UpdateBatch:
        """:meth:`train`'s updates as one :class:`~privfl.update.UpdateBatch` (rows in
        ``clients``' order), which is what the round loop asks for; an engine that holds its
        updates in a cheaper form (the vectorized engine's factors) overrides it."""
        updates = self.train(global_params, clients, round, starts=starts)
        return UpdateBatch.stack(updates, self.spec.dim)

    @property
    def trains_with(self) -> str:
        """The engine that actually trains the clients (``timings.jsonl``'s ``engine``): this
        one's name, or the engine it hands its rounds to."""
        return self.name

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release workers or pools (nothing for in-process engines)."""
        return None
