"""What every compression method provides: :class:`Compressor`.

One subclass per ``compression.method`` (:class:`~privfl.compression.sparse.TopK`,
:class:`~privfl.compression.sparse.RandK`, :class:`~privfl.compression.qsgd.QSGD`,
:class:`~privfl.compression.sign.SignSGD`), registered by its ``method`` attribute in
:data:`privfl.compression.methods.COMPRESSORS`; adding a method is adding a class (and its
name to :class:`~privfl.compression.config.CompressionMethod`). The client transform
(:class:`~privfl.compression.transform.CompressUpdates`) asks the round's compressor how to
encode, how the server decodes, which support and scale a secure channel may use, and which
aggregator the method needs; it never branches on the method itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from privfl.compression.config import CompressionConfig, CompressionMethod
from privfl.compression.payload import Payload

if TYPE_CHECKING:
    from privfl.stages import Aggregator, RoundContext

#: The server's decoder of one round: the clients' messages -> float32 ``(n, d)``.
Decoder = Callable[[Sequence[bytes]], torch.Tensor]


class Compressor(ABC):
    """One compression method for a run's updates of length d (public parameters only: the
    server builds the same object to decode).

    Args:
        config: the ``[compression]`` section.
        dim: d, the update length.

    Attributes:
        method: the ``compression.method`` name this class implements (its registry key).
        scale: the decoder multiplies the values sent by it (random-k's unbiased ``d / k``),
            so a secure channel can sum the raw values on a shared support; 1 otherwise.
    """

    method: ClassVar[CompressionMethod]

    def __init__(self, config: CompressionConfig, dim: int) -> None:
        self.config = config
        self.dim = dim
        self.scale = 1.0

    @abstractmethod
    def compress(self, v: torch.Tensor, client_ids: np.ndarray, ctx: RoundContext) -> Payload:
        """The payload of the rows ``v`` (float32 ``(n, d)``), each client with its own
        stream (``ctx.rng(..., client_id)``) where the method is randomized."""

    @abstractmethod
    def decoder(self, ctx: RoundContext) -> Decoder:
        """The server's decoder of this round's messages (public parameters only)."""

    @abstractmethod
    def message_length(self, ctx: RoundContext) -> int:
        """Bytes of one client's message this round (the method's wire format)."""

    def support(self, ctx: RoundContext) -> np.ndarray | None:
        """Coordinates shared by every client this round, outside which every row is zero
        (int64 ``(k,)``), or None when the clients' supports differ (the default)."""
        return None

    def aggregator(self) -> Aggregator | None:
        """The aggregator the method needs instead of the run's, or None (the default)."""
        return None


__all__ = ["Compressor", "Decoder"]
