"""What a config's sections contribute to a run, and what they are given.

The plan (:mod:`privfl.plan`) asks each section's builder for a :class:`Contribution` and
assembles them; builders see the run only through a :class:`RunSetup`, and finishers see the
finished run only through a :class:`RunEnd`. These records live below the plan and the round
loop, so attacks and defenses import them without importing either (no import cycles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from privfl.audit.one_run import CanarySet
    from privfl.client import LocalTrainer
    from privfl.config import Config
    from privfl.data.federated import FederatedData
    from privfl.ledger import Ledger
    from privfl.runfolder import RunFolder
    from privfl.sampling import ClientSampler
    from privfl.stages import (
        Aggregator,
        Channel,
        ClientTransform,
        Evaluator,
        Observer,
        Scorer,
        ServerTransform,
    )
    from privfl.threat import ThreatModel
    from privfl.update import ParamSpec


class RoundRunner(Protocol):
    """A run driven one round at a time (what a :class:`RunSetup`'s ``spawn`` returns): a
    scorer that runs a twin of the run in lockstep, or an attack that trains shadow runs,
    needs no more than this. ``params`` is the current global model (flat float32)."""

    round: int
    params: torch.Tensor

    def run_round(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class RunSetup:
    """What stage builders may use: the run's data (attackers' own data, a server root set),
    its model layout and factory, the ledger that privacy-spending stages write to, and
    ``spawn``, which starts another run of a config, on the same data or on ``data`` (the
    clean twin of a poisoning run, a membership attack's shadow runs); None where the caller
    offers none. ``canaries``: the one-run audit's canaries when this run inserted them into
    its data (:func:`privfl.plan.prepare_data`)."""

    config: Config
    data: FederatedData
    spec: ParamSpec
    make_model: Callable[[], nn.Module]
    ledger: Ledger
    spawn: Callable[..., RoundRunner] | None = None
    canaries: CanarySet | None = None

    def model_with(self, params: torch.Tensor) -> nn.Module:
        """A module of the run's architecture holding the flat parameters ``params``, in eval
        mode (the released model, a shadow's, for an attack or audit to query)."""
        model = self.make_model()
        self.spec.load_into(model, params)
        return model.eval()


@dataclass(frozen=True)
class RunEnd:
    """What a finisher gets at the end of a run (not the round loop itself).

    Attributes:
        config: the resolved config.
        params: float32 ``(dim,)``, the final global model.
        ledger: the privacy ledger.
        folder: the run folder, or None for a run without one.
        metrics: the records of ``metrics.jsonl``.
        attacks: the records of ``attacks.json``.
    """

    config: Config
    params: torch.Tensor
    ledger: Ledger
    folder: RunFolder | None
    metrics: list[dict[str, Any]]
    attacks: list[dict[str, Any]]


#: Called once at the end of a run (e.g. to write a privacy report).
Finisher = Callable[[RunEnd], None]

#: An attack on the finished run (membership inference on the released model): called once,
#: before ``attacks.json`` is written, it returns the records to add to it.
EndAttack = Callable[[RunEnd], list[dict[str, Any]]]


class Slot(IntEnum):
    """Where a client transform runs among the client-side stages (ascending order; ties keep
    the plan's section order). Honest clients' own software runs first, from what training
    produced to what crosses the wire; the attackers' transform runs last, since attackers
    send what they like.

    - ``STRAGGLERS``: clients that miss the deadline never send (before anything else).
    - ``ACCOUNTING``: DP-SGD's spending, recorded from the cohort as trained.
    - ``AUDIT``: canary clients join, to pass the same clipping and noise as everyone.
    - ``DP``: clipping and local noise.
    - ``COMPRESSION``: post-processing of what DP released.
    - ``POISON``: the malicious clients' update.
    """

    STRAGGLERS = 10
    ACCOUNTING = 20
    AUDIT = 30
    DP = 40
    COMPRESSION = 50
    POISON = 60


@dataclass(frozen=True)
class Contribution:
    """What one config section adds to a run. Empty fields add nothing.

    Attributes:
        client_transforms: ``(slot, transform)`` pairs; the assembler orders them by slot.
        trainer: a replacement of the plain SGD trainer (DP-SGD, heterogeneous steps); at
            most one section may give one.
        wrap_trainer: wraps the trainer chosen (a poisoning attack's poisoned data).
        sampler: a replacement of the config's client sampler (central DP's Poisson cohorts).
        channel, aggregator: a replacement of the plain channel / the weighted mean; at most
            one section may give each.
        server_transforms, observers, evaluators, scorers, finishers: appended in the plan's
            section order.
        threat: the section's threat model (every attack and defense gives one); the run
            writes them all into ``threats.json``.
    """

    client_transforms: tuple[tuple[Slot, ClientTransform], ...] = ()
    trainer: LocalTrainer | None = None
    wrap_trainer: Callable[[LocalTrainer], LocalTrainer] | None = None
    sampler: ClientSampler | None = None
    channel: Channel | None = None
    aggregator: Aggregator | None = None
    server_transforms: tuple[ServerTransform, ...] = ()
    observers: tuple[Observer, ...] = ()
    evaluators: tuple[Evaluator, ...] = ()
    scorers: tuple[Scorer, ...] = ()
    end_attacks: tuple[EndAttack, ...] = ()
    finishers: tuple[Finisher, ...] = ()
    threat: ThreatModel | None = None


__all__ = ["Contribution", "EndAttack", "Finisher", "RoundRunner", "RunEnd", "RunSetup", "Slot"]
