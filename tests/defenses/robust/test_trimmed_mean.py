"""Coordinate-wise trimmed mean against scipy.stats.trim_mean, and its breakdown point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import trim_mean

from privfl.defenses.robust import TrimmedMean, trimmed_mean
from privfl.defenses.robust.trimmed_mean import trimmed_count
from privfl.update import UpdateBatch


@settings(max_examples=50, deadline=None)
@given(
    x=st.integers(1, 16).flatmap(
        lambda n: arrays(
            np.float32, (n, 6), elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False)
        )
    ),
    beta=st.floats(0.0, 0.49),
)
def test_matches_scipy(x, beta):
    n = len(x)
    if n - 2 * int(beta * n) < 1:
        return
    got = trimmed_mean(torch.from_numpy(x), beta).numpy()
    want = trim_mean(x.astype(np.float64), beta, axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 25),
    beta=st.floats(0.05, 0.45),
    seed=st.integers(0, 2**32 - 1),
    junk=st.sampled_from([1e30, -1e30, 1e6]),
)
def test_up_to_k_arbitrary_rows_stay_in_the_honest_range(n, beta, seed, junk):
    k = trimmed_count(n, beta)
    if k == 0 or n - 2 * k < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    honest = np.ones(n, dtype=bool)
    honest[rng.choice(n, k, replace=False)] = False
    x[~honest] = junk * rng.choice([-1.0, 1.0], size=(k, 8))
    got = trimmed_mean(torch.from_numpy(x), beta).numpy()
    lo, hi = x[honest].min(axis=0), x[honest].max(axis=0)
    assert np.all(got >= lo - 1e-6) and np.all(got <= hi + 1e-6)


def test_one_row_more_than_trimmed_breaks_it():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 4)).astype(np.float32)
    x[:3] = 1e6  # beta = 0.2 trims 2 from each end; 3 large rows leave one in
    assert np.all(trimmed_mean(torch.from_numpy(x), 0.2).numpy() > 1e4)


def test_beta_zero_is_the_mean_and_bad_beta_rejected():
    x = torch.randn(7, 5)
    torch.testing.assert_close(trimmed_mean(x, 0.0), x.mean(dim=0))
    with pytest.raises(ValueError, match="beta"):
        trimmed_mean(x, 0.5)


def test_adapter():
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0], [100.0]])
    res = TrimmedMean(0.2).aggregate(UpdateBatch(np.arange(5), x, np.ones(5)), None)  # type: ignore[arg-type]
    assert float(res.delta) == pytest.approx(3.0) and len(res.excluded) == 0
