"""What secure aggregation protects against, as data (reports print it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThreatModel:
    """The adversary a defense is designed for.

    Attributes:
        server: the server's behaviour the guarantee holds for.
        colluding_clients: how many clients may pool their knowledge with the server.
        server_learns: what the server learns in every case.
        not_covered: attacks outside the model, in words.
    """

    server: str
    colluding_clients: str
    server_learns: str
    not_covered: tuple[str, ...]


SECAGG_THREAT_MODEL = ThreatModel(
    server="honest-but-curious: follows the protocol, reads everything it receives",
    colluding_clients=(
        "up to t - 1 of each client's share-holders (all clients under the complete graph; "
        "its k neighbours and itself under SecAgg+)"
    ),
    server_learns=(
        "who took part and who dropped when, the masked vectors, the weighted mean of the "
        "survivors' clipped updates and their total scaled weight"
    ),
    not_covered=(
        "a malicious server that lies about who dropped or sends different client lists to "
        "different clients: Bonawitz et al.'s ConsistencyCheck round (signed lists) is not "
        "implemented, nor are signatures on advertised keys (a PKI)",
        "malicious clients sending out-of-range inputs (no input validation or range proofs)",
        "what the aggregate itself reveals (use differential privacy for that)",
    ),
)

__all__ = ["SECAGG_THREAT_MODEL", "ThreatModel"]
