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
    import numpy as np
    import torch
    from torch import nn

    from privfl.audit.one_run import CanarySet
    from privfl.client import LocalTrainer
    from privfl.config import Config
    from privfl.data.federated import FederatedData
    from privfl.ledger import Ledger, PrivacyEvent
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

    @property
    def done(self) -> bool:
        """Whether the run has ended: its configured rounds ran, or its budget
        (``defense.dp.max_epsilon``) is spent; ``run_round`` must not be called then."""
        ...

    def run_round(self) -> dict[str, Any]: ...

    def state_dict(self, *, metrics: bool = True) -> dict[str, Any]: ...

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


class BudgetPlan(Protocol):
    """What a DP mode's round *would* spend, asked before the round runs, so that a run with
    ``defense.dp.max_epsilon`` never records an event that takes a party past it.

    How a mode provides it: its builder (``defenses/dp/builder.py``) returns
    ``Contribution(..., budget=plan)`` with ``plan`` an object having this method (one section
    at most gives one; a ``max_epsilon`` with a mode whose contribution has no ``budget`` is a
    :class:`~privfl.errors.ConfigError`).

    Contract of :meth:`planned_events`:

    - It is called by the round loop (:class:`privfl.federation.Federation`) before round
      ``round`` trains, with ``clients`` the round's sampled cohort (sorted int64 ids of real
      clients, as the sampler drew them), and possibly again with a sub-cohort (after
      retirements). It may be called for a round that then does not run.
    - It returns the :class:`~privfl.ledger.PrivacyEvent` s the mode's stages would record in
      the ledger during that round if every client of ``clients`` took part: the same
      ``party``, ``noise_multiplier``, ``sample_rate``, ``steps``, ``sensitivity``,
      ``protects``, ``mechanism`` and ``round`` as the real events; ``[]`` when the round
      spends nothing. A round that spends whoever is sampled (central DP's server event under
      Poisson sampling, even at an empty cohort) returns its event whatever ``clients`` is.
      When a figure is known only after training (dropouts, adaptive steps), return the most
      the round can spend: an over-estimate only stops early; an under-estimate is a bug
      (tests compare the plan with what the round recorded).
    - It is pure: no ledger writes, no random draws (a draw would shift the run's streams),
      no change of state; it may read stage state (the current clip, the tree position).
    - Parties: the events of party ``client_party(c)`` are client ``c``'s own budget; when
      they would take ``c`` past ``max_epsilon``, ``c`` is *retired*: removed from the cohort
      before training (and from every later round), so the mode must plan each client's
      events independently of who else takes part. An event of any other party (``"server"``)
      that would pass ``max_epsilon`` stops the run before the round: the run ends as a
      finished run at the round before.

    The check is :meth:`privfl.ledger.Ledger.epsilons_with` (the headline accountant at the
    run's delta) of the ledger's events plus these.
    """

    def planned_events(self, round: int, clients: np.ndarray) -> list[PrivacyEvent]: ...


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
        budget: what a round would spend, asked before it runs (:class:`BudgetPlan`; DP modes
            give one, so that ``defense.dp.max_epsilon`` can stop the run or retire clients);
            at most one section may give one.
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
    budget: BudgetPlan | None = None


__all__ = [
    "BudgetPlan",
    "Contribution",
    "EndAttack",
    "Finisher",
    "RoundRunner",
    "RunEnd",
    "RunSetup",
    "Slot",
]
