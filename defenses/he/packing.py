"""Packing a flat update into ciphertext-sized chunks, and unpacking the decrypted sum.

A client's message is the vector ``[w * delta, w]`` of length ``dim + 1``: its update
pre-scaled by its aggregation weight ``w`` (FedAvg's example count), followed by the weight
itself. Adding the cohort's messages gives ``[sum_i w_i delta_i, sum_i w_i]``, so the key holder
gets the weighted mean by one division and the server never learns the weights. The vector is
cut into ``ceil((dim + 1) / slots)`` chunks of ``slots`` values, the last one zero-padded; the
padding must decrypt to (almost) zero, which the key holder checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def chunk_count(dim: int, slots: int) -> int:
    """Ciphertexts per client for an update of ``dim`` values (plus the weight slot)."""
    return -(-(dim + 1) // slots)


def pack(delta: np.ndarray, weight: float, slots: int) -> np.ndarray:
    """The chunks a client encrypts.

    Args:
        delta: the update, shape ``(dim,)`` (float32 or float64).
        weight: the client's aggregation weight ``w``.
        slots: values per ciphertext.
    Returns:
        float64, shape ``(chunk_count(dim, slots), slots)``: ``[w * delta, w, 0, ...]``.
    """
    dim = delta.shape[0]
    out = np.zeros(chunk_count(dim, slots) * slots, dtype=np.float64)
    np.multiply(delta, weight, out=out[:dim], dtype=np.float64)
    out[dim] = weight
    return out.reshape(-1, slots)


@dataclass(frozen=True)
class Unpacked:
    """The decrypted sum of a cohort's packed vectors.

    Attributes:
        weighted_sum: float64 ``(dim,)``, ``sum_i w_i delta_i``.
        total_weight: ``sum_i w_i``.
        padding: float64, the slots after the weight (zero up to noise for a valid sum).
    """

    weighted_sum: np.ndarray
    total_weight: float
    padding: np.ndarray


def unpack(flat: np.ndarray, dim: int) -> Unpacked:
    """Split the concatenated decrypted chunks, shape ``(chunks * slots,)``, into the weighted
    sum, the total weight and the padding."""
    return Unpacked(flat[:dim], float(flat[dim]), flat[dim + 1 :])


__all__ = ["Unpacked", "chunk_count", "pack", "unpack"]
