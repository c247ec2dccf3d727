"""What a compressed update looks like on the wire, and helpers to (de)serialize it.

Every payload is little-endian and carries no header: the server knows ``d``, ``k`` and
``s`` from the public config. A :class:`Payload` holds a whole cohort's encodings as arrays
(vectorized over clients), turns them into one ``bytes`` message per client
(:meth:`Payload.to_messages`), and is read back from those bytes by the method's
``from_messages`` (vectorized over clients: the messages are stacked into one ``(n, L)`` byte
matrix, never looped over coordinates).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

F32 = np.dtype("<f4")


def index_dtype(dim: int) -> np.dtype:
    """The smallest little-endian unsigned type that holds a coordinate index of ``dim``:
    uint16 up to 2^16 coordinates, else uint32."""
    return np.dtype("<u2") if dim <= 2**16 else np.dtype("<u4")


def stack_messages(messages: Sequence[bytes], length: int) -> np.ndarray:
    """The messages as one uint8 matrix ``(n, length)``; every message must have ``length``
    bytes (a message of another length is an error: the server checks what it receives)."""
    bad = [i for i, m in enumerate(messages) if len(m) != length]
    if bad:
        raise ValueError(
            f"compressed message(s) {bad} have lengths {[len(messages[i]) for i in bad]}, "
            f"expected {length} bytes"
        )
    if not messages:
        return np.zeros((0, length), dtype=np.uint8)
    return np.frombuffer(b"".join(messages), dtype=np.uint8).reshape(len(messages), length)


def columns(raw: np.ndarray, start: int, count: int, dtype: np.dtype) -> np.ndarray:
    """``count`` values of ``dtype`` per row from byte column ``start`` of ``raw`` ``(n, L)``;
    returns ``(n, count)`` in ``dtype``."""
    width = dtype.itemsize * count
    block = np.ascontiguousarray(raw[:, start : start + width])
    return block.view(dtype).reshape(len(raw), count)


def _code_dtype(bits: int) -> np.dtype:
    if not 1 <= bits <= 16:
        raise ValueError(f"codes of 1..16 bits are supported, got {bits}")
    return np.dtype("<u1") if bits <= 8 else np.dtype("<u2")


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Bit-pack unsigned codes ``(n, d)`` (each < 2^bits, bits <= 16) into
    ``(n, ceil(d bits / 8))`` uint8, least significant bit first (numpy's ``packbits`` with
    ``bitorder='little'``)."""
    n, d = codes.shape
    if bits <= 8:
        return _pack_small(codes, bits)
    dt = _code_dtype(bits)
    raw = np.ascontiguousarray(codes.astype(dt)).view(np.uint8).reshape(n, d, dt.itemsize)
    b = np.unpackbits(raw, axis=2, bitorder="little")[:, :, :bits]
    return np.packbits(b.reshape(n, d * bits), axis=1, bitorder="little")


def unpack_codes(packed: np.ndarray, d: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``(n, ceil(d bits / 8))`` uint8 -> codes ``(n, d)``
    int64."""
    n = len(packed)
    if bits <= 8:
        return _unpack_small(packed, d, bits)
    dt = _code_dtype(bits)
    b = np.unpackbits(packed, axis=1, count=d * bits, bitorder="little").reshape(n, d, bits)
    if bits < 8 * dt.itemsize:
        b = np.concatenate([b, np.zeros((n, d, 8 * dt.itemsize - bits), np.uint8)], axis=2)
    raw = np.packbits(b, axis=2, bitorder="little")
    return np.ascontiguousarray(raw).view(dt).reshape(n, d).astype(np.int64)


def _pack_small(codes: np.ndarray, bits: int) -> np.ndarray:
    """:func:`pack_codes` for ``bits <= 8``: 8 codes fill one little-endian uint64 word
    (code j at bit ``j bits``), whose first ``bits`` bytes are exactly the packed stream."""
    n, d = codes.shape
    groups = -(-d // 8)
    c = np.zeros((n, groups * 8), dtype=np.uint64)
    c[:, :d] = codes
    c = c.reshape(n, groups, 8)
    word = np.zeros((n, groups), dtype=np.uint64)
    for j in range(8):
        word |= c[:, :, j] << np.uint64(j * bits)
    raw = word.astype("<u8").view(np.uint8).reshape(n, groups, 8)[:, :, :bits]
    return np.ascontiguousarray(raw).reshape(n, groups * bits)[:, : -(-d * bits // 8)]


def _unpack_small(packed: np.ndarray, d: int, bits: int) -> np.ndarray:
    n = len(packed)
    groups = -(-d // 8)
    raw = np.zeros((n, groups * bits), dtype=np.uint8)
    raw[:, : packed.shape[1]] = packed
    words = np.zeros((n, groups, 8), dtype=np.uint8)
    words[:, :, :bits] = raw.reshape(n, groups, bits)
    w = words.view("<u8").reshape(n, groups)
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((n, groups, 8), dtype=np.int64)
    for j in range(8):
        out[:, :, j] = (w >> np.uint64(j * bits)) & mask
    return out.reshape(n, groups * 8)[:, :d]


class Payload(ABC):
    """A cohort's compressed updates, as arrays; one row per client."""

    @abstractmethod
    def dense(self) -> torch.Tensor:
        """What the server decodes: float32 ``(n, d)``."""

    @abstractmethod
    def to_messages(self) -> tuple[bytes, ...]:
        """The serialized message each client sends (see the method's module docstring)."""

    @abstractmethod
    def scaled(self, factors: np.ndarray) -> Payload:
        """The payload of ``factors[i] * row i`` (float32 factors ``(n,)``): each encoding
        scales through its values or its norm, so scaling keeps it an encoding (used to clip
        a compressed update to the DP clip norm)."""


__all__ = [
    "F32",
    "Payload",
    "columns",
    "index_dtype",
    "pack_codes",
    "stack_messages",
    "unpack_codes",
]
