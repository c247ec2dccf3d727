"""The stage interfaces of a round (docs/design.md, "The round").

    sampler -> engine -> client transforms -> channel(aggregator) -> server transforms
            -> server optimizer;   channel -> ServerView -> observers

Each stage is a small ABC. Stateful stages (error feedback, adaptive clipping, server
momentum) keep their state behind ``state_dict`` / ``load_state_dict`` so checkpoints and
resume cover them; the defaults here are for stateless stages.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.seeding import numpy_rng, torch_generator

if TYPE_CHECKING:
    from rich.progress import Progress

    from privfl.ledger import Ledger
from privfl.update import GroundTruth, ParamSpec, ServerView, UpdateBatch


class Stateful:
    """State that must survive a checkpoint. Stateless stages keep these defaults."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} is stateless but got state {sorted(state)}")


@dataclass(frozen=True)
class ClipReport:
    """What central DP's client-side clipping tells the later stages of its round.

    Attributes:
        send_clip: the norm clients clipped to, ``max(S - slack, 0)`` (compression clips its
            output to it again).
        unclipped: ``sum_i b_i`` with ``b_i = 1[||Delta_i|| <= S]`` over the round's clients
            (adaptive clipping's count, read by the server's noise stage).
        slack: the channel's encoding slack this round (0 on the plain channel).
    """

    send_clip: float
    unclipped: float
    slack: float


@dataclass
class RoundNotes:
    """Typed facts one stage of a round hands to later stages of the same round; fresh each
    round, so nothing carries over to the next one (state that must, such as the adaptive
    clip norm, is a stage's own and travels in checkpoints).

    Attributes:
        clip: set by central DP's clipping (:class:`ClipReport`); None when no clipping ran.
    """

    clip: ClipReport | None = None


@dataclass(frozen=True)
class RoundContext:
    """What every stage may know about the current round.

    Attributes:
        round: 1-based round number.
        seed: the run's root seed; stages draw randomness only via :meth:`rng`.
        global_params: float32 ``(dim,)``, the model the clients start from (read-only).
        spec: the layout of ``global_params``.
        num_clients: registered clients (the population, not the cohort).
        sampled: the clients sampled this round, int64 ``(m,)``.
        ledger: the run's privacy ledger; stages that spend privacy record events in it.
        notes: what earlier stages of this round tell later ones (:class:`RoundNotes`).
    """

    round: int
    seed: int
    global_params: torch.Tensor
    spec: ParamSpec
    num_clients: int
    sampled: np.ndarray
    ledger: Ledger
    notes: RoundNotes = field(default_factory=RoundNotes)

    def rng(self, *path: int | str) -> np.random.Generator:
        """A numpy Generator for the stream ``(seed, *path, round)``."""
        return numpy_rng(self.seed, *path, self.round)

    def torch_rng(self, *path: int | str) -> torch.Generator:
        """A torch Generator for the stream ``(seed, *path, round)``."""
        return torch_generator(self.seed, *path, self.round)


class ClientTransform(Stateful, ABC):
    """Runs on the clients after local training, before anything leaves them: clipping, local
    DP noise, compression, or a malicious client's poisoning. Works on the whole cohort's
    ``(n, dim)`` matrix at once; rows it must not touch (honest clients) it leaves as they are.
    """

    @abstractmethod
    def apply(self, batch: UpdateBatch, ctx: RoundContext) -> UpdateBatch:
        """The batch as it leaves the clients."""


@dataclass(frozen=True)
class AggregationResult:
    """An aggregator's output.

    Attributes:
        delta: float32 ``(dim,)``, the aggregated update.
        excluded: client ids the rule left out (robust rules), int64.
        info: figures to add to the round's metrics.
        weight_sum: the sum of the weights of the updates a weighted mean averaged (its
            denominator), so that a server transform can turn the mean back into a sum (DP-FedAvg's
            fixed denominator); None where the rule is not a weighted mean.
    """

    delta: torch.Tensor
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    info: dict[str, Any] = field(default_factory=dict)
    weight_sum: float | None = None


