"""Centered clipping against a loop reference, its bounded influence, and its state."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.defenses.robust import CenteredClip, centered_clip
from privfl.update import UpdateBatch


def _reference(x, v0, tau, iters):
    v = v0.astype(np.float64)
    for _ in range(iters):
        step = np.zeros_like(v)
        for xi in x.astype(np.float64):
            diff = xi - v
            nd = np.linalg.norm(diff)
            step += diff * (min(1.0, tau / nd) if nd > 0 else 1.0)
        v = v + step / len(x)
    return v


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 10),
    d=st.integers(1, 15),
    tau=st.floats(0.01, 5.0),
    iters=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_loop(n, d, tau, iters, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) * 3).astype(np.float32)
    v0 = rng.standard_normal(d).astype(np.float32)
    got, _ = centered_clip(torch.from_numpy(x), torch.from_numpy(v0), tau, iters)
    np.testing.assert_allclose(got.numpy(), _reference(x, v0, tau, iters), rtol=1e-4, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 12),
    tau=st.floats(0.01, 5.0),
    seed=st.integers(0, 2**32 - 1),
    junk=st.sampled_from([1e6, -1e6, 50.0]),
    data=st.data(),
)
def test_f_clients_move_one_iteration_by_at_most_2f_tau_over_n(n, tau, seed, junk, data):
    f = data.draw(st.integers(1, n - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    v0 = torch.zeros(6)
    clean, _ = centered_clip(torch.from_numpy(x), v0, tau, 1)
    x[:f] = junk * rng.standard_normal((f, 6))
    attacked, _ = centered_clip(torch.from_numpy(x), v0, tau, 1)
    assert float(torch.linalg.vector_norm(attacked - clean)) <= 2 * f * tau / n * (1 + 1e-4)


def test_adapter_starts_from_the_previous_aggregate_and_checkpoints_it():
    ctx = SimpleNamespace(spec=SimpleNamespace(dim=2), round=1)
    batch = UpdateBatch(np.arange(3), torch.tensor([[1.0, 0], [1, 0], [1, 0]]), np.ones(3))
    cc = CenteredClip(tau=0.5)
    first = cc.aggregate(batch, ctx).delta  # from 0: every update clipped to length 0.5
    torch.testing.assert_close(first, torch.tensor([0.5, 0.0]))
    state = cc.state_dict()
    resumed = CenteredClip(tau=0.5)
    resumed.load_state_dict(state)
    second = resumed.aggregate(batch, ctx).delta  # from 0.5: the remaining 0.5 fits in tau
    torch.testing.assert_close(second, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(cc.aggregate(batch, ctx).delta, second)
