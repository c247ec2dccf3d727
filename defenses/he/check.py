"""Binding the server's aggregate to the clients who sent it: a secret linear sketch of every
ciphertext, sealed for the key holder in a per-client voucher.

The attack (issue 16, item 5): the server alone chooses what it hands the key holder as "the
aggregate". It can hand it one client's ciphertext, or the sum of all clients but one after
the sum of all, and read that client's update in the model that follows. The key holder
cannot recompute the sum itself without receiving every client's ciphertext, which it could
then decrypt one by one (an honest-but-curious key holder would see every update); it checks
the sum instead:

- **Sketch.** For the round ``r`` every client and the key holder derive the same secret
  polynomial ``s_r`` from a *check key* that the server does not hold. The sketch of a
  ciphertext ``(c0, c1)`` is the constant coefficient of ``c0 * s_r`` and of ``c1 * s_r``
  modulo each prime ``q_l`` of its modulus (SEAL's ``multiply_plain``, then the inverse NTT).
  It is linear: the sketch of an honest sum is the sum of the clients' sketches modulo
  ``q_l``, exactly (SEAL adds ciphertexts coefficient-wise modulo ``q_l``). A ciphertext that
  differs from the claimed sum by ``d != 0`` passes only if ``(d * s_r)_0 = 0`` for each of
  its two polynomials, which for a fixed ``d`` happens with probability at most about
  ``2^-41`` over ``s_r`` (CKKS: the coefficients of ``s_r`` are independent Gaussians of
  standard deviation ``2^40``; BFV: uniform modulo the plain modulus ``t``, ``1 / t``).
- **Voucher.** Each client seals its sketches with AES-256-GCM under a key only it and the
  key holder hold, bound to the public key's id, the round, its client id and its chunk count.
  The server forwards the vouchers of the messages it summed; it can neither read them (so it
  learns nothing about ``s_r``) nor make one for a client that did not send, nor move one to
  another round.

The key holder then decrypts an aggregate only if it carries vouchers of at least
``min_clients`` distinct clients of this round, every voucher opens, and the aggregate's
sketch equals the sum of theirs; and it decrypts at most one aggregate a round.

What remains trusted (stated in the threat model): the check key is shared by all clients, so
a client colluding with the server can give it ``s_r``; such a client can isolate a victim
anyway (it submits, under its own voucher, the negated sum of the other clients' ciphertexts,
which the server holds). The server still chooses *which* of the clients that sent are summed
(at least ``min_clients``), as with any aggregation that tolerates dropouts.

Determinism: the CKKS ``s_r`` goes through SEAL's double-precision encoder; the clients and
the key holder must run the same numpy and SEAL arithmetic (a different rounding anywhere
would make honest aggregates fail the check, never pass a forged one).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privfl.defenses.he.errors import CiphertextError

if TYPE_CHECKING:
    from privfl.defenses.he.scheme import HEScheme

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
#: The sketch's two polynomials (``c0``, ``c1``) per ciphertext.
POLYS = 2
_AAD = struct.Struct("<16sIqI")


@dataclass(frozen=True)
class ClientKeys:
    """What the key holder gives one client, over a channel the server cannot read (in a
    deployment: TLS terminated at the key holder), together with the public context.

    Attributes:
        client: the client id.
        voucher_key: AES-256-GCM key of this client's vouchers (the client's and the key
            holder's only).
        check_key: the secret of the round sketches (every client's and the key holder's).
    """

    client: int
    voucher_key: bytes = field(repr=False)
    check_key: bytes = field(repr=False)


def derive_voucher_key(master: bytes, client: int) -> bytes:
    """The voucher key of ``client``: HKDF-SHA256 of the key holder's master secret."""
    info = b"privfl-he voucher " + int(client).to_bytes(8, "little", signed=True)
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=info).derive(master)


def _aad(key_id: bytes, round: int, client: int, chunks: int) -> bytes:
    return _AAD.pack(key_id, round, client, chunks)


def seal_voucher(keys: ClientKeys, *, key_id: bytes, round: int, sketches: np.ndarray) -> bytes:
    """A client's voucher: its sketches, shape ``(chunks, 2, primes)`` uint64, sealed with
    AES-256-GCM under its voucher key (a fresh random nonce), bound to the key id, round,
    client and chunk count."""
    nonce = os.urandom(NONCE_BYTES)
    aad = _aad(key_id, round, keys.client, sketches.shape[0])
    payload = np.ascontiguousarray(sketches, dtype="<u8").tobytes()
    return nonce + AESGCM(keys.voucher_key).encrypt(nonce, payload, aad)


