"""Bulyan against a loop reference (recursive Krum, then the beta values closest to the
median), and its resilience to f colluding outliers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from robust_refs import brute_bulyan

from privfl.defenses.robust import Bulyan, bulyan
from privfl.errors import AggregationError
from privfl.update import UpdateBatch


@settings(max_examples=40, deadline=None)
@given(
    f=st.integers(0, 2),
    extra=st.integers(0, 4),
    d=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_loop_reference(f, extra, d, seed):
    # Continuous random data: ties (where the two could legitimately differ) have
    # probability zero.
    n = 4 * f + 3 + extra
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    got, selected = bulyan(torch.from_numpy(x), f)
    want, chosen = brute_bulyan(x, f)
    assert selected.tolist() == chosen
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("f", [1, 2])
def test_colluding_outliers_do_not_move_it_out_of_the_honest_range(f):
    rng = np.random.default_rng(f)
    n = 4 * f + 3
    x = rng.standard_normal((n, 30)).astype(np.float32)
    bad = rng.choice(n, f, replace=False)
    x[bad] = 1e6
    honest = np.setdiff1d(np.arange(n), bad)
    got = bulyan(torch.from_numpy(x), f)[0].numpy()
    assert np.all(got >= x[honest].min(axis=0)) and np.all(got <= x[honest].max(axis=0))


def test_needs_4f_plus_3():
    with pytest.raises(ValueError, match="4f \\+ 3"):
        bulyan(torch.zeros(6, 2), 1)
    batch = UpdateBatch(np.arange(6), torch.zeros(6, 2), np.ones(6))
    with pytest.raises(AggregationError, match="at least 7"):
        Bulyan(1).aggregate(batch, None)  # type: ignore[arg-type]


def test_adapter_excludes_unselected():
    x = torch.tensor([[0.0], [0.1], [-0.1], [0.2], [9.0], [0.05], [-0.05]])
    res = Bulyan(1).aggregate(UpdateBatch(np.arange(7), x, np.ones(7)), None)  # type: ignore[arg-type]
    assert len(res.excluded) == 2 and 4 in res.excluded.tolist()
