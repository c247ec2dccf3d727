"""Norm bounding against a per-row loop; the aggregate never exceeds the bound."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.defenses.robust import NormBound, norm_bound
from privfl.update import UpdateBatch


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 10),
    d=st.integers(1, 20),
    bound=st.floats(0.01, 10.0),
    scale=st.floats(0.0, 100.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_loop_and_respects_bound(n, d, bound, scale, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) * scale).astype(np.float32)
    w = rng.integers(1, 50, n).astype(np.float64)
    got, clipped = norm_bound(torch.from_numpy(x), torch.from_numpy(w), bound)
    want = np.zeros(d)
    for i in range(n):
        v = x[i].astype(np.float64)
        nv = np.linalg.norm(v)
        want += w[i] / w.sum() * (v / max(1.0, nv / bound))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    assert clipped.numpy().tolist() == [
        bool(np.linalg.norm(r.astype(np.float64)) > bound) for r in x
    ]
    assert np.linalg.norm(got.numpy()) <= bound * (1 + 1e-5)


def test_adapter_reports_clipped_clients():
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    res = NormBound(1.0).aggregate(UpdateBatch(np.array([7, 8]), x, np.array([1.0, 1.0])), None)  # type: ignore[arg-type]
    torch.testing.assert_close(res.delta, torch.tensor([0.45, 0.6]))
    assert res.info["clipped"] == [7] and len(res.excluded) == 0
