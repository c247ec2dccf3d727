"""What differential privacy protects, and against whom, by mode: the unit protected and the
observer the guarantee holds against (a :class:`privfl.threat.ThreatModel`; the privacy
report prints :data:`PROTECTED` under "What is protected")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The unit each mode protects and against whom, for reports (Markdown).
PROTECTED: dict[str, str] = {
    "sample": (
        "**One training example of one client.** Whoever sees everything a client sends (each "
        "of its model updates, every round: the server, or an eavesdropper) cannot tell "
        "whether any single example was in that client's data beyond (epsilon, delta). Every "
        "client has its own budget; the worst client's epsilon is the run's. A user with many "
        "examples is **not** protected as a whole: that takes user-level DP (mode central or "
        "local)."
    ),
    "central": (
        "**One user: everything one client contributes over the whole run.** Whoever sees the "
        "released global models (every round's) cannot tell whether a given client took part, "
        "beyond (epsilon, delta). The server adds the noise, so the server itself sees each "
        "clipped update in the clear (unless secure aggregation hides them): central DP does "
        "not protect anyone from the server."
    ),
    "local": (
        "**One user's updates as they leave the device.** Each client clips and noises its own "
        "update, so even the server sees only noised updates; each client's epsilon covers "
        "every round it took part in. No amplification by sampling applies (the server knows "
        "who sent what), and neighbouring inputs are any two updates (sensitivity 2 x clip)."
    ),
    "ftrl": (
        "**One user: everything one client contributes over the whole run**, without "
        "amplification by sampling (DP-FTRL, Kairouz et al. 2021). Whoever sees the released "
        "global models (every round's) cannot tell a user's clipped updates from none, beyond "
        "(epsilon, delta). The epsilon is computed for this run's participation pattern (who "
        "takes part in which round), which the seeded cohorts fix before the run and which is "
        "treated as public: the guarantee hides what a user's data is, not when the user took "
        "part. The server adds the noise (tree aggregation over the rounds), so it is trusted: "
        "it sees each clipped update in the clear (unless secure aggregation hides them)."
    ),
    "distributed": (
        "**One user: everything one client contributes over the whole run**, and the server "
        "need not be trusted to add the noise (the distributed discrete Gaussian, Kairouz, Liu "
        "and Steinke 2021). Each client adds its share of the discrete Gaussian noise to its "
        "clipped, rotated, rounded update and sends it only masked (secure aggregation): the "
        "server learns the noisy sum and nothing else, so the released models *and* the sum the "
        "server sees are (epsilon, delta)-DP. A neighbour in the masking graph sees nothing but "
        "masked bytes. The epsilon counts the survivors' noise shares, so each dropout removes "
        "a share and raises it (the report says by how much); neighbouring inputs replace one "
        "user's update by zero (the paper's relation). Clients colluding with the server can "
        "subtract their own contributions and shares: c colluders leave survivors - c shares, "
        "which the ledger does not assume (it counts no colluder), and the masks hold only "
        "while fewer than the secagg threshold collude. The rotation's signs and the scale "
        "are public; the guarantee assumes the other clients add their shares."
    ),
}

#: Whom each mode's guarantee holds against.
ADVERSARY: dict[str, str] = {
    "sample": "whoever sees each client's updates (the server or an eavesdropper)",
    "central": "whoever sees the released global models (not the server)",
    "local": "whoever sees each client's noised updates, the server included",
    "ftrl": "whoever sees the released global models (not the server), knowing who took part",
    "distributed": "the server (honest-but-curious) and whoever sees the released models; "
    "colluding clients cost one noise share each",
}

#: The unit each mode protects.
UNIT: dict[str, str] = {
    "sample": "one training example of one client",
    "central": "one user: everything one client contributes over the run",
    "local": "one user's updates as they leave the device",
    "ftrl": "one user: everything one client contributes over the run (no sampling assumed)",
    "distributed": "one user: everything one client contributes over the run, also from the "
    "server (which never sees an update)",
}


@dataclass(frozen=True)
class DPThreat:
    """What a DP mode protects and against whom.

    >>> t = DPThreat("central")
    >>> t.adversary
    'whoever sees the released global models (not the server)'
    >>> t.to_record()["unit"]
    'one user: everything one client contributes over the run'
    """

    mode: str

    @property
    def adversary(self) -> str:
        return ADVERSARY[self.mode]

    def to_record(self) -> dict[str, Any]:
        return {"mode": self.mode, "unit": UNIT[self.mode]}

    def summary(self) -> str:
        return PROTECTED[self.mode]


__all__ = ["ADVERSARY", "PROTECTED", "UNIT", "DPThreat"]
