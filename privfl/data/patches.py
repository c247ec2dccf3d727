"""32x32 colour patches cut from scikit-learn's two bundled sample photographs.

``sklearn.datasets.load_sample_images()`` ships ``china.jpg`` and ``flower.jpg`` (427 x 640 RGB)
inside the package, so natural images are available without any download: the setting of the
gradient-inversion attacks on CIFAR-sized images (Geiping et al., NeurIPS 2020).
"""

from __future__ import annotations

import numpy as np

from privfl.data.base import DataBundle
from privfl.data.bundled import split_train_test
from privfl.errors import DataError

#: side of a patch, in pixels.
PATCH = 32
#: integer down-scaling factors applied to each photograph before tiling (area averaging).
SCALES: tuple[int, ...] = (2, 3, 4)


def downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-average down-scaling by an integer ``factor``.

    Args:
        image: shape ``(H, W, C)``.

    Returns:
        shape ``(H // factor, W // factor, C)``, float64: the mean of each ``factor x factor``
        block (the trailing rows/columns that do not fill a block are dropped).
    """
    if factor < 1:
        raise DataError(f"downscale factor must be >= 1, got {factor}")
    h, w = image.shape[0] // factor, image.shape[1] // factor
    blocks = image[: h * factor, : w * factor].astype(np.float64)
    return blocks.reshape(h, factor, w, factor, -1).mean(axis=(1, 3))


def tile(image: np.ndarray, size: int = PATCH) -> np.ndarray:
    """Non-overlapping ``size x size`` tiles of ``image`` (``(H, W, C)``), row by row.

    Returns:
        shape ``(n, C, size, size)`` with ``n = (H // size) * (W // size)``.
    """
    rows, cols = image.shape[0] // size, image.shape[1] // size
    cut = image[: rows * size, : cols * size]
    tiles = cut.reshape(rows, size, cols, size, -1).transpose(0, 2, 4, 1, 3)
    return tiles.reshape(rows * cols, -1, size, size)


def sample_patches(scales: tuple[int, ...] = SCALES) -> tuple[np.ndarray, np.ndarray]:
    """All patches of the two sample photographs at every scale.

    Returns:
        ``(x, y)``: float32 ``(n, 3, 32, 32)`` pixels in ``[0, 1]`` and int64 ``(n,)`` labels,
        the index of the photograph a patch comes from (0 ``china.jpg``, 1 ``flower.jpg``).
        With the default scales, 99 patches per photograph.
    """
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    xs, ys = [], []
    for label, image in enumerate(images):
        for factor in scales:
            patches = tile(downscale(image, factor))
            xs.append(patches)
            ys.append(np.full(len(patches), label, dtype=np.int64))
    x = (np.concatenate(xs) / 255.0).astype(np.float32)
    return x, np.concatenate(ys)


def load_patches(*, test_fraction: float, rng: np.random.Generator) -> DataBundle:
    """The sample-photograph patches as a data set: 198 RGB 32x32 images, 2 classes (which
    photograph), split stratified into train and test."""
    x, y = sample_patches()
    train, test = split_train_test(x, y, test_fraction, rng)
    return DataBundle("patches", train, test, num_classes=2)


__all__ = ["PATCH", "SCALES", "downscale", "load_patches", "sample_patches", "tile"]
