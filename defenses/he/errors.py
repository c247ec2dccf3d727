"""Errors of homomorphic-encrypted aggregation."""

from __future__ import annotations

from privfl.errors import AggregationError, PrivflError


class CiphertextError(AggregationError):
    """A message between the parties is not a valid ciphertext of this run: truncated or
    altered bytes, another context's key or parameters, another round, or a decrypted
    aggregate that cannot be a sum of this round's updates. The round is aborted."""


class VoucherError(CiphertextError):
    """Vouchers in the server's aggregate do not open under their clients' keys (altered by
    the server, or a client sent a bad one). Nothing was decrypted: the server may leave
    those clients out (they are dropped) and send the key holder a new aggregate.

    Attributes:
        clients: client id -> why its voucher was refused.
    """

    def __init__(self, clients: dict[int, str]) -> None:
        self.clients = dict(clients)
        super().__init__("; ".join(clients.values()))


class TooFewClientsError(AggregationError):
    """The aggregate sums fewer updates than the key holder's ``min_clients``: decrypting it
    would reveal too little-aggregated updates. The round is aborted."""


class HeadroomError(PrivflError):
    """The encoded updates could overflow the plaintext space: the sum of the cohort's
    pre-scaled updates may exceed what the parameters represent exactly (CKKS: the data
    modulus over the scale; BFV: half the plain modulus). Raised on the clients, before
    anything is encrypted, so no wrong aggregate is ever produced. Not an
    :class:`AggregationError`: the round is not skipped, the run stops, because the parameters
    cannot represent these updates (a configuration problem)."""


__all__ = ["CiphertextError", "HeadroomError", "TooFewClientsError", "VoucherError"]
