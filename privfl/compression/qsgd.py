"""QSGD stochastic quantization (Alistarh et al., NeurIPS 2017, "QSGD: communication-efficient
SGD via gradient quantization and encoding", Sec. 3.1, the quantizer ``Q_s``):

    Q_s(v)_i = ||v||_2 * sgn(v_i) * xi_i / s,   xi_i = l + 1[u_i < s |v_i| / ||v|| - l],
    l = floor(s |v_i| / ||v||),  u_i ~ U[0, 1)

so ``E[Q_s(v)] = v`` (their Lemma 3.1) with ``xi_i in {0, ..., s}``.

Wire format of one client's message (little-endian, no header): the norm as float32 (4 bytes),
then each coordinate's code ``xi_i + 2^(b-1) 1[v_i < 0]`` in ``b = 1 + bit_length(s)`` bits,
bit-packed least significant bit first: ``4 + ceil(d b / 8)`` bytes. (The paper's Elias
coding of the levels is shorter for small s; fixed-width packing keeps decoding one
vectorized unpack.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

from privfl.compression.compressor import Compressor, Decoder
from privfl.compression.config import CompressionConfig, CompressionMethod
from privfl.compression.payload import (
    F32,
    Payload,
    columns,
    pack_codes,
    stack_messages,
    unpack_codes,
)

if TYPE_CHECKING:
    from privfl.stages import RoundContext

log = logging.getLogger(__name__)


def code_bits(levels: int) -> int:
    """``b = 1 + bit_length(s)``: one sign bit and the level in ``0..s``."""
    return 1 + int(levels).bit_length()


def message_length(dim: int, levels: int) -> int:
    """Bytes of one client's QSGD message: ``4 + ceil(d b / 8)``."""
    return 4 + -(-dim * code_bits(levels) // 8)


def _dense(norms: np.ndarray, negative: np.ndarray, xi: np.ndarray, levels: int) -> torch.Tensor:
    # One formula for client and server, so decode(encode(v)) is bit for bit what was sent.
    mag = norms.astype(np.float32)[:, None] * (xi.astype(np.float32) / np.float32(levels))
    return torch.from_numpy(np.where(negative, -mag, mag).astype(np.float32))


@dataclass(frozen=True)
class QSGDPayload(Payload):
    """Attributes: norms float32 ``(n,)``; negative bool ``(n, d)``; xi int64 ``(n, d)`` in
    ``0..s``; levels s."""

    norms: np.ndarray
    negative: np.ndarray
    xi: np.ndarray
    levels: int

    def dense(self) -> torch.Tensor:
        return _dense(self.norms, self.negative, self.xi, self.levels)

    def to_messages(self) -> tuple[bytes, ...]:
        b = code_bits(self.levels)
        codes = self.xi.astype(np.uint32) | (self.negative.astype(np.uint32) << np.uint32(b - 1))
        packed = pack_codes(codes, b)
        norms = self.norms.astype(F32).reshape(-1, 1).view(np.uint8)
        raw = np.concatenate([norms, packed], axis=1)
        return tuple(row.tobytes() for row in raw)

    def scaled(self, factors: np.ndarray) -> QSGDPayload:
        return replace(
            self, norms=(self.norms * np.asarray(factors, np.float32)).astype(np.float32)
        )


def qsgd(x: torch.Tensor, levels: int, rngs: Sequence[np.random.Generator]) -> QSGDPayload:
    """``Q_s`` of each row of ``x`` (float32 ``(n, d)``), row ``i`` rounded with ``rngs[i]``
    (each client its own stream)."""
    xn = x.numpy().astype(np.float64)
    n, d = xn.shape
    norms = np.linalg.norm(xn, axis=1).astype(np.float32)
    safe = np.where(norms > 0, norms.astype(np.float64), 1.0)[:, None]
    y = np.abs(xn) / safe * levels
    u = np.stack([g.random(d) for g in rngs]) if n else np.zeros((0, d))
    xi = np.clip(np.floor(y + u), 0, levels).astype(np.int64)
    return QSGDPayload(norms, xn < 0, xi, int(levels))


def decode_qsgd(messages: Sequence[bytes], dim: int, levels: int) -> torch.Tensor:
    """The server's decoder, vectorized over clients: messages -> float32 ``(n, d)``."""
    raw = stack_messages(messages, message_length(dim, levels))
    b = code_bits(levels)
    norms = columns(raw, 0, 1, F32)[:, 0]
    codes = unpack_codes(raw[:, 4:], dim, b)
    xi = codes & ((1 << (b - 1)) - 1)
    if len(xi) and xi.max() > levels:
        raise ValueError(f"QSGD message holds a level above s = {levels}")
    return _dense(norms, (codes >> (b - 1)).astype(bool), xi, levels)


class QSGD(Compressor):
    """``compression.method = 'qsgd'``: Alistarh et al. 2017's unbiased ``Q_s`` with
    s = ``levels``, each client rounding with its own stream; error feedback is off by
    default.

    With error feedback it warns unless ``s^2 >= d``: error feedback assumes a contraction
    (Karimireddy et al. 2019, Assumption A), and ``E||Q_s(x) - x||^2 <= min(d / s^2,
    sqrt(d) / s) ||x||^2`` (Alistarh et al., Lemma 3.1) is below ``||x||^2`` only then.
    """

    method = CompressionMethod.QSGD

    def __init__(self, config: CompressionConfig, dim: int) -> None:
        super().__init__(config, dim)
        self.levels = config.levels
        s = self.levels
        if config.uses_error_feedback and s * s < dim:
            log.warning(
                "compression: QSGD with s = %d levels is not a contraction for d = %d "
                "(E||Q(x) - x||^2 <= min(d / s^2, sqrt(d) / s) ||x||^2 needs s > sqrt(d) "
                "= %.0f to be < ||x||^2); error feedback assumes one (Karimireddy et al. "
                "2019, Assumption A) and may diverge",
                s,
                dim,
                dim**0.5,
            )

    def compress(self, v: torch.Tensor, client_ids: np.ndarray, ctx: RoundContext) -> Payload:
        rngs = [ctx.rng("compression-qsgd", int(c)) for c in client_ids]
        return qsgd(v, self.levels, rngs)

    def decoder(self, ctx: RoundContext) -> Decoder:
        return partial(decode_qsgd, dim=self.dim, levels=self.levels)

    def message_length(self, ctx: RoundContext) -> int:
        return message_length(self.dim, self.levels)


__all__ = ["QSGD", "QSGDPayload", "code_bits", "decode_qsgd", "message_length", "qsgd"]
