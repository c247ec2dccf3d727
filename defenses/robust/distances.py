"""Pairwise squared Euclidean distances of a round's updates from one matrix product."""

from __future__ import annotations

import torch


def pairwise_sq_distances(updates: torch.Tensor) -> torch.Tensor:
    """``D[i, j] = ||x_i - x_j||^2`` for every pair of rows, from one Gram matrix.

    Uses ``||x_i - x_j||^2 = ||x_i||^2 + ||x_j||^2 - 2 <x_i, x_j>`` with the Gram matrix
    ``X X^T`` computed by a single ``(n, d) @ (d, n)`` product, the O(n^2 d) part; the rest is
    O(n^2). The rows are first centred on their mean (distances do not change), which keeps
    the norms small and so the cancellation of the identity small when the updates are close
    to each other but far from the origin. Negative round-off is clamped to 0 and the
    diagonal is exactly 0.

    Args:
        updates: float32, shape ``(n, d)``.
    Returns:
        float64, shape ``(n, n)``, symmetric.
    """
    if updates.ndim != 2:
        raise ValueError(f"updates must have shape (n, d), got {tuple(updates.shape)}")
    x = updates - updates.mean(dim=0)
    gram = (x @ x.T).double()
    sq = gram.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_(min=0.0)
    dist = (dist + dist.T) / 2.0  # exact symmetry despite round-off
    dist.fill_diagonal_(0.0)
    return dist


__all__ = ["pairwise_sq_distances"]
