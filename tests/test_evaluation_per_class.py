"""Per-class test accuracy (privfl.evaluation.per_class_accuracy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from privfl.evaluation import evaluate, per_class_accuracy


class _Fixed(nn.Module):
    """Predicts a fixed label per example (its first feature)."""

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0].long(), 4).float()


def test_per_class_accuracy_counts_each_class_apart():
    pred = torch.tensor([0, 0, 1, 2, 2, 2, 3], dtype=torch.float32).reshape(-1, 1)
    y = torch.tensor([0, 1, 1, 2, 2, 0, 0])
    acc = per_class_accuracy(_Fixed(), pred, y, 5, batch_size=2)
    assert acc[0] == pytest.approx(1 / 3)
    assert acc[1] == pytest.approx(1 / 2)
    assert acc[2] == pytest.approx(1.0)
    assert math.isnan(acc[3]) and math.isnan(acc[4])  # no examples of these classes
    # the overall accuracy is the support-weighted mean of the per-class ones
    _, overall = evaluate(_Fixed(), pred, y)
    counts = np.bincount(y.numpy(), minlength=5)
    assert overall == pytest.approx(np.nansum(acc * counts) / counts.sum())


def test_labels_out_of_range_are_refused():
    with pytest.raises(ValueError, match="labels"):
        per_class_accuracy(_Fixed(), torch.zeros(2, 1), torch.tensor([0, 4]), 4)
