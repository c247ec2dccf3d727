"""Labels from the last layer: iDLG's single label is always right, batch label counts are
exact on the untrained LeNet, and models without a usable last layer are refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inversion_fixtures import *  # noqa: F403 (the pytest fixtures; see that module)
from torch import nn

from privfl.attacks.inversion import (
    find_final_layer,
    idlg_label,
    label_counts,
    labels_from_counts,
    mean_prediction,
    recover_labels,
)
from privfl.client import LocalTraining
from privfl.errors import PrivflError
from privfl.models import MLPConfig

ONE_STEP = LocalTraining(lr=0.1, steps=1, batch_size=None)


def test_idlg_label_is_right_for_every_one_of_40_digits(digits):
    # Zhao et al. 2020 report 100% label accuracy for iDLG; the rule is exact for one example.
    for i in range(40):
        t = digits.target(torch.tensor([i * 31]), ONE_STEP, seed=i)
        layer = find_final_layer(t.model, 10)
        assert idlg_label(t.update, layer) == int(digits.y[i * 31])


def test_idlg_weight_rule_without_bias_needs_nonnegative_features(digits_bundle, make_case):
    # No bias: the row of dL/dW with the negative sum, right when features are >= 0 (sigmoid).
    case = make_case(digits_bundle, MLPConfig(hidden=[32], activation="sigmoid", init="uniform"))
    head = case.model[-1]
    case.model[-1] = nn.Linear(head.in_features, head.out_features, bias=False)
    from privfl.update import ParamSpec

    spec = ParamSpec.of(case.model)
    case = type(case)(case.model, spec, spec.flatten(case.model), case.x, case.y, 10)
    layer = find_final_layer(case.model, 10)
    assert layer.bias is None
    for i in range(20):
        t = case.target(torch.tensor([i * 17]), ONE_STEP)
        assert idlg_label(t.update, layer) == int(case.y[i * 17])


@pytest.mark.parametrize("batch", [2, 8, 32])
def test_label_counts_are_exact_on_the_untrained_lenet(digits, batch):
    rng = np.random.default_rng(batch)
    for trial in range(10):
        idx = torch.from_numpy(rng.choice(len(digits.y), size=batch, replace=False))
        t = digits.target(idx, ONE_STEP, seed=trial)
        labels = recover_labels(t, torch.Generator().manual_seed(trial))
        assert labels.tolist() == sorted(digits.y[idx].tolist())


def test_label_counts_sum_to_the_batch_and_follow_the_bias_identity():
    # A hand-made bias gradient: mean p = 0.1 each, counts (3, 0, 1) of B = 4 give
    # dL/db = p - count / B.
    mean_p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    counts = np.array([3, 0, 1])
    grad_b = (mean_p - torch.from_numpy(counts) / 4).float()
    grads = [torch.zeros(3, 2), grad_b]
    layer = find_final_layer(nn.Sequential(nn.Linear(2, 3)), 3)
    got = label_counts(grads, layer, 4, mean_p)
    assert got.tolist() == counts.tolist()
    assert labels_from_counts(got).tolist() == [0, 0, 0, 2]


def test_mean_prediction_is_a_distribution(digits):
    params = dict(digits.spec.unflatten(digits.w0))
    p = mean_prediction(digits.model, params, (1, 8, 8), torch.Generator().manual_seed(0))
    assert p.shape == (10,) and float(p.sum()) == pytest.approx(1.0) and (p > 0).all()


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Sigmoid(), nn.Conv1d(1, 1, 1)),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 7)),
    ],
    ids=["last layer not linear", "wrong number of outputs"],
)
def test_label_recovery_without_a_final_linear_layer_says_so(model):
    with pytest.raises(PrivflError, match="final linear layer with num_classes=10"):
        find_final_layer(model, 10)


def test_batch_counts_without_a_bias_are_refused():
    layer = find_final_layer(nn.Sequential(nn.Linear(4, 3, bias=False)), 3)
    with pytest.raises(PrivflError, match="has no bias"):
        label_counts([torch.zeros(3, 4)], layer, 2, torch.full((3,), 1 / 3))