class Aggregator(Stateful, ABC):
    """Combines plaintext updates, shape ``(n, dim)``, into one ``(dim,)`` delta."""

    #: True when the rule is the weighted mean, the only one a secure channel can compute.
    is_weighted_mean: bool = False

    @abstractmethod
    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        """The aggregated update of ``batch`` (which has at least one row)."""


@dataclass(frozen=True)
class ChannelResult:
    """What a channel delivers to the server.

    Attributes:
        aggregation: the aggregate the server may use, or None when the round must be skipped.
        view: exactly what the server saw.
        bytes_up: client-to-server bytes this round, all clients together.
        dropped: client ids lost in transit (dropouts), int64.
        info: figures to add to the round's metrics.
    """

    aggregation: AggregationResult | None
    view: ServerView
    bytes_up: int
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    info: dict[str, Any] = field(default_factory=dict)


class Channel(Stateful, ABC):
    """Decides what crosses the wire (plaintext, masked vectors, ciphertexts) and so what the
    server can see; runs the aggregator where the server may see individual updates."""

    name: str = "channel"

    @abstractmethod
    def transmit(
        self, batch: UpdateBatch, aggregator: Aggregator, ctx: RoundContext
    ) -> ChannelResult:
        """Send ``batch`` to the server and aggregate what arrives."""


class ServerTransform(Stateful, ABC):
    """Runs on the server on the aggregated update: central DP noise, adaptive clipping."""

    #: True for a transform that must release its output even in a round where no update
    #: arrived (it then gets a zero aggregate with ``weight_sum = 0``): central DP noise must
    #: not reveal whether anyone was sampled.
    releases_without_updates: bool = False

    @abstractmethod
    def apply(self, result: AggregationResult, ctx: RoundContext) -> AggregationResult:
        """The aggregate after this transform."""


@dataclass(frozen=True)
class ObserverContext:
    """What an observer gets beside the ServerView.

    Attributes:
        make_model: a fresh module of the run's architecture (weights to be loaded).
        spec: the layout of flat parameter vectors.
        input_shape, num_classes: facts an attacker is assumed to know.
        ground_truth: the true data of a client this round. Only for *scoring* a result:
            the attack itself must use nothing but the view.
        progress: the run's rich progress display, to which long observers may add a task
            (None when the run shows no progress).
        device: where an attack's optimisation runs (``[federation] device``); the view's
            vectors are CPU tensors.
    """

    make_model: Callable[[], torch.nn.Module]
    spec: ParamSpec
    input_shape: tuple[int, ...]
    num_classes: int
    ground_truth: Callable[[int], GroundTruth]
    progress: Progress | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class Observer(Stateful, ABC):
    """Watches what the server sees each round (inversion attacks, privacy audits)."""

    @abstractmethod
    def observe(self, view: ServerView, ctx: ObserverContext) -> list[dict[str, Any]]:
        """Records for ``attacks.json`` (each with ``attack``, ``round``, ``client``, ...)."""


class Evaluator(Stateful, ABC):
    """Extra figures on the global model at each evaluation round (e.g. a backdoor's attack
    success rate), added to the round's metrics."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, ctx: RoundContext) -> dict[str, Any]:
        """Figures for ``metrics.jsonl``; ``model`` holds the new global parameters."""


class Scorer(Stateful, ABC):
    """Scores a finished round with knowledge the server lacks (which clients truly attacked,
    how a twin run without the attack fares): figures added to the round's metrics."""

    @abstractmethod
    def score(self, record: dict[str, Any], ctx: RoundContext) -> dict[str, Any]:
        """Figures for ``metrics.jsonl``, given the round's record so far (``clients``,
        ``dropped``, ``excluded``, ``test_accuracy``, ...)."""


__all__ = [
    "AggregationResult",
    "Aggregator",
    "Channel",
    "ChannelResult",
    "ClientTransform",
    "ClipReport",
    "Evaluator",
    "Observer",
    "ObserverContext",
    "RoundContext",
    "RoundNotes",
    "Scorer",
    "ServerTransform",
    "Stateful",
]
