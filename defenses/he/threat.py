"""What homomorphic-encrypted aggregation protects against, as data (reports print it)."""

from __future__ import annotations

from privfl.threat import ChannelThreat

HE_THREAT_MODEL = ChannelThreat(
    server=(
        "malicious towards the key holder: it may hand over any ciphertext as 'the aggregate', "
        "but the key holder decrypts only a sum that its clients' sealed vouchers vouch for "
        "(at least min_clients distinct clients, one aggregate a round)"
    ),
    colluding_clients="none: one client colluding with the server can isolate a victim",
    server_learns=(
        "who took part, the update size, ciphertext bytes, and the weighted mean of at least "
        "min_clients clients' updates (rounded by the key holder to a grid above the CKKS "
        "decryption noise); it may choose which of the clients that sent are summed"
    ),
    not_covered=(
        "the key holder: the only secret key (TenSEAL has no threshold decryption); it must not "
        "collude with the server, which holds every ciphertext",
        "a client colluding with the server: it can submit the negated sum of the other "
        "clients' ciphertexts, so that the checked 'sum' decrypts to one victim's update "
        "(preventing it needs zero-knowledge proofs of plaintext knowledge); nor may the "
        "server enrol clients of its own",
        "the channel between each client and the key holder must be confidential from the "
        "server (the voucher and check keys travel on it)",
        "malicious clients' inputs (HE gives confidentiality, not robustness), and aborts a "
        "participating client can force",
        "what the aggregate itself reveals (use differential privacy for that)",
    ),
)

__all__ = ["HE_THREAT_MODEL"]
