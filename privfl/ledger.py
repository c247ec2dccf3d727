"""The privacy ledger: every privacy-spending event of a run, and (epsilon, delta) from them.

The ledger keeps state (the events); the math is Opacus' accountants (RDP by default, PRV and
GDP selectable) through :mod:`privfl.accounting`. Nothing here re-implements an accountant.
It is the single source of privacy truth: ``ledger.json`` and the privacy report are computed
from its events only. A run without a DP defense records no event, and its ledger says so: no
(epsilon, delta) guarantee is claimed.

Each *party* has its own budget: ``"server"`` for user-level DP-FedAvg (the server adds the
noise and the released models are protected), ``"client:<id>"`` for sample-level DP-SGD and
local DP (each client spends its own budget). The run's epsilon is the worst party's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from privfl.accounting import (
    ACCOUNTANT_NOTES,
    AccountantName,
    History,
    check_accountant,
    check_delta,
    check_noise_multiplier,
    check_sample_rate,
    classic_rdp_epsilon,
    epsilon_of,
)
from privfl.errors import PrivflError
from privfl.stages import Stateful

SERVER = "server"
LEDGER_FORMAT = 2


class Unit(StrEnum):
    """What one privacy guarantee protects."""

    EXAMPLE = "example"  # one training example of one client (DP-SGD)
    USER = "user"  # everything one client contributes (DP-FedAvg, local DP)


class Mechanism(StrEnum):
    """Privacy mechanisms the accountants understand."""

    SUBSAMPLED_GAUSSIAN = "subsampled_gaussian"
    # Distributed DP: entered as the subsampled Gaussian whose RDP dominates the round's
    # (privfl.defenses.dp.ddgauss_accounting); noise_multiplier is that Gaussian's.
    DISTRIBUTED_DISCRETE_GAUSSIAN = "distributed_discrete_gaussian"


def client_party(client_id: int) -> str:
    """The ledger party of client ``client_id``: ``"client:<id>"``."""
    return f"client:{int(client_id)}"


@dataclass(frozen=True)
class PrivacyEvent:
    """``steps`` compositions of the Poisson-subsampled Gaussian mechanism.

    Attributes:
        noise_multiplier: sigma, the noise std divided by the clip norm.
        sample_rate: q, the Poisson sampling probability of each protected unit.
        steps: how many times the mechanism ran.
        protects: the unit protected (:class:`Unit`).
        party: who spends: ``"server"`` or ``"client:<id>"``.
        round: the federated round of the event.
        mechanism: :class:`Mechanism` name.
        sensitivity: the L2 sensitivity in clip norms: 1 for add/remove-one neighbours
            (DP-SGD, DP-FedAvg); 2 for local DP, whose neighbours replace a client's whole
            input, so a clipped update can move by twice the clip norm.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    protects: str
    party: str
    round: int
    mechanism: str = Mechanism.SUBSAMPLED_GAUSSIAN.value
    sensitivity: float = 1.0

    @property
    def effective_noise_multiplier(self) -> float:
        """Noise std over the L2 sensitivity: the sigma the accountants see."""
        return self.noise_multiplier / self.sensitivity


