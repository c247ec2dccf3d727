"""Contribution values against independent computations: the Shapley value by enumerating all
permutations, its axioms (efficiency, symmetry, null player), leave-one-out by hand, and
GTG-Shapley's Monte Carlo estimate against the exact value."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from privfl.incentives.values import CachedUtility, exact_shapley, gtg_shapley, leave_one_out


def _game(n: int, seed: int):
    """A non-additive game: v(S) = sum of weights + pairwise synergies + a |S|^2 term."""
    rng = np.random.default_rng(seed)
    w, pair = rng.normal(size=n), rng.normal(size=(n, n)) * 0.3

    def v(masks):
        m = np.asarray(masks, dtype=float)
        return m @ w + np.einsum("ki,ij,kj->k", m, np.triu(pair, 1), m) + 0.1 * m.sum(1) ** 2

    return v


def _by_permutations(v, n):
    """The Shapley value as the mean marginal contribution over all n! orders."""
    phi = np.zeros(n)
    perms = list(itertools.permutations(range(n)))
    for order in perms:
        mask = np.zeros(n, dtype=bool)
        before = v(mask[None])[0]
        for i in order:
            mask[i] = True
            after = v(mask[None])[0]
            phi[i] += after - before
            before = after
    return phi / len(perms)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_exact_shapley_equals_the_mean_over_all_orders(n):
    v = _game(n, n)
    phi = exact_shapley(v, n)
    assert phi == pytest.approx(_by_permutations(v, n), abs=1e-12)
    full, empty = v(np.array([[True] * n, [False] * n]))
    assert phi.sum() == pytest.approx(full - empty)  # efficiency


def test_symmetric_players_share_and_a_null_player_gets_nothing():
    v = lambda m: np.minimum(m[:, 0] + m[:, 1], 1.0) + 0.0 * m[:, 2]  # noqa: E731
    phi = exact_shapley(v, 3)
    assert phi == pytest.approx([0.5, 0.5, 0.0])


def test_leave_one_out_by_hand():
    v = _game(4, 9)
    loo = leave_one_out(v, 4)
    full = v(np.ones((1, 4), dtype=bool))[0]
    for i in range(4):
        mask = np.ones((1, 4), dtype=bool)
        mask[0, i] = False
        assert loo[i] == pytest.approx(full - v(mask)[0])


def test_the_cache_evaluates_each_subset_once():
    calls = []

    def v(masks):
        calls.append(len(masks))
        return masks.sum(1).astype(float)

    cached = CachedUtility(v, 4)
    exact_shapley(cached, 4)
    exact_shapley(cached, 4)
    assert cached.evaluations == 16 and sum(calls) == 16


def test_gtg_shapley_approaches_the_exact_value_and_truncation_saves_evaluations():
    n = 6
    v = _game(n, 3)
    exact = exact_shapley(v, n)
    est = gtg_shapley(
        v, n, np.random.default_rng(0), eps=0.0, max_permutations=3000, min_permutations=3000
    )
    assert est.permutations == 3000
    assert np.abs(est.values - exact).max() < 0.05 * np.abs(exact).max()
    # a game whose value saturates after two players: truncation skips most prefixes
    sat = lambda m: np.minimum(m.sum(1), 2).astype(float)  # noqa: E731
    cut = gtg_shapley(sat, 8, np.random.default_rng(1), eps=1e-9, max_permutations=40)
    assert cut.evaluations < 2**8 / 4 and cut.values.sum() == pytest.approx(2.0)


def test_gtg_shapley_is_guided_every_client_leads_in_turn():
    firsts = []

    def v(masks):
        for m in masks:
            if m.sum() == 1:
                firsts.append(int(np.flatnonzero(m)[0]))
        return masks.sum(1).astype(float)

    gtg_shapley(v, 5, np.random.default_rng(0), eps=0.0, min_permutations=5, max_permutations=5)
    assert sorted(set(firsts)) == [0, 1, 2, 3, 4]
