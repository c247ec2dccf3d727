"""Krum and Multi-Krum against brute-force scores, their breakdown property and adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from robust_refs import brute_krum_scores

from privfl.defenses.robust import Krum, MultiKrum, krum, krum_scores, multi_krum
from privfl.defenses.robust.distances import pairwise_sq_distances
from privfl.errors import AggregationError
from privfl.update import UpdateBatch


@st.composite
def krum_cases(draw):
    f = draw(st.integers(0, 3))
    n = draw(st.integers(2 * f + 3, 2 * f + 9))
    d = draw(st.integers(1, 8))
    # Few distinct values: hypothesis then also builds ties and duplicated rows.
    x = draw(arrays(np.float32, (n, d), elements=st.sampled_from([-3.0, -1.0, 0.0, 0.5, 2.0])))
    return x, f


@settings(max_examples=50, deadline=None)
@given(krum_cases())
def test_scores_match_brute_force(case):
    x, f = case
    got = krum_scores(pairwise_sq_distances(torch.from_numpy(x)), f).numpy()
    np.testing.assert_allclose(got, brute_krum_scores(x, f), rtol=1e-5, atol=1e-4)


@settings(max_examples=50, deadline=None)
@given(krum_cases(), st.data())
def test_multi_krum_selects_the_lowest_scores(case, data):
    x, f = case
    n = len(x)
    m = data.draw(st.integers(1, n))
    ref = brute_krum_scores(x, f)
    agg, selected = multi_krum(torch.from_numpy(x), f, m)
    assert len(set(selected.tolist())) == m
    rest = np.setdiff1d(np.arange(n), selected)
    # Any set of m lowest scores is right (ties may be broken either way).
    if len(rest):
        assert ref[selected].max() <= ref[rest].min() + 1e-4
    np.testing.assert_allclose(agg.numpy(), x[selected].mean(axis=0), rtol=1e-6, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(krum_cases())
def test_krum_picks_a_minimiser(case):
    x, f = case
    ref = brute_krum_scores(x, f)
    agg, chosen = krum(torch.from_numpy(x), f)
    assert ref[chosen] <= ref.min() + 1e-4
    assert np.array_equal(agg.numpy(), x[chosen])


@pytest.mark.parametrize("f", [1, 2, 3])
def test_krum_ignores_colluding_outliers(f):
    # n = 2f + 3 honest-or-not rows: f colluders at one far point never win, since each has
    # n - f - 2 = f + 1 neighbours to score and only f - 1 of them are its accomplices.
    rng = np.random.default_rng(f)
    n = 2 * f + 3
    x = rng.standard_normal((n, 20)).astype(np.float32)
    bad = rng.choice(n, f, replace=False)
    x[bad] = 1e4
    _, chosen = krum(torch.from_numpy(x), f)
    assert chosen not in bad
    _, selected = multi_krum(torch.from_numpy(x), f, n - f)
    assert not set(selected.tolist()) & set(bad.tolist())


def test_too_few_updates_rejected():
    with pytest.raises(ValueError, match="n > f \\+ 2"):
        krum(torch.zeros(3, 2), 1)
    batch = UpdateBatch(np.arange(4), torch.zeros(4, 2), np.ones(4))
    with pytest.raises(AggregationError, match="at least 5 updates"):
        Krum(1).aggregate(batch, None)  # type: ignore[arg-type]


def test_adapters_exclude_the_unselected_clients():
    x = torch.tensor([[0.0], [0.1], [0.2], [50.0], [0.15], [-0.1]])
    ids = np.array([10, 11, 12, 13, 14, 15])
    batch = UpdateBatch(ids, x, np.ones(6))
    res = Krum(1).aggregate(batch, None)  # type: ignore[arg-type]
    kept = sorted(set(ids.tolist()) - set(res.excluded.tolist()))
    assert len(kept) == 1 and 13 in res.excluded
    assert float(res.delta) == float(x[ids.tolist().index(kept[0])])
    res = MultiKrum(1).aggregate(batch, None)  # type: ignore[arg-type]
    assert res.excluded.tolist() == [13]  # m = n - f = 5 keeps all but the outlier
    assert float(res.delta) == pytest.approx(float(x[[0, 1, 2, 4, 5]].mean()))
