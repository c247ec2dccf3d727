"""L2 clipping of stacked client updates (the sensitivity bound of DP-FedAvg and local DP)."""

from __future__ import annotations

import torch

#: Clipped rows are scaled to (1 - CLIP_MARGIN) * S, so that float32 rounding of the scaled
#: row can never push its norm above S (the sensitivity the accountant assumes).
CLIP_MARGIN = 1e-6


def clip_rows(deltas: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row scaled to L2 norm at most ``clip``: ``x * min(1, S / ||x||)`` (McMahan et al.
    2018, Algorithm 1, ``ClipFn``; flat clipping over all layers).

    Args:
        deltas: float32, shape ``(n, dim)``.
        clip: S > 0.
    Returns:
        ``(clipped, norms)``: float32 ``(n, dim)`` with every row norm <= S, and the float64
        norms ``(n,)`` of the rows before clipping.
    """
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    norms = torch.linalg.vector_norm(deltas.to(torch.float64), dim=1)
    factor = torch.where(
        norms > clip, clip * (1 - CLIP_MARGIN) / norms.clamp_min(1e-300), torch.ones_like(norms)
    )
    if bool((factor == 1).all()):
        return deltas, norms
    return (deltas * factor.to(deltas.dtype).unsqueeze(1)).contiguous(), norms


__all__ = ["CLIP_MARGIN", "clip_rows"]
