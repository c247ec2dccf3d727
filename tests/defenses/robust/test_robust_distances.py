"""Pairwise distances from one Gram matrix against the double loop."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from robust_refs import brute_distances

from privfl.defenses.robust import pairwise_sq_distances


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 12),
    d=st.integers(1, 30),
    offset=st.floats(-1e3, 1e3),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_double_loop(n, d, offset, seed):
    x = (np.random.default_rng(seed).standard_normal((n, d)) + offset).astype(np.float32)
    got = pairwise_sq_distances(torch.from_numpy(x)).numpy()
    want = brute_distances(x)
    assert got.shape == (n, n) and np.all(np.diag(got) == 0) and np.array_equal(got, got.T)
    # Centring keeps the error at the scale of the spread, not of the offset.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * d)


def test_far_from_origin_close_together():
    # Rows 1e4 from the origin but 1e-2 apart: the uncentred identity would lose all digits
    # (||x||^2 ~ 1e8 in float32 has a spacing of 8).
    rng = np.random.default_rng(0)
    x = (1e4 + 1e-2 * rng.standard_normal((5, 100))).astype(np.float32)
    got = pairwise_sq_distances(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, brute_distances(x), rtol=1e-2, atol=1e-6)
