"""What a defense protects against, as data: channels carry one and the privacy report prints
it, so a reader sees what the server learns and what is still trusted."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThreatModel:
    """The adversary a defense is designed for.

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


__all__ = ["ThreatModel"]
