"""Key agreement, key derivation and share encryption (all from ``cryptography``).

- Key agreement: X25519 Diffie-Hellman (RFC 7748), Bonawitz et al.'s ``KA.agree``.
- Key derivation: HKDF-SHA256 (RFC 5869) of the shared secret, with an ``info`` string that
  names the purpose, the round and the (unordered) pair of clients, so a pair's mask seed and
  its share-encryption key are independent and never reused across rounds or pairs.
- Share encryption: AES-256-GCM with a random 96-bit nonce; the associated data binds the round,
  the sender and the receiver, so the server can relay a ciphertext but not read, alter,
  redirect or replay it (any of those fails the tag check).

Private keys come from the OS CSPRNG (``X25519PrivateKey.generate``), never from the run's
seeded streams: masks therefore differ between two runs with the same seed, but they cancel
exactly, so the unmasked aggregate does not.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privfl.defenses.secagg.constants import KEY_BYTES, NONCE_BYTES, SEED_BYTES, Purpose
from privfl.defenses.secagg.errors import ShareIntegrityError


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair; ``public`` is the 32-byte raw public key."""

    private: X25519PrivateKey
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key pair from the OS CSPRNG."""
        sk = X25519PrivateKey.generate()
        return cls(sk, sk.public_key().public_bytes_raw())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        """The key pair of a raw 32-byte private key (e.g. one rebuilt from Shamir shares)."""
        sk = X25519PrivateKey.from_private_bytes(raw)
        return cls(sk, sk.public_key().public_bytes_raw())

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key (the secret that is Shamir-shared)."""
        return self.private.private_bytes_raw()


_LABELS = {p: p.value.encode() for p in Purpose}
_ROUND_PAIR = struct.Struct(">QII")


def _info(purpose: Purpose, round: int, a: int, b: int) -> bytes:
    return _LABELS[purpose] + _ROUND_PAIR.pack(round, min(a, b), max(a, b))


#: The field prime of Curve25519.
P25519 = 2**255 - 19
#: The canonical u-coordinates of the X25519 public keys of low order: the points of order
#: dividing 8 on Curve25519 (u = 0, u = 1 and the two points of order 8) and of order 4 on
#: its quadratic twist (u = p - 1). X25519 clamps every private scalar to a multiple of 8, so
#: with any of these the shared secret is all zeros (``cryptography`` then raises ValueError),
#: and with any other canonical key it is not (RFC 7748, Sec. 6.1; libsodium's blacklist).
LOW_ORDER_KEYS = frozenset(
    {
        0,
        1,
        P25519 - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)


def check_public_key(raw: bytes) -> None:
    """Refuse an advertised X25519 public key that is not 32 bytes, not canonical
    (the little-endian u-coordinate at least p, including the unused top bit) or of low order
    (:data:`LOW_ORDER_KEYS`).

    A canonical key of high order makes every key agreement well defined, so a key that
    passes cannot make an honest party's ``exchange`` fail later.

    Raises:
        ValueError: naming what is wrong with the key.
    """
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an X25519 public key is {KEY_BYTES} bytes, got {len(raw)}")
    u = int.from_bytes(raw, "little")
    if u >= P25519:
        raise ValueError("non-canonical X25519 public key (u-coordinate >= 2^255 - 19)")
    if u in LOW_ORDER_KEYS:
        raise ValueError("low-order X25519 public key (the shared secret would be zero)")


def parse_public(raw: bytes) -> X25519PublicKey:
    """An X25519 public key from its 32 raw bytes, checked by :func:`check_public_key`
    (ValueError if malformed, non-canonical or of low order)."""
    check_public_key(raw)
    return X25519PublicKey.from_public_bytes(raw)


def agree(
    private: X25519PrivateKey,
    peer_public: X25519PublicKey | bytes,
    *,
    purpose: Purpose,
    round: int,
    a: int,
    b: int,
) -> bytes:
    """The 32-byte key clients ``a`` and ``b`` share for ``purpose`` in ``round``:
    ``HKDF-SHA256(X25519(sk_a, pk_b), info = purpose || round || min(a,b) || max(a,b))``.

    Symmetric in ``a`` and ``b``: both sides derive the same key (Bonawitz et al. 2017, Sec. 3,
    ``KA.agree``). Raises :class:`ValueError` for a malformed or low-order public key.
    """
    if isinstance(peer_public, bytes):
        peer_public = parse_public(peer_public)
    shared = private.exchange(peer_public)
    return HKDF(
        algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=_info(purpose, round, a, b)
    ).derive(shared)


def share_associated_data(round: int, sender: int, receiver: int) -> bytes:
    """The AES-GCM associated data of a share ciphertext: ``round || sender || receiver``."""
    return b"privfl/secagg/v1/share" + struct.pack(">QII", round, sender, receiver)


def encrypt_share(key: bytes, plaintext: bytes, *, round: int, sender: int, receiver: int) -> bytes:
    """``nonce || AES-256-GCM(key, plaintext, ad = round || sender || receiver)``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(
        nonce, plaintext, share_associated_data(round, sender, receiver)
    )


def decrypt_share(
    key: bytes, ciphertext: bytes, *, round: int, sender: int, receiver: int
) -> bytes:
    """The plaintext of :func:`encrypt_share`'s output.

    Raises:
        ShareIntegrityError: the tag does not verify (the ciphertext was altered, or it was made
            for another round, sender or receiver, or with another key).
    """
    nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
    if len(nonce) != NONCE_BYTES:
        raise ShareIntegrityError("share ciphertext too short")
    try:
        return AESGCM(key).decrypt(nonce, body, share_associated_data(round, sender, receiver))
    except InvalidTag:
        raise ShareIntegrityError(
            f"share from client {sender} to client {receiver} failed authentication "
            f"in round {round}"
        ) from None


__all__ = [
    "LOW_ORDER_KEYS",
    "P25519",
    "KeyPair",
    "agree",
    "check_public_key",
    "decrypt_share",
    "encrypt_share",
    "parse_public",
    "share_associated_data",
]
