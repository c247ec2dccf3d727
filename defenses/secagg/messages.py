"""Wire formats of the protocol's messages: what the bytes counts measure, and what the server
parses. Integers are big-endian uint32 ids and counts; vectors are little-endian words.

Client to server:
    AdvertiseKeys   c_pk (32) || s_pk (32)
    ShareKeys       count, then per receiver: id, length, ciphertext (nonce || GCM body || tag)
    MaskedInput     count, complained-about ids, then the masked vector's words
    Unmasking       count, then per share: owner id, kind (1 byte), share value (33)
Server to client:
    Roster          count, then per client: id, c_pk, s_pk
    Inbox           count, then per sender: id, length, ciphertext
    Survivors       |U3|, count, then ids (the survivors among the client's share-senders)
Inside a ciphertext:
    SharePlaintext  sender id, receiver id, share of s_u^SK (33), share of b_u (33)
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from privfl.defenses.secagg import shamir
from privfl.defenses.secagg.constants import ID_BYTES, KEY_BYTES, ShareKind
from privfl.defenses.secagg.errors import ProtocolError

_U32 = struct.Struct(">I")
_PAIR = struct.Struct(">II")


class _Reader:
    """Reads a message front to back; any overrun or leftover is a :class:`ProtocolError`."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = memoryview(data), 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError(f"truncated {self.what} message")
        out = self.data[self.pos : self.pos + n].tobytes()
        self.pos += n
        return out

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def rest(self) -> memoryview:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(f"{len(self.data) - self.pos} stray bytes after a {self.what}")


def _ids(ids: Sequence[int]) -> bytes:
    return _U32.pack(len(ids)) + b"".join(_U32.pack(int(i)) for i in ids)


def _read_ids(r: _Reader) -> list[int]:
    return [r.u32() for _ in range(r.u32())]


# ---------------------------------------------------------------- AdvertiseKeys / Roster


def encode_keys(c_pk: bytes, s_pk: bytes) -> bytes:
    """AdvertiseKeys: the client's two X25519 public keys."""
    return c_pk + s_pk


def decode_keys(data: bytes) -> tuple[bytes, bytes]:
    """``(c_pk, s_pk)`` of an AdvertiseKeys message."""
    if len(data) != 2 * KEY_BYTES:
        raise ProtocolError(f"AdvertiseKeys is {2 * KEY_BYTES} bytes, got {len(data)}")
    return data[:KEY_BYTES], data[KEY_BYTES:]


def encode_roster(keys: Mapping[int, bytes]) -> bytes:
    """Roster: the advertised keys (``c_pk || s_pk``) of the clients a client works with."""
    return _U32.pack(len(keys)) + b"".join(_U32.pack(i) + keys[i] for i in sorted(keys))


def decode_roster(data: bytes) -> dict[int, tuple[bytes, bytes]]:
    """``{id: (c_pk, s_pk)}`` of a Roster message."""
    r = _Reader(data, "Roster")
    out = {}
    for _ in range(r.u32()):
        cid = r.u32()
        out[cid] = decode_keys(r.take(2 * KEY_BYTES))
    r.done()
    return out


# ---------------------------------------------------------------- ShareKeys / Inbox


def encode_ciphertexts(items: Mapping[int, bytes]) -> bytes:
    """ShareKeys (keyed by receiver) or Inbox (keyed by sender): id, length, ciphertext."""
    parts = [_U32.pack(len(items))]
    for cid in sorted(items):
        parts.append(_PAIR.pack(cid, len(items[cid])) + items[cid])
    return b"".join(parts)


def decode_ciphertexts(data: bytes, what: str) -> dict[int, bytes]:
    """``{id: ciphertext}`` of a ShareKeys or Inbox message."""
    r = _Reader(data, what)
    out = {}
    for _ in range(r.u32()):
        cid, n = _PAIR.unpack(r.take(_PAIR.size))
        if cid in out:
            raise ProtocolError(f"client {cid} appears twice in a {what}")
        out[cid] = r.take(n)
    r.done()
    return out


