"""Coordinate-wise median against numpy, and its breakdown point of 1/2."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from privfl.defenses.robust import coordinate_median


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 15).flatmap(
        lambda n: arrays(
            np.float32,
            (n, 7),
            elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=False),
        )
    )
)
def test_matches_numpy_median(x):
    got = coordinate_median(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, np.median(x.astype(np.float64), axis=0), rtol=1e-6, atol=0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 21),
    seed=st.integers(0, 2**32 - 1),
    junk=st.sampled_from([1e30, -1e30, 1e6, 0.0]),
    data=st.data(),
)
def test_fewer_than_half_arbitrary_rows_stay_between_honest_values(n, seed, junk, data):
    f = data.draw(st.integers(0, (n - 1) // 2))  # f < n / 2
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10)).astype(np.float32)
    honest = np.ones(n, dtype=bool)
    honest[rng.choice(n, f, replace=False)] = False
    x[~honest] = junk * rng.choice([-1.0, 1.0], size=(f, 10))
    got = coordinate_median(torch.from_numpy(x)).numpy()
    assert np.all(got >= x[honest].min(axis=0)) and np.all(got <= x[honest].max(axis=0))


def test_rows_above_the_median_can_move_up_freely():
    # "Unchanged by fewer than n/2 arbitrary rows": pushing the rows already above the
    # median of a column further up leaves the median exactly where it was.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 50)).astype(np.float32)
    before = coordinate_median(torch.from_numpy(x)).numpy()
    moved = np.where(x > before, np.float32(3e38), x)
    assert np.array_equal(coordinate_median(torch.from_numpy(moved)).numpy(), before)


def test_half_the_rows_break_it():
    # The breakdown point is exact: n/2 rows (even n) drag the median out of the honest range.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 5)).astype(np.float32)
    x[:5] = 1e6
    assert np.all(coordinate_median(torch.from_numpy(x)).numpy() > 1e5)
