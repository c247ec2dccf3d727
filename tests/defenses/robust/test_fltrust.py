"""FLTrust against a per-row loop of Cao et al.'s formulas, its invariances, and its root set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.defenses.robust import fltrust


def _reference(x, g0):
    x, g0 = x.astype(np.float64), g0.astype(np.float64)
    n0 = np.linalg.norm(g0)
    ts, acc = [], np.zeros_like(g0)
    for g in x:
        ng = np.linalg.norm(g)
        t = max(0.0, float(g @ g0) / (ng * n0)) if ng > 0 and n0 > 0 else 0.0
        ts.append(t)
        if t > 0:
            acc += t * g * n0 / ng
    total = sum(ts)
    return (acc / total if total > 0 else acc), np.array(ts)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 10),
    d=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
    zero_rows=st.integers(0, 2),
)
def test_matches_loop(n, d, seed, zero_rows):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(0.1, 10, (n, 1)).astype(
        np.float32
    )
    x[: min(zero_rows, n)] = 0
    g0 = rng.standard_normal(d).astype(np.float32)
    got, trust = fltrust(torch.from_numpy(x), torch.from_numpy(g0))
    want, want_trust = _reference(x, g0)
    np.testing.assert_allclose(trust.numpy(), want_trust, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    # A convex combination of vectors of norm ||g0||: never longer than g0.
    assert np.linalg.norm(got.numpy()) <= np.linalg.norm(g0) * (1 + 1e-5)


def test_scaling_an_update_changes_nothing_and_opposed_updates_get_no_trust():
    rng = np.random.default_rng(0)
    g0 = torch.from_numpy(rng.standard_normal(30).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((5, 30)).astype(np.float32)) + g0
    base, _ = fltrust(x, g0)
    boosted = x.clone()
    boosted[2] *= 1000.0  # the model-replacement boost is normalised away
    torch.testing.assert_close(fltrust(boosted, g0)[0], base, rtol=1e-4, atol=1e-5)
    flipped = torch.cat([x, -4 * x[:2]])
    agg, trust = fltrust(flipped, g0)
    assert trust[5:].tolist() == [0.0, 0.0]
    torch.testing.assert_close(agg, base, rtol=1e-4, atol=1e-5)


def test_no_trust_at_all_gives_a_zero_update():
    g0 = torch.tensor([1.0, 0.0])
    agg, trust = fltrust(torch.tensor([[-1.0, 0.0], [0.0, 1.0]]), g0)
    assert agg.tolist() == [0.0, 0.0] and trust.tolist() == [0.0, 0.0]


def test_aggregator_uses_a_seeded_root_set(make_config):
    import privfl
    from privfl.federation import Federation

    cfg = make_config(defense={"robust": {"rule": "fltrust", "root_size": 30}})
    a, b = Federation(cfg), Federation(cfg)
    agg_a, agg_b = a.stages.aggregator, b.stages.aggregator
    assert len(agg_a.root_y) == 30 and torch.equal(agg_a.root_x, agg_b.root_x)
    other = Federation(privfl.config.config_from_dict({**cfg.model_dump(), "seed": 1}))
    assert not torch.equal(other.stages.aggregator.root_x, agg_a.root_x)
    # The root set is training data; the test split stays as it was.
    train = a.data.bundle.train.x.flatten(1)
    assert all(bool((train == r).all(dim=1).any()) for r in agg_a.root_x.flatten(1))


def test_root_size_larger_than_the_data_is_a_config_error(make_config):
    from privfl.errors import ConfigError
    from privfl.federation import Federation

    with pytest.raises(ConfigError, match="root_size"):
        Federation(make_config(defense={"robust": {"rule": "fltrust", "root_size": 100000}}))
