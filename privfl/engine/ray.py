"""The Ray engine: client training in a pool of Ray actors, for runs that outgrow one machine.

Each actor holds the run's data, a worker model and the trainer once (the data go to the
object store once per run, so one copy per node), and trains its share of every round's cohort
with the sequential engine's code: the same per-client streams ``(seed, "client", round,
cid)``, hence the same updates as :class:`~privfl.engine.sequential.SequentialEngine`. The
global model goes to the object store once a round (``ray.put``); each actor receives its
chunk of client ids and returns their updates. Stages after training (DP accounting, secure
aggregation, attacks) run in the driver as with any engine.

Ray is an optional dependency (``pip install 'privfl[ray]'``) imported only when this engine is
chosen. On one machine prefer ``sequential`` or ``vectorized``: actor start-up costs seconds and
every actor holds a copy of the model and trainer (see docs/engines.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from privfl.client import LocalTrainer
from privfl.data.federated import FederatedData
from privfl.engine.base import Engine
from privfl.engine.ray_config import RayConfig
from privfl.engine.sequential import SequentialEngine
from privfl.errors import ConfigError
from privfl.update import ParamSpec, Update

if TYPE_CHECKING:
    from privfl.config import FederationConfig

log = logging.getLogger(__name__)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError(
            "federation.engine = 'ray' needs Ray: pip install 'privfl[ray]' (or choose "
            "engine = 'sequential' | 'vectorized' on one machine)"
        ) from e
    return ray


def _actor_device(device: torch.device, federation: FederationConfig | None) -> torch.device:
    """Where the actors train: their CPUs. Ray gives an actor no GPU unless it asks for one
    (``num_gpus``), and these ask for one CPU each, so ``federation.device = "cuda"`` is refused
    here rather than trained on the CPU under a config that says cuda; ``"auto"`` that found a
    GPU trains on the CPUs, and says so."""
    if device.type == "cpu":
        return device
    name = federation.device if federation is not None else str(device)
    if name != "auto":
        raise ConfigError(
            f"federation.device = {name!r}: the ray engine trains on its actors' CPUs; "
            "use engine = 'sequential', 'vectorized' or 'auto' on a GPU, or device = 'cpu'"
        )
    log.info("ray engine: the actors train on their CPUs (device = 'auto' found %s)", device)
    return torch.device("cpu")


class _Worker:
    """A Ray actor's state: the data, one worker model and the trainer, kept across rounds."""

    def __init__(
        self,
        model: nn.Module,
        spec: ParamSpec,
        data: FederatedData,
        trainer: LocalTrainer,
        seed: int,
    ) -> None:
        self._engine = SequentialEngine(lambda: model, spec, data, trainer, seed)

    def train(self, global_params: torch.Tensor, clients: list[int], round: int) -> list[Update]:
        """The updates of ``clients`` (the sequential engine's loop, in this actor)."""
        return self._engine.train(global_params, clients, round)


class RayEngine(Engine):
    """Trains each round's cohort on ``workers`` Ray actors (``[federation.ray]``).

    A cohort is cut into one contiguous chunk per actor, balanced by example count (clients
    sorted by size, dealt round-robin); the updates come back in the caller's order.
    """

    name = "ray"

    def __init__(
        self,
        make_model: Callable[[], nn.Module],
        spec: ParamSpec,
        data: FederatedData,
        trainer: LocalTrainer,
        seed: int,
        federation: FederationConfig | None = None,
    ) -> None:
        super().__init__(make_model, spec, data, trainer, seed, federation)
        self.device = _actor_device(self.device, federation)
        ray = self._ray = _import_ray()
        opts = (federation.ray if federation is not None else None) or RayConfig()
        self._started = False
        if not ray.is_initialized():
            if opts.address is not None:
                if opts.num_cpus is not None:
                    raise ConfigError(
                        "federation.ray.num_cpus applies only to a local instance (address "
                        f"unset); the cluster at {opts.address!r} has its own CPUs"
                    )
                ray.init(address=opts.address, log_to_driver=False)
            else:
                ray.init(num_cpus=opts.num_cpus, include_dashboard=False, log_to_driver=False)
            self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = opts.workers or max(cpus, 1)
        data_ref = ray.put(data)  # once a run: one copy per node, shared by its actors
        actor = ray.remote(num_cpus=1)(_Worker)
        self._actors = [
            actor.remote(make_model(), spec, data_ref, trainer, seed) for _ in range(workers)
        ]
        log.info("ray engine: %d actors on a cluster of %d CPUs", workers, cpus)

    def train(
        self,
        global_params: torch.Tensor,
        clients: Sequence[int],
        round: int,
        *,
        starts: torch.Tensor | None = None,
    ) -> list[Update]:
        if starts is not None:  # privfl.combinations refuses a decentralized topology on Ray
            raise NotImplementedError("the ray engine trains every client from one global model")
        clients = [int(c) for c in clients]
        if not clients:
            return []
        sizes = np.array([len(self.data.partition.indices[c]) for c in clients])
        by_size = np.argsort(-sizes, kind="stable")
        n = min(len(self._actors), len(clients))
        chunks = [by_size[i::n].tolist() for i in range(n)]  # positions in `clients`
        params_ref = self._ray.put(global_params)  # the global model: once a round
        futures = [
            a.train.remote(params_ref, [clients[i] for i in chunk], round)
            for a, chunk in zip(self._actors, chunks, strict=False)
        ]
        out: list[Update | None] = [None] * len(clients)
        for chunk, updates in zip(chunks, self._ray.get(futures), strict=True):
            for i, u in zip(chunk, updates, strict=True):
                out[i] = u
        return out  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the actors, and the local Ray instance if this engine started it."""
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        if self._started:
            self._ray.shutdown()
            self._started = False


__all__ = ["RayEngine"]
