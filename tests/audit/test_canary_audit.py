"""The one-shot canary audit: the Gaussian-pair epsilon against the closed form, and the
estimate below the accountant's bound for DP runs and large without DP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import small_config
from scipy.stats import norm

from privfl.audit.canary import canary_directions, cosines
from privfl.audit.estimate import GaussianFit, empirical_epsilon, gaussian_pair_epsilon
from privfl.federation import Federation


def _gaussian_mechanism_delta(eps: float, mu: float) -> float:
    # Balle and Wang 2018, Theorem 8: the Gaussian mechanism with mu = sensitivity / sigma.
    return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)


@pytest.mark.parametrize("mu", [0.3, 1.0, 2.0, 5.0])
def test_equal_variance_pair_is_the_gaussian_mechanism(mu):
    eps = gaussian_pair_epsilon(GaussianFit(mu * 0.01, 0.01), GaussianFit(0.0, 0.01), delta=1e-5)
    assert _gaussian_mechanism_delta(eps, mu) == pytest.approx(1e-5, rel=1e-6)


def test_unequal_variances_agree_with_numerical_integration():
    p, q, eps = GaussianFit(0.5, 1.3), GaussianFit(0.0, 1.0), 2.0
    x = np.linspace(-30, 30, 2_000_001)
    dens = np.maximum(norm.pdf(x, 0.5, 1.3) - math.exp(eps) * norm.pdf(x, 0, 1), 0)
    from privfl.audit.estimate import _hockey_stick

    assert _hockey_stick(p, q, eps) == pytest.approx(np.trapezoid(dens, x), rel=1e-6)
    # Identical distributions leak nothing.
    assert gaussian_pair_epsilon(q, q, delta=1e-5) == 0.0


def test_canary_directions_are_unit_and_stable():
    d = canary_directions(3, np.array([0, 1, 7]), 500)
    assert torch.allclose(d.norm(dim=1), torch.ones(3))
    assert torch.equal(d[2], canary_directions(3, np.array([7]), 500)[0])
    v = 2.5 * d[1]
    assert cosines(3, np.array([1, 0]), v)[0] == pytest.approx(1.0, abs=1e-6)


def _audit(dp):
    kw = {"defense": {"dp": dp}} if dp else {}
    cfg = small_config(
        federation={"rounds": 5, "clients_per_round": 4, "batch_size": 16},
        audit={"canaries": 50},
        **kw,
    )
    fed = Federation(cfg)
    for _ in range(5):
        fed.run_round()
    fed.finish()
    return fed.stages.finishers[0].result


def test_estimate_is_below_the_bound_with_dp_and_large_without():
    plain = _audit(None)
    central = _audit({"mode": "central", "noise_multiplier": 1.0, "clip": 1.0})
    local = _audit({"mode": "local", "noise_multiplier": 1.0, "clip": 1.0})
    assert "epsilon_bound" not in plain and plain["epsilon_empirical"] > 30
    for r in (central, local):
        assert r["epsilon_empirical"] < r["epsilon_bound"]
        assert r["epsilon_empirical"] < plain["epsilon_empirical"] / 5
    # The unseen canaries' cosines look like random directions in d dimensions: std 1/sqrt(d).
    d = Federation(small_config()).spec.dim
    assert plain["unseen_cosine_std"] == pytest.approx(1 / math.sqrt(d), rel=0.3)


def test_empirical_epsilon_needs_two_canaries_each():
    from privfl.errors import PrivflError

    with pytest.raises(PrivflError, match="at least 2 canaries"):
        empirical_epsilon(np.array([0.1]), np.array([0.0, 0.1]), delta=1e-5)
