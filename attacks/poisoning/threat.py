"""The adversary as data: who is malicious, from when, and what it knows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from privfl.attacks.poisoning.config import Knowledge, malicious_count
from privfl.seeding import numpy_rng

#: The named stream the malicious clients are drawn from: ``(seed, *MALICIOUS_STREAM)``.
MALICIOUS_STREAM = ("poisoning", "malicious")


def choose_malicious(seed: int, clients: int, fraction: float) -> np.ndarray:
    """The malicious clients of a run: ``malicious_count(fraction, clients)`` ids drawn
    uniformly without replacement from the stream ``(seed, "poisoning", "malicious")``, fixed
    for the whole run (a resumed run gets the same set).

    Returns:
        Sorted int64 ids.
    """
    count = malicious_count(fraction, clients)
    if not 1 <= count <= clients:
        raise ValueError(f"{count} malicious clients of {clients}")
    rng = numpy_rng(seed, *MALICIOUS_STREAM)
    return np.sort(rng.choice(clients, size=count, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class PoisoningThreat:
    """Who attacks and what they know (a :class:`privfl.threat.ThreatModel`).

    Attributes:
        malicious: sorted int64 ids of the malicious clients (fixed for the run).
        num_clients: registered clients.
        start_round: the first round the malicious clients deviate; before it they are honest.
        knowledge: whether attackers see the benign updates of the round (omniscient) or only
            their own (partial).
    """

    malicious: np.ndarray
    num_clients: int
    start_round: int = 1
    knowledge: Knowledge = Knowledge.OMNISCIENT

    def active(self, round: int) -> bool:
        """True when the malicious clients attack in ``round``."""
        return round >= self.start_round

    def is_malicious(self, client_id: int) -> bool:
        """True when ``client_id`` is one of the malicious clients."""
        i = int(np.searchsorted(self.malicious, client_id))
        return i < len(self.malicious) and int(self.malicious[i]) == client_id

    def rows(self, client_ids: np.ndarray) -> np.ndarray:
        """Bool mask, shape ``(n,)``: which of ``client_ids`` are malicious."""
        return np.isin(client_ids, self.malicious)

    def attackers(self, client_ids: np.ndarray, round: int) -> np.ndarray:
        """Sorted int64 ids of the clients among ``client_ids`` that attack in ``round``."""
        if not self.active(round):
            return np.zeros(0, dtype=np.int64)
        ids = np.asarray(client_ids, dtype=np.int64)
        return np.sort(ids[self.rows(ids)])

    @property
    def adversary(self) -> str:
        return f"{len(self.malicious)} malicious clients of {self.num_clients}"

    def to_record(self) -> dict[str, Any]:
        """The threat model as plain data (for ``threats.json`` and logs)."""
        return {
            "malicious": self.malicious.tolist(),
            "num_clients": self.num_clients,
            "start_round": self.start_round,
            "knowledge": self.knowledge.value,
        }

    def summary(self) -> str:
        sees = (
            "the benign updates of the round (omniscient)"
            if self.knowledge is Knowledge.OMNISCIENT
            else "only their own data and updates (partial knowledge)"
        )
        return (
            f"Clients {', '.join(str(int(c)) for c in self.malicious)} (of {self.num_clients}, "
            f"fixed for the run) are malicious from round {self.start_round} on and see {sees}; "
            "the server and the other clients follow the protocol."
        )


__all__ = ["MALICIOUS_STREAM", "PoisoningThreat", "choose_malicious"]