@dataclass(frozen=True)
class SharePlaintext:
    """What client ``sender`` gives client ``receiver``: one share of each of its secrets."""

    sender: int
    receiver: int
    mask_key_share: Sequence[int]
    seed_share: Sequence[int]

    SIZE = 2 * ID_BYTES + 2 * shamir.SHARE_BYTES

    def encode(self) -> bytes:
        return (
            _PAIR.pack(self.sender, self.receiver)
            + shamir.to_bytes(self.mask_key_share)
            + shamir.to_bytes(self.seed_share)
        )

    @classmethod
    def decode(cls, data: bytes) -> SharePlaintext:
        if len(data) != cls.SIZE:
            raise ProtocolError(f"a share plaintext is {cls.SIZE} bytes, got {len(data)}")
        sender, receiver = _PAIR.unpack(data[: _PAIR.size])
        k = _PAIR.size + shamir.SHARE_BYTES
        try:
            return cls(
                sender,
                receiver,
                shamir.from_bytes(data[_PAIR.size : k]),
                shamir.from_bytes(data[k:]),
            )
        except ValueError as e:
            raise ProtocolError(f"bad share value: {e}") from None


# ---------------------------------------------------------------- MaskedInput / Survivors


def encode_masked(complaints: Sequence[int], vector: np.ndarray) -> bytes:
    """MaskedInput: the clients whose shares failed authentication, then the masked words."""
    words = vector.astype(vector.dtype.newbyteorder("<"), copy=False)
    return _ids(sorted(complaints)) + words.tobytes()


def decode_masked(data: bytes, length: int, dtype: np.dtype) -> tuple[list[int], np.ndarray]:
    """``(complaints, vector)`` of a MaskedInput message; the vector is read-only, ``(length,)``."""
    r = _Reader(data, "MaskedInput")
    complaints = _read_ids(r)
    body = r.rest()
    dt = np.dtype(dtype).newbyteorder("<")
    if len(body) != length * dt.itemsize:
        raise ProtocolError(
            f"masked vector of {len(body)} bytes, expected {length} x {dt.itemsize}"
        )
    return complaints, np.frombuffer(body, dtype=dt)


def encode_survivors(total: int, ids: Sequence[int]) -> bytes:
    """Survivors: ``|U3|`` and the survivors among the receiving client's share-senders."""
    return _U32.pack(total) + _ids(sorted(ids))


def decode_survivors(data: bytes) -> tuple[int, list[int]]:
    r = _Reader(data, "Survivors")
    total = r.u32()
    ids = _read_ids(r)
    r.done()
    return total, ids


# ---------------------------------------------------------------- Unmasking

_SHARE_ENTRY = struct.Struct(f">IB{shamir.SHARE_BYTES}s")


def encode_unmasking(shares: Mapping[int, tuple[ShareKind, Sequence[int]]]) -> bytes:
    """Unmasking: per owner, which secret the share is of, and the share value."""
    parts = [_U32.pack(len(shares))]
    for owner in sorted(shares):
        kind, value = shares[owner]
        parts.append(_SHARE_ENTRY.pack(owner, int(kind), shamir.to_bytes(value)))
    return b"".join(parts)


def decode_unmasking(data: bytes) -> dict[int, tuple[ShareKind, Sequence[int]]]:
    """``{owner: (kind, share value)}`` of an Unmasking message."""
    r = _Reader(data, "Unmasking")
    out: dict[int, tuple[ShareKind, Sequence[int]]] = {}
    for _ in range(r.u32()):
        owner, kind, raw = _SHARE_ENTRY.unpack(r.take(_SHARE_ENTRY.size))
        if owner in out:
            raise ProtocolError(f"two shares for client {owner} in one Unmasking message")
        try:
            out[owner] = (ShareKind(kind), shamir.from_bytes(raw))
        except ValueError as e:
            raise ProtocolError(f"bad unmasking entry for client {owner}: {e}") from None
    r.done()
    return out


__all__ = [
    "SharePlaintext",
    "decode_ciphertexts",
    "decode_keys",
    "decode_masked",
    "decode_roster",
    "decode_survivors",
    "decode_unmasking",
    "encode_ciphertexts",
    "encode_keys",
    "encode_masked",
    "encode_roster",
    "encode_survivors",
    "encode_unmasking",
]
