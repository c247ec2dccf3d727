"""The one-run audit's epsilon lower bound (Steinke, Nasr and Jagielski 2023)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from privfl.audit.one_run import epsilon_lower_bound, p_value


def _p_value_by_loop(m, r, v, eps, delta):
    """The paper's p-value, its maximum over i written out as a loop."""
    q = math.exp(eps) / (1 + math.exp(eps))
    beta = sum(stats.binom.pmf(k, r, q) for k in range(v, r + 1))
    alpha = max(
        (sum(stats.binom.pmf(k, r, q) for k in range(v - i, v)) / i for i in range(1, v + 1)),
        default=0.0,
    )
    return min(beta + 2 * m * delta * alpha, 1.0)


@pytest.mark.parametrize(
    "m,r,v,eps,delta",
    [
        (1000, 100, 70, 1.0, 1e-5),
        (500, 200, 150, 2.0, 1e-3),
        (100, 50, 50, 0.5, 0.0),
        (100, 30, 10, 3.0, 1e-2),
    ],
)
def test_p_value_matches_the_formula(m, r, v, eps, delta):
    assert p_value(m, r, v, eps, delta) == pytest.approx(_p_value_by_loop(m, r, v, eps, delta))


def test_lower_bound_is_monotone_and_zero_at_chance():
    bounds = [epsilon_lower_bound(1000, 200, v, delta=1e-5) for v in (100, 120, 150, 180, 200)]
    assert bounds[0] == 0.0
    assert all(a < b for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    assert epsilon_lower_bound(1000, 200, 150, delta=1e-3) < epsilon_lower_bound(
        1000, 200, 150, delta=1e-6
    )


def test_bound_exceeds_the_true_epsilon_at_most_beta_of_the_time():
    # Randomized response with epsilon = 1 is exactly 1-DP: each guess is right with
    # probability e / (1 + e). A valid 95% lower bound exceeds 1 in at most ~5% of audits.
    rng = np.random.default_rng(0)
    eps, r = 1.0, 400
    q = math.exp(eps) / (1 + math.exp(eps))
    bounds = [epsilon_lower_bound(r, r, int(v), delta=0.0) for v in rng.binomial(r, q, 300)]
    assert np.mean(np.array(bounds) > eps) <= 0.08
    assert np.median(bounds) > 0.5  # and it is not vacuous: it sees most of the 1
