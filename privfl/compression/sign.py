"""Scaled sign compression: ``C(v) = (||v||_1 / d) sgn(v)`` (the compressor of EF-SignSGD,
Karimireddy et al., ICML 2019, Algorithm 1), aggregated by majority vote (signSGD with
majority vote, Bernstein et al., ICML 2018/ICLR 2019, Algorithm 1) in
:class:`privfl.compression.majority_vote.MajorityVote`. ``sgn(0) = +1`` (one bit a
coordinate has no room for zero).

Wire format of one client's message (little-endian, no header): the scale ``||v||_1 / d`` as
float32 (4 bytes), then one bit a coordinate (1 = negative), packed least significant bit
first: ``4 + ceil(d / 8)`` bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

from privfl.compression.compressor import Compressor, Decoder
from privfl.compression.config import CompressionMethod
from privfl.compression.majority_vote import MajorityVote
from privfl.compression.payload import F32, Payload, columns, stack_messages

if TYPE_CHECKING:
    from privfl.stages import Aggregator, RoundContext


def message_length(dim: int) -> int:
    """Bytes of one client's sign message: ``4 + ceil(d / 8)``."""
    return 4 + -(-dim // 8)


def _dense(scales: np.ndarray, negative: np.ndarray) -> torch.Tensor:
    s = scales.astype(np.float32)[:, None]
    return torch.from_numpy(np.where(negative, -s, s).astype(np.float32))


@dataclass(frozen=True)
class SignPayload(Payload):
    """Attributes: scales float32 ``(n,)``; negative bool ``(n, d)``."""

    scales: np.ndarray
    negative: np.ndarray

    def dense(self) -> torch.Tensor:
        return _dense(self.scales, self.negative)

    def to_messages(self) -> tuple[bytes, ...]:
        bits = np.packbits(self.negative.astype(np.uint8), axis=1, bitorder="little")
        raw = np.concatenate([self.scales.astype(F32).reshape(-1, 1).view(np.uint8), bits], axis=1)
        return tuple(row.tobytes() for row in raw)

    def scaled(self, factors: np.ndarray) -> SignPayload:
        return replace(
            self, scales=(self.scales * np.asarray(factors, np.float32)).astype(np.float32)
        )


def scaled_sign(x: torch.Tensor) -> SignPayload:
    """``(||v||_1 / d) sgn(v)`` of each row of ``x`` (float32 ``(n, d)``)."""
    xn = x.numpy()
    scales = (np.abs(xn).astype(np.float64).sum(axis=1) / max(xn.shape[1], 1)).astype(np.float32)
    return SignPayload(scales, xn < 0)


def decode_sign(messages: Sequence[bytes], dim: int) -> torch.Tensor:
    """The server's decoder, vectorized over clients: messages -> float32 ``(n, d)``."""
    raw = stack_messages(messages, message_length(dim))
    scales = columns(raw, 0, 1, F32)[:, 0]
    negative = np.unpackbits(raw[:, 4:], axis=1, count=dim, bitorder="little").astype(bool)
    return _dense(scales, negative)


class SignSGD(Compressor):
    """``compression.method = 'sign'``: each client sends the scaled sign
    ``(||v||_1 / d) sgn(v)`` (Karimireddy et al. 2019), and the server takes the majority
    vote of the signs (signSGD with majority vote, Bernstein et al. 2018) instead of the
    run's aggregator. Biased, so error feedback is on by default."""

    method = CompressionMethod.SIGN

    def compress(self, v: torch.Tensor, client_ids: np.ndarray, ctx: RoundContext) -> Payload:
        return scaled_sign(v)

    def decoder(self, ctx: RoundContext) -> Decoder:
        return partial(decode_sign, dim=self.dim)

    def message_length(self, ctx: RoundContext) -> int:
        return message_length(self.dim)

    def aggregator(self) -> Aggregator | None:
        return MajorityVote()


__all__ = ["SignPayload", "SignSGD", "decode_sign", "message_length", "scaled_sign"]
