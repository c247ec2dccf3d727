"""Local training of one client: SGD (optional momentum, weight decay, FedProx term) for a
number of epochs or an exact number of steps."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from privfl.update import ParamSpec

if TYPE_CHECKING:
    from privfl.config import Config


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains.

    Attributes:
        lr, momentum, weight_decay: ``torch.optim.SGD``'s.
        epochs: passes over the local data (ignored when ``steps`` is set).
        steps: exact number of SGD steps, cycling through reshuffled epochs.
        batch_size: examples per step; None means the full local data set (FedSGD with
            ``steps = 1``).
        prox_mu: FedProx's ``mu / 2 * ||w - w_global||^2`` term (Li et al., MLSys 2020).
    """

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 1
    steps: int | None = None
    batch_size: int | None = 32
    prox_mu: float = 0.0

    @classmethod
    def from_config(cls, config: Config) -> LocalTraining:
        """The clients' local training settings of ``config`` (its ``[federation]``)."""
        f = config.federation
        return cls(
            lr=f.lr,
            momentum=f.momentum,
            weight_decay=f.weight_decay,
            epochs=f.local_epochs,
            steps=f.local_steps,
            batch_size=None if f.batch_size == "full" else f.batch_size,
            prox_mu=f.prox_mu,
        )


def batch_schedule(
    n: int, batch_size: int | None, epochs: int, steps: int | None, generator: torch.Generator
) -> Iterator[torch.Tensor | None]:
    """Index tensors of each step's mini-batch. Each epoch is a fresh permutation of ``n``
    examples cut into ``batch_size`` pieces (the last may be smaller). ``None`` stands for
    "all examples in order" (full batch), which saves an indexing copy."""
    if n == 0:
        return
    bs = n if batch_size is None else min(batch_size, n)
    full = bs == n
    total = steps if steps is not None else epochs * -(-n // bs)
    done = 0
    while done < total:
        if full:
            yield None
            done += 1
            continue
        for idx in torch.randperm(n, generator=generator).split(bs):
            yield idx
            done += 1
            if done == total:
                return


class LocalTrainer(ABC):
    """How a client turns the global model into an update (plain SGD here; DP-SGD elsewhere)."""

    @abstractmethod
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
        """Train ``model`` from ``global_params`` on ``(x, y)``, client ``client_id``'s data in
        ``round``; all randomness comes from ``generator``.

        Returns:
            ``(delta, metrics)``: float32 ``(dim,)`` local minus global parameters, and scalars
            such as ``loss`` (mean training loss over the steps) and ``steps``.
        """


def _channels_last_for_convolutions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """On the CPU, a model with 2-d convolutions trains in channels-last layout (its 4-d
    weights and the images ``x``): oneDNN's convolution, pooling and activation kernels run
    faster on it (W2's CNN on the sequential engine: 1.48 against 1.73 s a round). The same
    function in another memory layout: the numbers change by float rounding only. Only models
    built from ``torch.nn``'s own modules are moved (privfl's CNNs): a hand-written
    ``forward`` may ``.view`` a feature map, which fails on channels-last strides. Returns
    ``x`` in the layout the model now expects."""
    if x.dim() != 4 or x.device.type != "cpu":
        return x
    modules = list(model.modules())
    if not any(isinstance(m, nn.Conv2d) for m in modules):
        return x
    if not all(type(m).__module__.startswith("torch.nn.") for m in modules):
        return x
    model.to(memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last)


class SGDTrainer(LocalTrainer):
    """Mini-batch SGD on the cross-entropy loss (the client of FedAvg, McMahan et al. 2017)."""

    def __init__(self, config: LocalTraining) -> None:
        self.config = config

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
        c = self.config
        x = _channels_last_for_convolutions(model, x)
        spec.load_into(model, global_params)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        anchor = [p.detach().clone() for p in params] if c.prox_mu > 0 else None
        losses: list[torch.Tensor] = []
        sizes: list[int] = []
        model.train()
        for idx in batch_schedule(len(y), c.batch_size, c.epochs, c.steps, generator):
            xb, yb = (x, y) if idx is None else (x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            objective = loss
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                objective = loss + 0.5 * c.prox_mu * prox
            objective.backward()
            opt.step()
            losses.append(loss.detach())
            sizes.append(len(yb))
        delta = spec.flatten(model) - global_params
        mean_loss = (
            float(torch.stack(losses).double().cpu() @ torch.tensor(sizes, dtype=torch.float64))
            / sum(sizes)
            if losses
            else float("nan")
        )
        return delta, {"loss": mean_loss, "steps": float(len(losses))}


__all__ = ["LocalTrainer", "LocalTraining", "SGDTrainer", "batch_schedule"]
