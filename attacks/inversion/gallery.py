"""A PNG grid of originals above their reconstructions, written to the run folder."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

#: images per row of the grid.
COLUMNS = 8
#: images kept for the grid over a whole run.
MAX_IMAGES = 64


@dataclass(frozen=True)
class GalleryItem:
    """One reconstructed image beside the original it was matched to.

    Attributes:
        title: a short caption (round, client, PSNR).
        original, reconstruction: float ``(C, H, W)`` in ``[0, 1]``.
    """

    title: str
    original: torch.Tensor
    reconstruction: torch.Tensor


def plot_gallery(items: list[GalleryItem], path: Path, title: str = "") -> Path:
    """Save a grid: for each block of up to :data:`COLUMNS` items, a row of originals above a
    row of their reconstructions. Returns ``path``."""
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    blocks = max(1, math.ceil(len(items) / COLUMNS))
    cols = min(COLUMNS, max(1, len(items)))
    width = max(1.4 * cols, 5.0)  # room for the title with few columns
    fig = Figure(figsize=(width, 2.9 * blocks))
    axes = fig.subplots(2 * blocks, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for k, item in enumerate(items):
        b, c = divmod(k, COLUMNS)
        for row, img in ((2 * b, item.original), (2 * b + 1, item.reconstruction)):
            ax = axes[row][c]
            _show(ax, img)
        axes[2 * b][c].set_title(item.title, fontsize=6)
    for b in range(blocks if items else 0):
        for row, name in ((2 * b, "original"), (2 * b + 1, "reconstruction")):
            ax = axes[row][0]
            ax.text(
                -0.15,
                0.5,
                name,
                rotation=90,
                va="center",
                ha="right",
                fontsize=7,
                transform=ax.transAxes,
            )
    if not items:
        axes[0][0].text(0.5, 0.5, "no plaintext to reconstruct", ha="center", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _show(ax: object, img: torch.Tensor) -> None:
    x = img.detach().clamp(0, 1).cpu()
    if x.ndim == 3 and x.shape[0] == 1:
        ax.imshow(x[0].numpy(), cmap="gray", vmin=0, vmax=1)  # type: ignore[attr-defined]
    elif x.ndim == 3 and x.shape[0] == 3:
        ax.imshow(x.permute(1, 2, 0).numpy())  # type: ignore[attr-defined]
    else:  # not an image: show the flat vector as a strip
        ax.imshow(x.reshape(1, -1).numpy(), cmap="gray", aspect="auto")  # type: ignore[attr-defined]


__all__ = ["COLUMNS", "GalleryItem", "MAX_IMAGES", "plot_gallery"]
