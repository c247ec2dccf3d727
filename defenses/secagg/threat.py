"""What secure aggregation protects against, as data (reports print it)."""

from __future__ import annotations

from privfl.threat import ChannelThreat

SECAGG_THREAT_MODEL = ChannelThreat(
    server="honest-but-curious: follows the protocol, reads everything it receives",
    colluding_clients=(
        "up to t - 1 of each client's share-holders (all clients under the complete graph; "
        "its k neighbours and itself under SecAgg+)"
    ),
    server_learns=(
        "who took part and who dropped when, the masked vectors, the weighted mean of the "
        "survivors' clipped updates and their total scaled weight; never a partial sum: a "
        "round whose survivors' SecAgg+ masking graph is split aborts before unmasking "
        "(with allow_insecure, a research switch, it completes and each part's sum leaks)"
    ),
    not_covered=(
        "a malicious server that lies about who dropped or sends different client lists to "
        "different clients: Bonawitz et al.'s ConsistencyCheck round (signed lists) is not "
        "implemented, nor are signatures on advertised keys (a PKI)",
        "malicious clients sending out-of-range inputs (no input validation or range proofs): "
        "a client's own contribution is whatever it masks; every message is checked, and "
        "one that fails counts as its sender dropping, so no client can crash a round or "
        "change another's input in the sum",
        "malicious clients forcing an abort: a wrong unmasking share is detected, not "
        "attributed (the server cannot tell a lying holder from a lying dealer without "
        "commitments to the shares), and is caught only when more than t shares of that "
        "secret arrive (with exactly t it gives a wrong sum); a false complaint about a "
        "share cannot be checked either, and a lone one drops the accused neighbour",
        "what the aggregate itself reveals (use differential privacy for that)",
    ),
)

__all__ = ["SECAGG_THREAT_MODEL"]
