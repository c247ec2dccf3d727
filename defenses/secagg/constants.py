"""Protocol constants of secure aggregation: stages, wire sizes, key-derivation labels.

Following Flower's ``secaggplus_constants.py`` (``Stage``, ``Key``), but as enums.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Stage(StrEnum):
    """The four rounds of Bonawitz et al. (CCS 2017, Fig. 4) in order; the consistency-check
    round of the actively secure variant is not implemented (see the threat model)."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASKING = "unmasking"

    @property
    def index(self) -> int:
        """0 for AdvertiseKeys ... 3 for Unmasking."""
        return list(Stage).index(self)


STAGES: tuple[Stage, ...] = tuple(Stage)


class Neighbours(StrEnum):
    """Non-integer values of ``defense.secagg.neighbours``."""

    ALL = "all"  # every pair of clients (Bonawitz et al. 2017)
    AUTO = "auto"  # SecAgg+ degree and threshold derived from n, dropout and corruption


class ShareKind(IntEnum):
    """Which secret an unmasking response reveals a share of (one byte on the wire)."""

    SELF_MASK_SEED = 1  # b_u: the client's input arrived, remove its self mask
    MASK_KEY = 2  # s_u^SK: the client dropped, recompute its pairwise masks


class Purpose(StrEnum):
    """HKDF ``info`` labels: one key per purpose, so a key never serves two uses."""

    PAIRWISE_MASK = "privfl/secagg/v1/pairwise-mask"
    SHARE_ENCRYPTION = "privfl/secagg/v1/share-encryption"


SEED_BYTES = 32  # PRG seeds and AES-256 keys: the full 256 bits
KEY_BYTES = 32  # a raw X25519 public or private key
NONCE_BYTES = 12  # AES-GCM nonce
TAG_BYTES = 16  # AES-GCM tag
ID_BYTES = 4  # client ids on the wire (uint32)

#: Statistical security (privacy) and correctness parameters of the SecAgg+ derivation:
#: failure probabilities at most 2^-SECURITY_BITS and 2^-CORRECTNESS_BITS over the round.
SECURITY_BITS = 40
CORRECTNESS_BITS = 20

__all__ = [
    "CORRECTNESS_BITS",
    "ID_BYTES",
    "KEY_BYTES",
    "NONCE_BYTES",
    "Neighbours",
    "Purpose",
    "SECURITY_BITS",
    "SEED_BYTES",
    "STAGES",
    "ShareKind",
    "Stage",
    "TAG_BYTES",
]