class Ledger(Stateful):
    """The single source of privacy truth of a run.

    Args:
        delta: the run's target delta (set by the DP builder through :meth:`configure`).
        accountant: the accountant of the headline epsilon.
    """

    def __init__(self, *, delta: float | None = None, accountant: str = "rdp") -> None:
        self.events: list[PrivacyEvent] = []
        self.delta: float | None = None if delta is None else check_delta(delta)
        self.accountant = check_accountant(accountant)
        #: ``defense.dp.max_epsilon`` (the round loop enforces it; written into ledger.json).
        self.max_epsilon: float | None = None
        #: ``{"round", "reason"}`` when the budget stopped the run before its configured rounds.
        self.stop: dict[str, Any] | None = None

    def configure(self, *, delta: float, accountant: str = "rdp") -> None:
        """Set the run's delta and headline accountant (what ``ledger.json`` reports)."""
        self.delta = check_delta(delta)
        self.accountant = check_accountant(accountant)

    # ------------------------------------------------------------------ events

    def record(self, event: PrivacyEvent) -> None:
        """Add one event.

        Raises:
            PrivflError: sigma < 0, q outside (0, 1], steps < 0, or an unknown unit/mechanism.
        """
        self.events.append(_checked(event))

    def parties(self) -> list[str]:
        """Every party that spent privacy, in first-spent order."""
        return list(dict.fromkeys(e.party for e in self.events))

    def units(self) -> list[str]:
        """The units protected by the recorded events."""
        return list(dict.fromkeys(e.protects for e in self.events))

    def rounds(self) -> list[int]:
        """The rounds in which privacy was spent, ascending."""
        return sorted({e.round for e in self.events})

    def history(
        self,
        party: str,
        *,
        up_to_round: int | None = None,
        extra: Iterable[PrivacyEvent] = (),
    ) -> History:
        """``party``'s events (and those of ``extra``, as if recorded after them) as an Opacus
        accountant history ``((sigma, q, steps), ...)``: effective sigma, identical
        ``(sigma, q)`` merged, in first-spent order."""
        steps: dict[tuple[float, float], int] = {}
        for e in itertools.chain(self.events, extra):
            if e.party == party and (up_to_round is None or e.round <= up_to_round):
                key = (e.effective_noise_multiplier, e.sample_rate)
                steps[key] = steps.get(key, 0) + e.steps
        return tuple((s, q, t) for (s, q), t in steps.items())

    # ------------------------------------------------------------------ epsilon

    def _delta(self, delta: float | None) -> float:
        if delta is None:
            if self.delta is None:
                raise PrivflError("no delta: give one, or configure the ledger with the run's")
            return self.delta
        return check_delta(delta)

    def _party(self, party: str | None) -> str:
        parties = self.parties()
        if not parties:
            raise PrivflError("no privacy events: this run spent no privacy budget under DP")
        if party is None:
            if len(parties) > 1:
                raise PrivflError(f"{len(parties)} parties spent privacy; name one of them")
            return parties[0]
        if party not in parties:
            raise PrivflError(f"party {party!r} spent no privacy; parties: {parties[:5]}...")
        return party

    def epsilon(
        self,
        *,
        delta: float | None = None,
        accountant: str | None = None,
        party: str | None = None,
        up_to_round: int | None = None,
    ) -> float:
        """Epsilon at ``delta`` of ``party``'s events (up to ``up_to_round``), from Opacus'
        accountant ``accountant`` (the ledger's own delta and accountant by default)."""
        history = self.history(self._party(party), up_to_round=up_to_round)
        name = self.accountant if accountant is None else check_accountant(accountant)
        return epsilon_of(history, delta=self._delta(delta), accountant=name)

    def epsilons_with(
        self,
        events: Iterable[PrivacyEvent],
        *,
        delta: float | None = None,
        accountant: str | None = None,
    ) -> dict[str, float]:
        """Each party of ``events``: its epsilon at ``delta`` (the ledger's by default) under
        ``accountant`` (the headline one by default) *if* ``events`` were recorded, from its
        recorded events plus these; the ledger is unchanged. What a budget check asks before a
        round (:class:`privfl.pipeline.BudgetPlan`). Parties with identical resulting
        histories share one accountant call (many clients of equal size stay fast).

        Raises:
            PrivflError: an invalid event (as :meth:`record`), or no delta.
        """
        extra = [_checked(e) for e in events]
        d = self._delta(delta)
        name = self.accountant if accountant is None else check_accountant(accountant)
        out: dict[str, float] = {}
        by_history: dict[History, float] = {}
        for p in dict.fromkeys(e.party for e in extra):
            h = self.history(p, extra=extra)
            if h not in by_history:
                by_history[h] = epsilon_of(h, delta=d, accountant=name)
            out[p] = by_history[h]
        return out

    def epsilon_with(
        self,
        events: Iterable[PrivacyEvent],
        *,
        party: str,
        delta: float | None = None,
        accountant: str | None = None,
    ) -> float:
        """Epsilon of ``party`` if ``events`` were recorded (see :meth:`epsilons_with`); a
        party absent from both the ledger and ``events`` has spent nothing: 0."""
        extra = [_checked(e) for e in events]
        h = self.history(party, extra=extra)
        if not h:
            return 0.0
        name = self.accountant if accountant is None else check_accountant(accountant)
        return epsilon_of(h, delta=self._delta(delta), accountant=name)

    def epsilon_classic(self, *, delta: float | None = None, party: str | None = None) -> float:
        """Epsilon with the classic RDP conversion (see
        :func:`privfl.accounting.classic_rdp_epsilon`), for comparison with published tables."""
        history = self.history(self._party(party))
        return classic_rdp_epsilon(history, delta=self._delta(delta))

    def epsilons(
        self, *, delta: float | None = None, accountant: str | None = None
    ) -> dict[str, float]:
        """Every party's epsilon. Parties with identical histories (clients of equal size with
        equal participation) share one accountant call, so 50+ clients stay fast."""
        d = self._delta(delta)
        name = self.accountant if accountant is None else check_accountant(accountant)
        histories = {p: self.history(p) for p in self.parties()}
        by_history: dict[History, float] = {}
        for h in histories.values():
            if h not in by_history:
                by_history[h] = epsilon_of(h, delta=d, accountant=name)
        return {p: by_history[h] for p, h in histories.items()}

    def worst_party(self, *, delta: float | None = None) -> str:
        """The party with the largest RDP epsilon (RDP is cheap; it orders the parties)."""
        eps = self.epsilons(delta=delta, accountant=AccountantName.RDP)
        return max(eps, key=lambda p: eps[p])

    def epsilon_by_round(
        self, *, party: str | None = None, delta: float | None = None
    ) -> list[tuple[int, float]]:
        """``(round, epsilon)`` after each round in which privacy was spent, under RDP: of
        ``party``, or (None) of the run, i.e. the worst party's epsilon so far."""
        d = self._delta(delta)
        parties = [party] if party is not None else self.parties()
        return [
            (r, max(epsilon_of(self.history(p, up_to_round=r), delta=d) for p in parties))
            for r in self.rounds()
        ]

    # ------------------------------------------------------------------ files

    def to_json(self) -> dict[str, Any]:
        """The ``ledger.json`` of a run: the events and, when there are any, the headline
        epsilon (the worst party under the configured accountant), every accountant's figure
        for that party with its known looseness, and each party's epsilon. With a
        ``max_epsilon``: it, and ``stopped`` (``{"round", "reason"}`` or None).

        When the configured accountant cannot compute the headline (Opacus' GDP fails at some
        extreme settings), ``epsilon`` is None, ``epsilon_error`` says why, and the per-party
        figures are RDP's (``epsilon_per_party_accountant``)."""
        out: dict[str, Any] = {
            "format": LEDGER_FORMAT,
            "events": [asdict(e) for e in self.events],
            "accountant": self.accountant.value,
            "delta": self.delta,
        }
        if self.max_epsilon is not None:
            out["max_epsilon"] = self.max_epsilon
            out["stopped"] = self.stop
        if not self.events or self.delta is None:
            note = "no privacy-spending mechanism was active"
            if self.stop is not None:
                note = f"no privacy was spent: stopped before round {self.stop['round']}"
            out.update(epsilon=None, note=note)
            return out
        rdp = self.epsilons(accountant=AccountantName.RDP)
        try:
            per_party = rdp if self.accountant is AccountantName.RDP else self.epsilons()
            error = None
        except PrivflError as e:  # e.g. GDP's root search failing: say so, never guess
            per_party, error = rdp, str(e)
        worst = max(per_party, key=lambda p: per_party[p])
        by_accountant: dict[str, float | None] = {}
        for name in AccountantName:
            if name is self.accountant and error is None:
                by_accountant[name.value] = per_party[worst]
                continue
            try:
                by_accountant[name.value] = self.epsilon(accountant=name, party=worst)
            except PrivflError:
                by_accountant[name.value] = None  # e.g. GDP on a changing sigma
        by_accountant["rdp_classic"] = self.epsilon_classic(party=worst)
        out.update(
            epsilon=None if error else _json_float(per_party[worst]),
            worst_party=worst,
            protects=self.units(),
            epsilon_by_accountant={k: _json_float(v) for k, v in by_accountant.items()},
            accountant_notes={k: str(v) for k, v in ACCOUNTANT_NOTES.items()},
            epsilon_per_party={p: _json_float(v) for p, v in per_party.items()},
            epsilon_per_party_accountant=(AccountantName.RDP if error else self.accountant).value,
        )
        if error:
            out["epsilon_error"] = error
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        """A ledger holding the events, delta and accountant of a ``ledger.json``."""
        ledger = cls(accountant=data.get("accountant", "rdp"))
        if data.get("delta") is not None:
            ledger.delta = check_delta(float(data["delta"]))
        ledger.load_state_dict({"events": data.get("events", [])})
        ledger.max_epsilon = data.get("max_epsilon")
        ledger.stop = data.get("stopped")
        return ledger

    def state_dict(self) -> dict[str, Any]:
        return {"events": [asdict(e) for e in self.events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.events = [PrivacyEvent(**e) for e in state["events"]]


def _checked(event: PrivacyEvent) -> PrivacyEvent:
    """``event`` if the accountants can take it, else a PrivflError naming the bad field."""
    check_noise_multiplier(event.noise_multiplier)
    check_sample_rate(event.sample_rate)
    if event.steps < 0:
        raise PrivflError(f"steps must be >= 0, got {event.steps}")
    if event.sensitivity <= 0:
        raise PrivflError(f"sensitivity must be > 0, got {event.sensitivity}")
    if event.protects not in tuple(Unit):
        raise PrivflError(f"protects must be one of {[u.value for u in Unit]}")
    if event.mechanism not in tuple(Mechanism):
        raise PrivflError(f"mechanism must be one of {[m.value for m in Mechanism]}")
    return event


def _json_float(x: float | None) -> float | str | None:
    """JSON has no infinity: an infinite epsilon (sigma = 0) is written as ``"inf"``."""
    if x is None:
        return None
    return "inf" if math.isinf(x) else float(x)


__all__ = [
    "LEDGER_FORMAT",
    "SERVER",
    "Ledger",
    "Mechanism",
    "PrivacyEvent",
    "Unit",
    "client_party",
]
