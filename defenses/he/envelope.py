"""The wire format of every ciphertext message: a header, the serialized ciphertexts, the
clients' vouchers and a BLAKE2b digest.

Why an envelope around TenSEAL's bytes: TenSEAL (SEAL) checks only that a ciphertext is
well-formed for the *parameters*, so (measured) a ciphertext of another key with the same
parameters loads and decrypts to garbage, a flipped byte in the coefficient data loads more
often than not, and empty bytes load as an empty vector. The header binds a message to this
run's public key (``key_id``), round, sender and chunk count; the digest detects truncation and
corruption in transit. The digest is not a signature: what the server cannot forge is each
client's *voucher* (:mod:`privfl.defenses.he.check`), sealed with a key only that client and
the key holder hold; the server forwards the vouchers of the messages it summed inside its
aggregate, and the key holder checks them against the sum. A foreign ciphertext whose header
was forged is caught later by the key holder's range check (see
:meth:`privfl.defenses.he.keys.KeyHolder.decrypt`).

Layout (little endian): ``magic "PFHE" | version u8 | scheme u8 | kind u8 | key_id 16 bytes |
round u32 | sender i64 | count u32 | chunks u32 | vouchers u32 | chunk lengths u32 x chunks |
(client i64, voucher length u32) x vouchers | chunk bytes | voucher bytes | BLAKE2b-256 of
everything before``. A message carries one voucher per update it sums (``vouchers = count``):
a client's update its own, the aggregate those of the clients it sums.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from privfl.defenses.he.errors import CiphertextError

MAGIC = b"PFHE"
VERSION = 2
KEY_ID_BYTES = 16
DIGEST_BYTES = 32
#: The ``sender`` of the server's aggregate message.
SERVER = -1
_HEADER = struct.Struct("<4sBBB16sIqIII")
_VOUCHER_ENTRY = struct.Struct("<qI")


class MessageKind(IntEnum):
    """What a message carries."""

    UPDATE = 1  # one client's encrypted update, client -> server
    AGGREGATE = 2  # the encrypted sum, server -> key holder


class SchemeCode(IntEnum):
    """The HE scheme of a message's ciphertexts."""

    CKKS = 1
    BFV = 2


def key_id(public_context: bytes) -> bytes:
    """The identifier of a public context: BLAKE2b-128 of its serialized bytes."""
    return hashlib.blake2b(public_context, digest_size=KEY_ID_BYTES).digest()


@dataclass(frozen=True)
class Envelope:
    """One message between the parties.

    Attributes:
        kind: an update or the aggregate.
        scheme: the HE scheme of the chunks.
        key_id: :func:`key_id` of the public context the chunks were encrypted under.
        round: the federated round.
        sender: the client id, or :data:`SERVER`.
        count: updates summed in the chunks (1 for a client's update).
        chunks: serialized ciphertexts, one per packed chunk.
        vouchers: ``(client id, voucher)`` for each update summed, opaque to the server.
    """

    kind: MessageKind
    scheme: SchemeCode
    key_id: bytes
    round: int
    sender: int
    count: int
    chunks: tuple[bytes, ...]
    vouchers: tuple[tuple[int, bytes], ...] = ()

    def to_bytes(self) -> bytes:
        """The message as it crosses the wire."""
        lengths = np.array([len(c) for c in self.chunks], dtype="<u4").tobytes()
        header = _HEADER.pack(
            MAGIC,
            VERSION,
            int(self.scheme),
            int(self.kind),
            self.key_id,
            self.round,
            self.sender,
            self.count,
            len(self.chunks),
            len(self.vouchers),
        )
        table = b"".join(_VOUCHER_ENTRY.pack(c, len(v)) for c, v in self.vouchers)
        parts = (header, lengths, table, *self.chunks, *(v for _, v in self.vouchers))
        digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
        for part in parts:  # hashed in place: the message is copied once, by the join
            digest.update(part)
        return b"".join((*parts, digest.digest()))