def open_voucher(
    voucher_key: bytes,
    data: bytes,
    *,
    key_id: bytes,
    round: int,
    client: int,
    shape: tuple[int, int, int],
) -> np.ndarray:
    """The sketches in ``client``'s voucher, shape ``shape = (chunks, 2, primes)``; raises
    :class:`CiphertextError` unless it opens under the client's key for this key id and round
    and holds that many values."""
    size = NONCE_BYTES + 8 * int(np.prod(shape)) + TAG_BYTES
    if len(data) != size:
        raise CiphertextError(f"client {client}: voucher of {len(data)} bytes, expected {size}")
    try:
        plain = AESGCM(voucher_key).decrypt(
            data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(key_id, round, client, shape[0])
        )
    except InvalidTag:
        raise CiphertextError(
            f"client {client}: voucher does not open under its key for round {round} (forged, "
            "altered, or another round's)"
        ) from None
    return np.frombuffer(plain, dtype="<u8").reshape(shape).astype(np.uint64)


def round_seed(check_key: bytes, round: int) -> int:
    """The seed of round ``round``'s check polynomial: keyed BLAKE2b-256 of the round."""
    digest = hashlib.blake2b(
        round.to_bytes(8, "little"), key=check_key, person=b"privfl-he-check", digest_size=32
    ).digest()
    return int.from_bytes(digest, "little")


class RoundCheck:
    """Round ``round``'s secret check polynomial ``s_r`` and the sketch of a ciphertext.

    Args:
        scheme: the HE scheme (it builds ``s_r`` as a SEAL plaintext).
        context: a TenSEAL context of the run (public or private).
        check_key: the shared secret of the sketches.
        round: the round.

    Attributes:
        moduli: the primes ``q_l`` of a fresh ciphertext's modulus, uint64.
    """

    def __init__(self, scheme: HEScheme, context: ts.Context, check_key: bytes, round: int):
        seal = context.seal_context().data
        self.round = round
        self._evaluator = sealapi.Evaluator(seal)
        self._parms_id = seal.first_parms_id()
        first = seal.first_context_data()
        self.moduli = np.array([q.value() for q in first.parms().coeff_modulus()], np.uint64)
        rng = np.random.default_rng(round_seed(check_key, round))
        self._plain = scheme.check_plaintext(seal, self._parms_id, rng)

    @property
    def primes(self) -> int:
        """Primes in a fresh ciphertext's modulus."""
        return len(self.moduli)

    def sketch(self, vector: Any, where: str = "ciphertext") -> np.ndarray:
        """The sketch of one TenSEAL vector (one ciphertext at the fresh level), shape
        ``(2, primes)`` uint64; :class:`CiphertextError` for anything else."""
        try:
            (ct,) = vector.ciphertext()
            if ct.size() != POLYS or list(ct.parms_id()) != list(self._parms_id):
                raise CiphertextError(
                    f"{where}: {ct.size()} polynomials at another level; expected a fresh "
                    "ciphertext of 2"
                )
            out = sealapi.Ciphertext()
            self._evaluator.multiply_plain(ct, self._plain, out)
            if out.is_ntt_form():
                self._evaluator.transform_from_ntt_inplace(out)
        except (ValueError, RuntimeError, TypeError) as e:
            raise CiphertextError(f"{where}: cannot be sketched ({e})") from None
        n, primes = out.poly_modulus_degree(), out.coeff_modulus_size()
        return np.array(
            [[out[(k * primes + j) * n] for j in range(primes)] for k in range(POLYS)],
            dtype=np.uint64,
        )

    def total(self, sketches: Iterable[np.ndarray]) -> np.ndarray:
        """The sum of sketches modulo each prime (the sketch of the sum of their
        ciphertexts); any leading shape, the last axis the primes."""
        out: np.ndarray | None = None
        for s in sketches:  # each value < q < 2^61: a sum of two fits in uint64
            out = s.copy() if out is None else (out + s) % self.moduli
        if out is None:
            raise ValueError("total() of no sketches")
        return out


def encrypt_and_sketch(
    scheme: HEScheme, context: ts.Context, values: np.ndarray, check: RoundCheck
) -> tuple[bytes, np.ndarray]:
    """Encrypt one chunk; its serialized ciphertext and its sketch ``(2, primes)``."""
    vector = scheme.vector(context, values)
    return vector.serialize(), check.sketch(vector)


__all__ = [
    "ClientKeys",
    "KEY_BYTES",
    "RoundCheck",
    "derive_voucher_key",
    "encrypt_and_sketch",
    "open_voucher",
    "round_seed",
    "seal_voucher",
]
