"""The privacy ledger: every privacy-spending event of a run, and (epsilon, delta) from them.

The ledger keeps state (the events); the math is Opacus' accountants (RDP by default, PRV and
GDP selectable), which it replays the events into. Nothing here re-implements an accountant.
A run without a DP defense records no event, and its ledger says so: no (epsilon, delta)
guarantee is claimed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from privfl.stages import Stateful

AccountantName = Literal["rdp", "prv", "gdp"]
ACCOUNTANT_NAMES: tuple[str, ...] = ("rdp", "prv", "gdp")


@dataclass(frozen=True)
class PrivacyEvent:
    """``steps`` compositions of the sampled Gaussian mechanism.

    Attributes:
        noise_multiplier: sigma, noise std divided by the sensitivity (clip norm).
        sample_rate: q, the Poisson sampling probability of each unit (example or user).
        steps: how many times the mechanism ran.
        protects: the unit protected: ``"example"`` (DP-SGD) or ``"user"`` (DP-FedAvg).
        party: who spends: ``"server"`` or ``"client:<id>"`` (each client its own budget).
        round: the federated round of the event.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    protects: Literal["example", "user"]
    party: str
    round: int
    mechanism: str = "subsampled_gaussian"


class Ledger(Stateful):
    """The single source of privacy truth of a run."""

    def __init__(self) -> None:
        self.events: list[PrivacyEvent] = []

    def record(self, event: PrivacyEvent) -> None:
        """Add one event; sigma must be positive and q in (0, 1]."""
        if event.noise_multiplier <= 0:
            raise ValueError(f"noise_multiplier must be > 0, got {event.noise_multiplier}")
        if not 0 < event.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {event.sample_rate}")
        self.events.append(event)

    def parties(self) -> list[str]:
        """Every party that spent privacy, in first-spent order."""
        return list(dict.fromkeys(e.party for e in self.events))

    def epsilon(
        self, *, delta: float, accountant: AccountantName = "rdp", party: str | None = None
    ) -> float:
        """Epsilon at ``delta`` of ``party``'s events (all events when there is one party).

        Raises:
            ValueError: when there are no events, or several parties and none is named.
        """
        parties = self.parties()
        if not parties:
            raise ValueError("no privacy events: this run spent no privacy budget under DP")
        if party is None:
            if len(parties) > 1:
                raise ValueError(f"{len(parties)} parties spent privacy; name one of them")
            party = parties[0]
        from opacus.accountants import create_accountant  # deferred: opacus takes ~3 s to import

        acc = create_accountant(mechanism=accountant)
        for e in self.events:
            if e.party == party:
                for _ in range(e.steps):
                    acc.step(noise_multiplier=e.noise_multiplier, sample_rate=e.sample_rate)
        return float(acc.get_epsilon(delta=delta))

    def to_json(
        self, *, delta: float | None = None, accountant: AccountantName = "rdp"
    ) -> dict[str, Any]:
        """The ``ledger.json`` of a run: events and, when there are any, the worst epsilon."""
        out: dict[str, Any] = {"events": [asdict(e) for e in self.events], "accountant": accountant}
        if not self.events or delta is None:
            out.update(epsilon=None, delta=delta, note="no privacy-spending mechanism was active")
            return out
        per_party = {
            p: self.epsilon(delta=delta, accountant=accountant, party=p) for p in self.parties()
        }
        out.update(epsilon=max(per_party.values()), delta=delta, epsilon_per_party=per_party)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"events": [asdict(e) for e in self.events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.events = [PrivacyEvent(**e) for e in state["events"]]


__all__ = ["ACCOUNTANT_NAMES", "Ledger", "PrivacyEvent"]
