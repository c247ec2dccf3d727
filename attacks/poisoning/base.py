"""How a poisoning attack enters a round.

* Update-level attacks (sign flipping, Gaussian noise, ALIE, IPM, min-max, min-sum, the
  boosting of model replacement) are :class:`UpdatePoisoning` client transforms: after honest
  local training they replace the malicious rows of the ``(n, d)`` batch and leave the benign
  rows as they are. Omniscient ones read the benign rows; partial-knowledge ones only the
  attackers' own honest rows.
* Data-level attacks (label flipping, the backdoor trigger) are :class:`DataPoisoning`: a
  :class:`PoisonedTrainer` wraps the plan's trainer and hands malicious clients poisoned data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from privfl.attacks.poisoning.config import Knowledge, PoisoningConfig, PoisoningMethod
from privfl.attacks.poisoning.threat import PoisoningThreat
from privfl.client import LocalTrainer
from privfl.seeding import numpy_rng
from privfl.stages import ClientTransform, Evaluator, RoundContext
from privfl.update import ParamSpec, UpdateBatch

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


class UpdatePoisoning(ClientTransform, ABC):
    """A client transform that rewrites the malicious rows of a round's batch.

    From ``threat.start_round`` on, the rows of malicious clients are replaced by
    :meth:`craft`'s output; benign rows and every row before the start round pass unchanged.
    The input batch is not modified.
    """

    def __init__(self, threat: PoisoningThreat) -> None:
        self.threat = threat

    @abstractmethod
    def craft(
        self, own: torch.Tensor, reference: torch.Tensor, *, n: int, ctx: RoundContext
    ) -> torch.Tensor:
        """The malicious updates.

        Args:
            own: float32 ``(m, d)``, the attackers' honest updates this round.
            reference: float32 ``(r, d)``, what the attackers know of the benign updates: the
                benign rows (omniscient; their own rows when the round has no benign one) or
                ``own`` (partial knowledge).
            n: updates in the round, benign and malicious.
        Returns:
            float32 ``(m, d)``, or ``(d,)`` when every attacker sends the same vector.
        """

    def apply(self, batch: UpdateBatch, ctx: RoundContext) -> UpdateBatch:
        if not self.threat.active(ctx.round) or len(batch) == 0:
            return batch
        mask = self.threat.rows(batch.client_ids)
        if not mask.any():
            return batch
        rows = torch.from_numpy(mask)
        own = batch.deltas[rows]
        benign = batch.deltas[~rows]
        omniscient = self.threat.knowledge is Knowledge.OMNISCIENT and len(benign) > 0
        crafted = self.craft(own, benign if omniscient else own, n=len(batch), ctx=ctx)
        deltas = batch.deltas.clone()
        deltas[rows] = crafted.to(deltas.dtype).expand_as(own)
        return batch.with_deltas(deltas)


class DataPoisoning(ABC):
    """Poisons a malicious client's local data before it trains."""

    @abstractmethod
    def poison(
        self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The poisoned ``(x, y)`` (new tensors; the inputs are not modified).

        Args:
            x: float32 ``(k, *input_shape)``; y: int64 ``(k,)``.
            rng: this client's poisoning stream for this round.
        """


class PoisonedTrainer(LocalTrainer):
    """Wraps the plan's trainer: from ``threat.start_round`` on, malicious clients train on
    poisoned data (drawn from the stream ``(seed, "poisoning", "data", round, client)``);
    everyone else, and every client before the start round, trains exactly as before."""

    def __init__(
        self, inner: LocalTrainer, threat: PoisoningThreat, poisoning: DataPoisoning, seed: int
    ) -> None:
        self.inner, self.threat, self.poisoning, self.seed = inner, threat, poisoning, seed

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
        if self.threat.active(round) and self.threat.is_malicious(client_id):
            rng = numpy_rng(self.seed, "poisoning", "data", round, client_id)
            x, y = self.poisoning.poison(x, y, rng)
        return self.inner.train(
            model, spec, global_params, x, y, generator, client_id=client_id, round=round
        )


@dataclass(frozen=True)
class PoisoningParts:
    """The stages one attack adds to a run.

    Attributes:
        transform: rewrites the malicious rows after training (update-level attacks).
        data: poisons the malicious clients' data (data-level attacks).
        evaluators: extra figures on the global model (e.g. a backdoor's success rate).
    """

    transform: ClientTransform | None = None
    data: DataPoisoning | None = None
    evaluators: tuple[Evaluator, ...] = ()


class PoisoningAttack(Protocol):
    """What the registry needs of an attack class: its method name and a builder."""

    method: ClassVar[PoisoningMethod]

    @classmethod
    def build(
        cls, config: PoisoningConfig, threat: PoisoningThreat, setup: RunSetup
    ) -> PoisoningParts: ...


__all__ = [
    "DataPoisoning",
    "PoisonedTrainer",
    "PoisoningAttack",
    "PoisoningParts",
    "UpdatePoisoning",
]
