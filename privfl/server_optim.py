"""Server optimizers: how the aggregated update moves the global model.

All follow Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2, with the
pseudo-gradient ``Delta_t`` = the aggregated client delta (``local - global``, so the server
*adds* it):

- FedAvg:   ``x += eta * Delta``  (eta = 1: McMahan et al. 2017)
- FedAvgM:  ``m = beta * m + Delta; x += eta * m``  (Hsu et al. 2019)
- FedAdagrad: ``v = v + Delta^2``
- FedAdam:  ``v = beta2 * v + (1 - beta2) * Delta^2``
- FedYogi:  ``v = v - (1 - beta2) * Delta^2 * sign(v - Delta^2)``
- q-FFL:    ``x += Delta`` where the aggregation stage already gave q-FedAvg's
  ``-sum_k Delta_k / sum_k h_k`` (Li et al. 2020; :mod:`privfl.fairness.qffl`)

and for the three adaptive ones ``m = beta1 * m + (1 - beta1) * Delta``,
``x += eta * m / (sqrt(v) + tau)``, with ``m_0 = 0`` and ``v_0 = tau^2`` (the paper's
``v_{-1} >= tau^2``) and no bias correction, as in the paper.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from privfl.registry import Registry
from privfl.stages import Stateful

if TYPE_CHECKING:
    from privfl.config import FederationConfig


class ServerOptimizer(Stateful, ABC):
    """Turns the aggregated delta into the next global model."""

    @abstractmethod
    def step(self, params: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The new global parameters, float32 ``(dim,)``; ``params`` is left unchanged."""


class FedAvg(ServerOptimizer):
    """``x + eta * Delta``."""

    def __init__(self, *, lr: float = 1.0) -> None:
        self.lr = lr

    def step(self, params: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return params + self.lr * delta


class FedAvgM(ServerOptimizer):
    """Server momentum: ``m = beta * m + Delta; x + eta * m``."""

    def __init__(self, *, lr: float = 1.0, momentum: float = 0.9) -> None:
        self.lr, self.momentum = lr, momentum
        self.m: torch.Tensor | None = None

    def step(self, params: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        self.m = delta.clone() if self.m is None else self.momentum * self.m + delta
        return params + self.lr * self.m

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m = state["m"]


class _Adaptive(ServerOptimizer):
    """Shared part of FedAdagrad, FedAdam and FedYogi; subclasses give the ``v`` update."""

    def __init__(self, *, lr: float, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3):
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @abstractmethod
    def _second_moment(self, v: torch.Tensor, d2: torch.Tensor) -> torch.Tensor: ...

    def step(self, params: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if self.m is None or self.v is None:
            self.m = torch.zeros_like(delta)
            self.v = torch.full_like(delta, self.tau**2)
        self.m = self.beta1 * self.m + (1 - self.beta1) * delta
        self.v = self._second_moment(self.v, delta * delta)
        return params + self.lr * self.m / (self.v.sqrt() + self.tau)

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m, self.v = state["m"], state["v"]


class FedAdagrad(_Adaptive):
    """``v = v + Delta^2``."""

    def _second_moment(self, v: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        return v + d2


class FedAdam(_Adaptive):
    """``v = beta2 * v + (1 - beta2) * Delta^2``."""

    def _second_moment(self, v: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1 - self.beta2) * d2


class FedYogi(_Adaptive):
    """``v = v - (1 - beta2) * Delta^2 * sign(v - Delta^2)`` (Zaheer et al. 2018)."""

    def _second_moment(self, v: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        return v - (1 - self.beta2) * d2 * torch.sign(v - d2)


SERVER_OPTIMIZERS: Registry[str, Callable[[FederationConfig], ServerOptimizer]] = Registry.of(
    "federation.server_optimizer",
    (
        ("fedavg", lambda c: FedAvg(lr=c.server_lr)),
        ("fedavgm", lambda c: FedAvgM(lr=c.server_lr, momentum=c.server_momentum)),
        (
            "fedadagrad",
            lambda c: FedAdagrad(lr=c.server_lr, beta1=c.server_beta1, tau=c.server_tau),
        ),
        (
            "fedadam",
            lambda c: FedAdam(
                lr=c.server_lr, beta1=c.server_beta1, beta2=c.server_beta2, tau=c.server_tau
            ),
        ),
        (
            "fedyogi",
            lambda c: FedYogi(
                lr=c.server_lr, beta1=c.server_beta1, beta2=c.server_beta2, tau=c.server_tau
            ),
        ),
        # q-FedAvg (Li et al. 2020): the aggregator computes -sum Delta_k / sum h_k from each
        # client's update and loss (privfl.fairness.qffl), so the server adds it as it is.
        ("qffl", lambda c: FedAvg(lr=1.0)),
    ),
)
SERVER_OPTIMIZER_NAMES: tuple[str, ...] = tuple(SERVER_OPTIMIZERS)


def create_server_optimizer(config: FederationConfig) -> ServerOptimizer:
    """The server optimizer ``config.server_optimizer`` names, with its parameters."""
    return SERVER_OPTIMIZERS.create(config.server_optimizer, config)


__all__ = [
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedYogi",
    "SERVER_OPTIMIZERS",
    "SERVER_OPTIMIZER_NAMES",
    "ServerOptimizer",
    "create_server_optimizer",
]
