"""Sparsification: top-k (Aji and Heafield 2017; Stich et al. 2018) and random-k (Stich et
al., NeurIPS 2018, "Sparsified SGD with memory"; Wangni et al. 2018 for the unbiased scaling).

Wire format of one client's message (little-endian, no header; ``w`` = 2 bytes when
``d <= 2^16``, else 4):

=================  =====================================  =====================
mode               content                                 length (bytes)
=================  =====================================  =====================
top-k              k indices (uint16/32), k float32       ``k (w + 4)``
random-k           the client's uint64 seed, k float32     ``8 + 4 k``
random-k, shared   k float32 (indices from the round's     ``4 k``
                   public seed)
=================  =====================================  =====================

Indices are sorted increasingly; the server regenerates random-k indices from the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

from privfl.compression.compressor import Compressor, Decoder
from privfl.compression.config import CompressionConfig, CompressionMethod
from privfl.compression.payload import F32, Payload, columns, index_dtype, stack_messages

if TYPE_CHECKING:
    from privfl.stages import RoundContext

SEED_DTYPE = np.dtype("<u8")
#: Random-k seeds are drawn in ``[0, 2^63)``.
SEED_BOUND = 2**63


class IndexMode(StrEnum):
    """How the server learns which coordinates a sparse message holds."""

    EXPLICIT = "explicit"  # the indices are in the message (top-k)
    SEEDED = "seeded"  # a per-client seed is in the message (random-k)
    SHARED = "shared"  # one public seed per round, the same for every client


def keep_count(dim: int, ratio: float) -> int:
    """``k = max(1, round(ratio d))``: the coordinates a sparsifier keeps."""
    return max(1, min(dim, int(round(ratio * dim))))


@dataclass(frozen=True)
class SparsePayload(Payload):
    """k coordinates per client.

    Attributes:
        indices: int64 ``(n, k)``, sorted in each row.
        values: float32 ``(n, k)``.
        dim: d.
        mode: how indices travel (see the module docstring).
        seeds: uint64 ``(n,)`` per-client seeds (``mode = seeded``).
        scale: the decoder multiplies the values by it (random-k's unbiased ``d / k``): the
            message carries the raw values, so a secure channel sums them in range.
    """

    indices: np.ndarray
    values: np.ndarray
    dim: int
    mode: IndexMode
    seeds: np.ndarray | None = None
    scale: float = 1.0

    def dense(self) -> torch.Tensor:
        return _scatter(self.indices, self.values, self.dim, self.scale)

    def to_messages(self) -> tuple[bytes, ...]:
        vals = self.values.astype(F32, copy=False)
        if self.mode is IndexMode.SHARED:
            body = vals
        elif self.mode is IndexMode.SEEDED:
            if self.seeds is None:
                raise ValueError("a seeded random-k payload needs its per-client seeds")
            seeds = self.seeds.astype(SEED_DTYPE).reshape(-1, 1).view(np.uint8)
            body = np.concatenate([seeds, vals.view(np.uint8)], axis=1)
        else:
            idx = self.indices.astype(index_dtype(self.dim)).view(np.uint8)
            body = np.concatenate([idx, vals.view(np.uint8)], axis=1)
        raw = np.ascontiguousarray(body).view(np.uint8).reshape(len(vals), -1)
        return tuple(row.tobytes() for row in raw)

    def scaled(self, factors: np.ndarray) -> SparsePayload:
        f = np.asarray(factors, dtype=np.float32).reshape(-1, 1)
        return replace(self, values=(self.values * f).astype(np.float32))


def _scatter(indices: np.ndarray, values: np.ndarray, dim: int, scale: float) -> torch.Tensor:
    out = np.zeros((len(indices), dim), dtype=np.float32)
    vals = values if scale == 1.0 else values * np.float32(scale)
    np.put_along_axis(out, np.asarray(indices, dtype=np.int64), vals, axis=1)
    return torch.from_numpy(out)


def message_length(dim: int, k: int, mode: IndexMode) -> int:
    """Bytes of one client's sparse message (the table of the module docstring)."""
    if mode is IndexMode.SHARED:
        return 4 * k
    if mode is IndexMode.SEEDED:
        return SEED_DTYPE.itemsize + 4 * k
    return k * (index_dtype(dim).itemsize + 4)


def top_k(x: torch.Tensor, k: int) -> SparsePayload:
    """The k largest-magnitude coordinates of each row of ``x`` (float32 ``(n, d)``), with
    their values unchanged (a biased compressor: use it with error feedback)."""
    n, d = x.shape
    xn = x.numpy()
    if k >= d:
        idx = np.broadcast_to(np.arange(d), (n, d)).copy()
    else:
        # The k-th largest |x| per row by numpy's introselect on the values (faster than
        # argpartition or torch.topk here), then the coordinates at or above it, which come
        # out sorted. The same set as argpartition's unless |x| ties at the threshold.
        a = np.abs(xn)
        threshold = np.partition(a, d - k, axis=1)[:, d - k : d - k + 1]
        above = a >= threshold
        counts = above.sum(axis=1)
        if (counts == k).all():
            flat = np.flatnonzero(above.ravel()).reshape(n, k)
            idx = flat - (np.arange(n, dtype=np.int64) * d)[:, None]
        else:  # ties at the threshold (rare): argpartition on those rows
            idx = np.empty((n, k), dtype=np.int64)
            for i in range(n):
                row = np.flatnonzero(above[i]) if counts[i] == k else None
                if row is None:
                    row = np.sort(np.argpartition(-a[i], k - 1)[:k])
                idx[i] = row
    return SparsePayload(
        idx.astype(np.int64, copy=False), np.take_along_axis(xn, idx, axis=1), d, IndexMode.EXPLICIT
    )


def random_indices(seed: int, dim: int, k: int) -> np.ndarray:
    """k distinct coordinates of ``dim`` drawn uniformly from ``seed`` (numpy's PCG64),
    sorted, int64 ``(k,)``: what client and server both compute from the seed."""
    return np.sort(np.random.default_rng(seed).choice(dim, size=k, replace=False))


def random_k(
    x: torch.Tensor, k: int, seeds: np.ndarray | None, shared_seed: int | None, scale: bool
) -> SparsePayload:
    """k random coordinates of each row of ``x`` (float32 ``(n, d)``), multiplied by ``d / k``
    when ``scale`` (then ``E[decode] = x``: unbiased), else unchanged.

    Args:
        seeds: one uint64 seed per row (independent supports), or None with ``shared_seed``
            (one support for every row: secure aggregation can sum those k coordinates).
    """
    n, d = x.shape
    if shared_seed is not None:
        idx = np.broadcast_to(random_indices(shared_seed, d, k), (n, k))
        mode = IndexMode.SHARED
    else:
        if seeds is None:
            raise ValueError("random-k needs per-client seeds or a shared seed")
        idx = (
            np.stack([random_indices(int(s), d, k) for s in seeds])
            if n
            else np.zeros((0, k), np.int64)
        )
        mode = IndexMode.SEEDED
    vals = np.take_along_axis(x.numpy(), idx, axis=1)
    return SparsePayload(np.ascontiguousarray(idx), vals, d, mode, seeds, d / k if scale else 1.0)


def decode_sparse(
    messages: Sequence[bytes],
    dim: int,
    k: int,
    mode: IndexMode,
    shared_seed: int | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """The server's decoder, vectorized over clients: messages -> float32 ``(n, d)``, the
    values multiplied by ``scale``."""
    raw = stack_messages(messages, message_length(dim, k, mode))
    n = len(raw)
    if mode is IndexMode.SHARED:
        if shared_seed is None:
            raise ValueError("shared random-k decoding needs the round's shared seed")
        idx = np.broadcast_to(random_indices(shared_seed, dim, k), (n, k))
        vals = columns(raw, 0, k, F32)
    elif mode is IndexMode.SEEDED:
        seeds = columns(raw, 0, 1, SEED_DTYPE)[:, 0]
        idx = (
            np.stack([random_indices(int(s), dim, k) for s in seeds])
            if n
            else np.zeros((0, k), np.int64)
        )
        vals = columns(raw, SEED_DTYPE.itemsize, k, F32)
    else:
        w = index_dtype(dim)
        idx = columns(raw, 0, k, w).astype(np.int64)
        if n and (idx.max() >= dim):
            raise ValueError(f"sparse message holds an index >= d = {dim}")
        vals = columns(raw, k * w.itemsize, k, F32)
    return _scatter(idx, vals, dim, scale)


class TopK(Compressor):
    """``compression.method = 'topk'``: each client keeps its k = ``ratio`` d
    largest-magnitude coordinates and sends their indices and values (Aji and Heafield 2017,
    "Sparse communication for distributed gradient descent"; Stich et al., NeurIPS 2018,
    "Sparsified SGD with memory", whose memory is the error feedback top-k needs: it is
    biased, so error feedback is on by default)."""

    method = CompressionMethod.TOPK

    def __init__(self, config: CompressionConfig, dim: int) -> None:
        super().__init__(config, dim)
        self.k = keep_count(dim, config.ratio)

    def compress(self, v: torch.Tensor, client_ids: np.ndarray, ctx: RoundContext) -> Payload:
        return top_k(v, self.k)

    def decoder(self, ctx: RoundContext) -> Decoder:
        return partial(decode_sparse, dim=self.dim, k=self.k, mode=IndexMode.EXPLICIT)

    def message_length(self, ctx: RoundContext) -> int:
        return message_length(self.dim, self.k, IndexMode.EXPLICIT)


class RandK(Compressor):
    """``compression.method = 'randk'``: each client keeps k = ``ratio`` d uniformly random
    coordinates (Stich et al., NeurIPS 2018, "Sparsified SGD with memory"), drawn from its own
    seed, which it sends, or with ``shared_seed`` from the round's public seed (one support
    for every client, which a secure channel can sum).

    Without error feedback the server scales the values by ``d / k`` (Wangni et al. 2018), so
    random-k is unbiased; with it, random-k stays unscaled: the contractive compressor that
    Karimireddy et al. 2019's analysis assumes.
    """

    method = CompressionMethod.RANDK

    def __init__(self, config: CompressionConfig, dim: int) -> None:
        super().__init__(config, dim)
        self.k = keep_count(dim, config.ratio)
        self.scale = 1.0 if config.uses_error_feedback else dim / self.k

    def shared_seed(self, ctx: RoundContext) -> int | None:
        """The round's public seed (``shared_seed = true``), else None."""
        if self.config.shared_seed:
            return int(ctx.rng("compression-randk-shared").integers(SEED_BOUND))
        return None

    def mode(self, ctx: RoundContext) -> IndexMode:
        """``shared`` with the round's public seed, else ``seeded``."""
        return IndexMode.SEEDED if self.shared_seed(ctx) is None else IndexMode.SHARED

    def compress(self, v: torch.Tensor, client_ids: np.ndarray, ctx: RoundContext) -> Payload:
        shared = self.shared_seed(ctx)
        seeds = None
        if shared is None:
            seeds = np.array(
                [ctx.rng("compression-randk", int(c)).integers(SEED_BOUND) for c in client_ids],
                dtype=np.uint64,
            )
        return random_k(v, self.k, seeds, shared, scale=self.scale != 1.0)

    def decoder(self, ctx: RoundContext) -> Decoder:
        shared = self.shared_seed(ctx)
        mode = IndexMode.SEEDED if shared is None else IndexMode.SHARED
        return partial(
            decode_sparse, dim=self.dim, k=self.k, mode=mode, shared_seed=shared, scale=self.scale
        )

    def message_length(self, ctx: RoundContext) -> int:
        return message_length(self.dim, self.k, self.mode(ctx))

    def support(self, ctx: RoundContext) -> np.ndarray | None:
        shared = self.shared_seed(ctx)
        return None if shared is None else random_indices(shared, self.dim, self.k)


__all__ = [
    "SEED_BOUND",
    "IndexMode",
    "RandK",
    "SparsePayload",
    "decode_sparse",
    "keep_count",
    "message_length",
    "random_indices",
    "random_k",
    "top_k",
    "TopK",
]
