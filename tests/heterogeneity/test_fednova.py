"""FedNova on a toy quadratic with a closed-form optimum: with unequal local steps FedAvg
converges to the wrong point and FedNova to the right one (Wang et al. 2020, Sec. 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privfl.aggregation import weighted_mean
from privfl.heterogeneity import a_norm, fednova

ETA = 1e-3  # local GD step size
TAU = np.array([1, 2, 5, 10, 20])  # unequal local steps
P = np.array([0.1, 0.3, 0.2, 0.25, 0.15])  # client weights
C = np.array([[4.0, 0.0], [0.0, 1.0], [-2.0, 3.0], [1.0, -3.0], [-4.0, -2.0]])


def _local_update(x: np.ndarray) -> np.ndarray:
    """tau_i steps of GD on F_i(x) = ||x - c_i||^2 / 2 from x, in closed form:
    x_tau - x = (1 - (1 - eta)^tau) (c_i - x)."""
    return (1 - (1 - ETA) ** TAU)[:, None] * (C - x)


def _run(aggregate, rounds=6000) -> np.ndarray:
    x = np.zeros(2)
    for _ in range(rounds):
        deltas = torch.from_numpy(_local_update(x).astype(np.float32))
        x = x + aggregate(deltas).numpy().astype(np.float64)
    return x


def test_fedavg_goes_to_the_wrong_point_and_fednova_to_the_optimum():
    optimum = P @ C  # argmin of sum_i p_i F_i
    a = 1 - (1 - ETA) ** TAU
    # closed-form fixed points: sum_i p_i a_i (c_i - x) = 0 (FedAvg), with a_i / tau_i (FedNova)
    fedavg_point = (P * a) @ C / (P * a).sum()
    fednova_point = (P * a / TAU) @ C / (P * a / TAU).sum()
    x_avg = _run(lambda d: weighted_mean(d, torch.from_numpy(P)))
    x_nova = _run(lambda d: fednova(d, P, TAU.astype(float)))
    np.testing.assert_allclose(x_avg, fedavg_point, atol=1e-3)
    np.testing.assert_allclose(x_nova, fednova_point, atol=1e-3)
    # FedAvg's point is the tau-weighted surrogate's optimum (Wang et al., Theorem 1, eta -> 0)
    surrogate = (P * TAU) @ C / (P * TAU).sum()
    assert np.linalg.norm(fedavg_point - surrogate) < 0.05
    assert np.linalg.norm(x_avg - optimum) > 1.0
    assert np.linalg.norm(x_nova - optimum) < 0.02


def test_a_norm_with_momentum_matches_the_sum_of_the_momentum_coefficients():
    # a_i = sum_{k<tau} (1 - rho^(tau - k)) / (1 - rho): its l1 norm, summed term by term
    for tau in (1, 3, 17):
        for rho in (0.0, 0.5, 0.9):
            terms = [(1 - rho ** (tau - k)) / (1 - rho) for k in range(tau)]
            assert a_norm(np.array([tau]), rho)[0] == pytest.approx(sum(terms), rel=1e-12)
