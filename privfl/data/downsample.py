"""Down-sampling chosen classes of a training set (``[data] class_fraction``).

Makes a class under-represented, as in Bagdasaryan et al., "Differential Privacy Has Disparate
Impact on Model Accuracy" (NeurIPS 2019), whose MNIST experiment keeps 500 of the 5,851
training 8s. Only the training split is touched: the test split keeps every class whole, so
per-class test accuracy stays comparable with and without the down-sampling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from privfl.data.base import ArrayDataset
from privfl.errors import DataError


@dataclass(frozen=True)
class Downsampled:
    """What down-sampling kept of one class.

    Attributes:
        label: the class.
        fraction: the share asked for, in ``(0, 1]``.
        before: the class's training examples before.
        kept: the examples kept: ``round(fraction * before)``, at least 1 when ``before > 0``.
    """

    label: int
    fraction: float
    before: int
    kept: int

    def to_record(self) -> dict[str, float | int]:
        """A JSON-ready dict (``partition.json``'s ``downsampled`` entries)."""
        return {
            "label": self.label,
            "fraction": self.fraction,
            "before": self.before,
            "kept": self.kept,
        }


def kept_count(fraction: float, before: int) -> int:
    """Examples kept of a class of ``before`` at ``fraction``: ``round(fraction * before)``, at
    least one (a class down-sampled to nothing would vanish from training silently).

    >>> kept_count(500 / 5851, 5851), kept_count(500 / 5851, 755), kept_count(0.001, 10)
    (500, 65, 1)
    >>> kept_count(0.5, 0)
    0
    """
    if before == 0:
        return 0
    return max(1, min(before, round(fraction * before)))


def downsample_classes(
    train: ArrayDataset,
    fractions: Mapping[int, float],
    num_classes: int,
    rng: np.random.Generator,
) -> tuple[ArrayDataset, list[Downsampled]]:
    """Keep a random ``fraction`` of each named class of ``train``; other classes stay whole.

    The kept examples are drawn without replacement by ``rng``; the order of the remaining
    examples is preserved (so partitions drawn afterwards see the same layout for the untouched
    classes).

    Args:
        train: the training set.
        fractions: class label -> share of its examples to keep, in ``(0, 1]``.
        num_classes: the data set's number of classes (labels are ``0 .. num_classes - 1``).
        rng: the generator that picks the kept examples.

    Returns:
        The down-sampled training set and one :class:`Downsampled` record per class, by label.

    Raises:
        DataError: a label outside ``[0, num_classes)`` or a fraction outside ``(0, 1]``.

    >>> x = torch.zeros(10, 1); y = torch.tensor([0] * 6 + [1] * 4)
    >>> small, rec = downsample_classes(ArrayDataset(x, y), {0: 0.5}, 2, np.random.default_rng(0))
    >>> small.y.tolist().count(0), small.y.tolist().count(1), rec[0].kept
    (3, 4, 3)
    """
    for label, fraction in fractions.items():
        if not 0 <= int(label) < num_classes:
            raise DataError(
                f"data.class_fraction names class {label}, but the data set's classes are "
                f"0..{num_classes - 1}"
            )
        if not (np.isfinite(fraction) and 0 < fraction <= 1):
            raise DataError(
                f"data.class_fraction[{label}] = {fraction}: the share kept must lie in (0, 1]"
            )
    labels = train.y.numpy()
    keep = np.ones(len(labels), dtype=bool)
    records = []
    for label in sorted(int(k) for k in fractions):
        fraction = float(fractions[label])
        members = np.flatnonzero(labels == label)
        kept = kept_count(fraction, len(members))
        dropped = rng.choice(members, size=len(members) - kept, replace=False)
        keep[dropped] = False
        records.append(Downsampled(label, fraction, len(members), kept))
    idx = np.flatnonzero(keep)
    groups = None if train.groups is None else train.groups[idx]
    t = torch.from_numpy(idx)
    return ArrayDataset(train.x[t], train.y[t], groups), records


__all__ = ["Downsampled", "downsample_classes", "kept_count"]
