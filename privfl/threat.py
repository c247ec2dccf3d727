"""Threat models as data: every active attack and defense carries one.

:class:`ThreatModel` is the protocol they share: ``adversary`` (who attacks, or whom the
defense resists), ``to_record()`` (JSON-ready details) and ``summary()`` (one paragraph for a
report). Each run writes them all into ``threats.json`` (:func:`threat_record`), and the
privacy report prints them. The concrete classes live with what they model:
:class:`ChannelThreat` here (secure aggregation and HE share it),
``privfl.defenses.dp.threat.DPThreat``, ``privfl.defenses.robust.threat.RobustThreat``,
``privfl.attacks.inversion.threat.InversionThreat`` and
``privfl.attacks.poisoning.threat.PoisoningThreat``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ThreatModel(Protocol):
    """What every attack and defense says about its adversary."""

    @property
    def adversary(self) -> str:
        """Who attacks (an attack) or whom the defense resists (a defense), in words."""
        ...

    def to_record(self) -> dict[str, Any]:
        """The threat model's details as JSON-ready data."""
        ...

    def summary(self) -> str:
        """One paragraph for a report."""
        ...


def threat_record(component: str, threat: ThreatModel) -> dict[str, Any]:
    """One entry of ``threats.json``: the component (``"defense.secagg"``,
    ``"attack.inversion"``, ...), its adversary and summary, and its details.

    >>> t = ChannelThreat("curious", "none", "the sum", ("the key holder",))
    >>> r = threat_record("defense.he", t)
    >>> r["component"], r["adversary"], r["not_covered"]
    ('defense.he', 'server: curious', ['the key holder'])
    """
    return {
        "component": component,
        "adversary": threat.adversary,
        "summary": threat.summary(),
        **threat.to_record(),
    }


@dataclass(frozen=True)
class ChannelThreat:
    """The adversary a secure channel (secure aggregation, HE) is designed for.

    Attributes:
        server: the server's behaviour the guarantee holds for.
        colluding_clients: how many clients may pool their knowledge with the server.
        server_learns: what the server learns in every case.
        not_covered: attacks outside the model and parties still trusted, in words.
    """

    server: str
    colluding_clients: str
    server_learns: str
    not_covered: tuple[str, ...]

    @property
    def adversary(self) -> str:
        return f"server: {self.server}"

    def to_record(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "colluding_clients": self.colluding_clients,
            "server_learns": self.server_learns,
            "not_covered": list(self.not_covered),
        }

    def summary(self) -> str:
        return (
            f"Server: {self.server}. Colluding clients: {self.colluding_clients}. "
            f"It learns: {self.server_learns}."
        )


__all__ = ["ChannelThreat", "ThreatModel", "threat_record"]
