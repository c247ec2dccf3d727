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


def parse_public(raw: bytes) -> X25519PublicKey:
    """An X25519 public key from its 32 raw bytes (ValueError if malformed)."""
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an X25519 public key is {KEY_BYTES} bytes, got {len(raw)}")
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
    "KeyPair",
    "agree",
    "decrypt_share",
    "encrypt_share",
    "parse_public",
    "share_associated_data",
]
