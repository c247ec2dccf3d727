"""What a robust aggregation rule resists (a :class:`privfl.threat.ThreatModel`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Rules whose guarantee is stated for a number ``f`` of Byzantine updates a round.
_COUNTED = ("krum", "multi_krum", "bulyan")


@dataclass(frozen=True)
class RobustThreat:
    """Malicious clients sending arbitrary updates, as resisted by ``rule``.

    >>> RobustThreat("krum", 2).adversary
    'up to 2 Byzantine updates a round'
    >>> RobustThreat("median", 2).to_record()
    {'rule': 'median', 'f': None}
    """

    rule: str
    f: int

    @property
    def adversary(self) -> str:
        if self.rule in _COUNTED:
            return f"up to {self.f} Byzantine updates a round"
        return "a minority of clients sending arbitrary updates"

    def to_record(self) -> dict[str, Any]:
        return {"rule": self.rule, "f": self.f if self.rule in _COUNTED else None}

    def summary(self) -> str:
        return (
            f"The {self.rule} rule replaces the weighted mean to bound the influence of "
            f"{self.adversary} (poisoning). The server is trusted and sees every update; "
            "robust aggregation gives no confidentiality, and colluding attackers beyond the "
            "rule's tolerance can still steer the model."
        )


__all__ = ["RobustThreat"]
