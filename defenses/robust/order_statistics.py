"""Coordinate-wise order statistics of the ``(n, d)`` update matrix, shared by the median,
the trimmed mean and Bulyan.

numpy's ``partition`` (introselect) places the requested order statistics of each column in
their sorted positions in O(n) per column, against O(n log n) for a full sort; on a
``(50, 10^6)`` float32 matrix it is several times faster than ``torch.sort`` along either
axis. Written here because neither torch nor scipy offers a partition-based trimmed mean
(``scipy.stats.trim_mean`` sorts the whole axis).
"""

from __future__ import annotations

import numpy as np
import torch


def _as_numpy(updates: torch.Tensor) -> np.ndarray:
    if updates.ndim != 2 or updates.shape[0] == 0:
        raise ValueError(f"updates must have shape (n >= 1, d), got {tuple(updates.shape)}")
    return updates.detach().cpu().contiguous().numpy()


def central_rows(updates: torch.Tensor, k: int) -> np.ndarray:
    """Each column's values after dropping its ``k`` smallest and ``k`` largest, in no
    particular order within the kept block.

    Two single-``kth`` partitions (the ``k`` smallest to the front, then the ``n - 2k``
    smallest of the rest): on ``(50, 10^6)`` about twice as fast as one partition with two
    ``kth`` values.

    Args:
        updates: float32 ``(n, d)``; ``0 <= 2k < n``.
    Returns:
        float32 ``(n - 2k, d)``: row ``r`` of column ``j`` is one of the order statistics
        ``k .. n-k-1`` of column ``j``.
    """
    x = _as_numpy(updates)
    n = x.shape[0]
    if not 0 <= 2 * k < n:
        raise ValueError(f"cannot drop {k} values from each end of {n}")
    if k == 0:
        return x
    rest = np.partition(x, k, axis=0)[k:]  # the n - k largest of each column
    keep = n - 2 * k
    return np.partition(rest, keep - 1, axis=0)[:keep]


def coordinate_median_np(updates: torch.Tensor) -> np.ndarray:
    """The coordinate-wise median as float32 ``(d,)``; for even ``n`` the mean of the two
    middle values (the usual median, unlike ``torch.median``, which returns the lower one).

    One single-``kth`` partition puts the upper middle value in place; for even ``n`` the
    lower middle value is the largest of the values before it (one pass): on ``(50, 10^6)``
    about three times as fast as a partition with both ``kth`` values.
    """
    x = _as_numpy(updates)
    n = x.shape[0]
    hi = n // 2
    part = np.partition(x, hi, axis=0)
    if n % 2:
        return part[hi].copy()
    lo = part[:hi].max(axis=0)
    return ((lo.astype(np.float64) + part[hi]) / 2.0).astype(np.float32)


__all__ = ["central_rows", "coordinate_median_np"]
