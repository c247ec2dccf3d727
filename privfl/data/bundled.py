"""Data sets that need no download: scikit-learn's bundled digits and seeded synthetic data."""

from __future__ import annotations

import numpy as np
import torch

from privfl.data.base import ArrayDataset, DataBundle
from privfl.errors import DataError


def split_train_test(
    x: np.ndarray, y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[ArrayDataset, ArrayDataset]:
    """Stratified random split: each class keeps ``test_fraction`` of its examples for test.

    Args:
        x: float32 features, shape ``(n, ...)``.
        y: int labels, shape ``(n,)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    test_mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(test_fraction * len(idx)))
        test_mask[rng.choice(idx, size=k, replace=False)] = True

    def _make(mask: np.ndarray) -> ArrayDataset:
        return ArrayDataset(
            torch.from_numpy(np.ascontiguousarray(x[mask], dtype=np.float32)),
            torch.from_numpy(y[mask].astype(np.int64)),
        )

    return _make(~test_mask), _make(test_mask)


def load_digits(*, test_fraction: float, rng: np.random.Generator) -> DataBundle:
    """scikit-learn's bundled handwritten digits: 1,797 8x8 images, 10 classes.

    Pixels (0..16) are scaled to [0, 1]; images have shape ``(1, 8, 8)``.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    raw = _sk_load_digits()
    x = (raw.images.astype(np.float32) / 16.0)[:, None, :, :]
    train, test = split_train_test(x, raw.target.astype(np.int64), test_fraction, rng)
    return DataBundle("digits", train, test, num_classes=10)


def make_synthetic(
    *,
    samples: int,
    shape: tuple[int, ...],
    classes: int,
    noise: float,
    test_fraction: float,
    rng: np.random.Generator,
) -> DataBundle:
    """Seeded Gaussian class clusters: ``x = mu[y] + noise * e``, ``mu[c] ~ N(0, I)``.

    Classes are balanced (``samples // classes`` each, the rest spread over the first ones).
    With ``noise`` around 1 the task is learnable but not trivial; used by tests and
    benchmarks. Features have the given ``shape`` per example.
    """
    if classes < 2:
        raise DataError(f"synthetic data needs at least 2 classes, got {classes}")
    if samples < 2 * classes:
        raise DataError(
            f"synthetic data needs samples >= 2 * classes, got {samples} < {2 * classes}"
        )
    dim = int(np.prod(shape))
    means = rng.standard_normal((classes, dim), dtype=np.float32)
    y = np.arange(samples) % classes
    rng.shuffle(y)
    # x = means[y] + noise * e, computed in place (one (samples, dim) array at the peak instead
    # of three; the same float32 operations, so the same values).
    x = rng.standard_normal((samples, dim), dtype=np.float32)
    x *= np.float32(noise)
    for c in range(classes):
        x[y == c] += means[c]
    train, test = split_train_test(x.reshape(samples, *shape), y, test_fraction, rng)
    return DataBundle("synthetic", train, test, num_classes=classes)


__all__ = ["load_digits", "make_synthetic", "split_train_test"]