def read_envelope(
    data: bytes,
    *,
    kind: MessageKind,
    scheme: SchemeCode,
    key: bytes,
    round: int,
    chunks: int,
    sender: int | None = None,
) -> Envelope:
    """Parse and check a message; every mismatch raises :class:`CiphertextError` saying what.

    Args:
        data: the bytes received.
        kind, scheme, key, round, chunks: what the receiver expects.
        sender: the expected sender, or None to accept any.
    """
    who = "message" if sender is None else f"message from {_sender_name(sender)}"
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CiphertextError(f"{who}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER.size + DIGEST_BYTES:
        raise CiphertextError(f"{who}: truncated ({len(data)} bytes, shorter than a header)")
    magic, version, scheme_code, kind_code, kid, rnd, snd, count, n, v = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise CiphertextError(f"{who}: not a privfl HE message (magic {magic!r}, v{version})")
    table_start = _HEADER.size + 4 * n
    body_start = table_start + _VOUCHER_ENTRY.size * v
    if len(data) < body_start + DIGEST_BYTES:
        raise CiphertextError(f"{who}: truncated ({len(data)} bytes, header promises more)")
    lengths = np.frombuffer(data, dtype="<u4", count=n, offset=_HEADER.size).astype(np.int64)
    entries = [
        _VOUCHER_ENTRY.unpack_from(data, table_start + _VOUCHER_ENTRY.size * i) for i in range(v)
    ]
    voucher_lengths = np.array([size for _, size in entries], dtype=np.int64)
    expected = body_start + int(lengths.sum()) + int(voucher_lengths.sum()) + DIGEST_BYTES
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise CiphertextError(f"{who}: {what} ({len(data)} bytes, header says {expected})")
    body, digest = data[:-DIGEST_BYTES], data[-DIGEST_BYTES:]
    if hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest() != digest:
        raise CiphertextError(f"{who}: digest mismatch, the bytes were altered in transit")
    if scheme_code != scheme:
        raise CiphertextError(f"{who}: scheme code {scheme_code}, expected {int(scheme)}")
    if kind_code != kind:
        raise CiphertextError(f"{who}: kind {kind_code}, expected {int(kind)} ({kind.name})")
    if kid != key:
        raise CiphertextError(
            f"{who}: encrypted under another context (key id {kid.hex()}, expected {key.hex()})"
        )
    if rnd != round:
        raise CiphertextError(f"{who}: for round {rnd}, this is round {round}")
    if sender is not None and snd != sender:
        raise CiphertextError(f"{who}: header names sender {_sender_name(snd)}")
    if n != chunks:
        raise CiphertextError(f"{who}: {n} ciphertexts, expected {chunks}")
    if count < 1:
        raise CiphertextError(f"{who}: sums {count} updates")
    if v != count:
        raise CiphertextError(f"{who}: {v} voucher(s) for {count} update(s)")
    clients = [c for c, _ in entries]
    if len(set(clients)) != len(clients):
        raise CiphertextError(f"{who}: names a client twice among its vouchers")
    if kind_code == MessageKind.UPDATE and clients != [snd]:
        raise CiphertextError(f"{who}: its voucher names client {clients[0]}")
    ends = body_start + np.cumsum(np.concatenate(([0], lengths, voucher_lengths)))
    parts = [data[ends[i] : ends[i + 1]] for i in range(n + v)]
    vouchers = tuple((c, parts[n + i]) for i, c in enumerate(clients))
    return Envelope(
        MessageKind(kind_code),
        SchemeCode(scheme_code),
        kid,
        rnd,
        snd,
        count,
        tuple(parts[:n]),
        vouchers,
    )


def _sender_name(sender: int) -> str:
    return "the server" if sender == SERVER else f"client {sender}"


__all__ = [
    "DIGEST_BYTES",
    "Envelope",
    "KEY_ID_BYTES",
    "MessageKind",
    "SERVER",
    "SchemeCode",
    "key_id",
    "read_envelope",
]
