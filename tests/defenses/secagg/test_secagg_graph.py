"""Harary graphs and the SecAgg+ degree/threshold derivation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privfl.defenses.secagg.graph import NeighbourGraph, secaggplus_parameters, threshold_for


def test_harary_graph_is_k_regular_symmetric_and_connected():
    ids = np.arange(0, 60, 3)
    g = NeighbourGraph.harary(ids, 6, np.random.default_rng(0))
    assert np.all(g.adjacency.sum(axis=1) == 6)
    assert np.array_equal(g.adjacency, g.adjacency.T)
    # connected: breadth-first search reaches everyone
    seen, frontier = {0}, [0]
    while frontier:
        nxt = [j for i in frontier for j in np.flatnonzero(g.adjacency[i]) if j not in seen]
        seen.update(nxt)
        frontier = nxt
    assert len(seen) == len(ids)
    assert set(g.holders(int(ids[4]))) == {int(ids[4]), *map(int, g.neighbours(int(ids[4])))}


def test_harary_labels_are_permuted_by_the_rng():
    ids = np.arange(30)
    a = NeighbourGraph.harary(ids, 4, np.random.default_rng(1))
    b = NeighbourGraph.harary(ids, 4, np.random.default_rng(1))
    c = NeighbourGraph.harary(ids, 4, np.random.default_rng(2))
    assert np.array_equal(a.adjacency, b.adjacency)
    assert not np.array_equal(a.adjacency, c.adjacency)


def test_large_k_is_the_complete_graph_and_odd_k_is_refused():
    assert NeighbourGraph.harary(np.arange(5), 4, np.random.default_rng(0)).is_complete
    with pytest.raises(ValueError, match="even"):
        NeighbourGraph.harary(np.arange(9), 3, np.random.default_rng(0))


def _binom_tail_ge(m: int, p: float, t: int) -> float:
    """P[Binomial(m, p) >= t] by exact summation (reference for the scipy-based code)."""
    return sum(math.comb(m, j) * p**j * (1 - p) ** (m - j) for j in range(t, m + 1))


@pytest.mark.parametrize(("n", "dropout", "corruption"), [(100, 0.1, 0.1), (1000, 0.05, 0.2)])
def test_secaggplus_parameters_meet_the_bounds_and_are_minimal(n, dropout, corruption):
    p = secaggplus_parameters(n, dropout=dropout, corruption=corruption)
    assert p.bounds_met and p.k % 2 == 0 and p.k < n - 1 and p.t > (p.k + 1) / 2
    m = p.k + 1
    assert n * _binom_tail_ge(m, corruption, p.t) <= 2**-40
    assert n * (1 - _binom_tail_ge(m, 1 - dropout, p.t)) <= 2**-20
    # no smaller even degree has a valid threshold
    k = p.k - 2
    m = k + 1
    assert not any(
        n * _binom_tail_ge(m, corruption, t) <= 2**-40
        and n * (1 - _binom_tail_ge(m, 1 - dropout, t)) <= 2**-20
        for t in range(m // 2 + 1, m + 1)
    )


def test_secaggplus_degree_grows_logarithmically():
    ks = [secaggplus_parameters(n, dropout=0.1, corruption=0.1).k for n in (100, 1000, 10000)]
    assert ks == sorted(ks)
    assert ks[-1] <= 1.5 * ks[0]  # 100x more clients, at most 1.5x the degree


def test_small_cohorts_fall_back_to_the_complete_graph():
    p = secaggplus_parameters(10, dropout=0.1, corruption=0.1)
    assert p.k == 9 and not p.bounds_met


def test_threshold_fraction():
    assert threshold_for(10, 0.6) == 6
    assert threshold_for(10, 0.61) == 7
    assert threshold_for(3, 1.0) == 3


def _bfs_components(g: NeighbourGraph, members: set[int]) -> list[set[int]]:
    """Reference: breadth-first search in Python over the members."""
    left, parts = set(members), []
    while left:
        part, frontier = set(), [min(left)]
        while frontier:
            part.update(frontier)
            frontier = list({int(v) for u in frontier for v in g.neighbours(u)} & left - part)
        parts.append(part)
        left -= part
    return parts


@pytest.mark.parametrize("k", [2, 4, 6])
def test_components_of_survivor_sets_match_a_breadth_first_search(k):
    rng = np.random.default_rng(k)
    ids = np.arange(5, 5 + 3 * 30, 3)
    g = NeighbourGraph.harary(ids, k, rng)
    split = 0
    for _ in range(40):
        members = {int(i) for i in ids if rng.random() < 0.6}
        got = g.components(sorted(members))
        want = _bfs_components(g, members)
        assert sorted(map(tuple, (p.tolist() for p in got))) == sorted(
            tuple(sorted(p)) for p in want
        )
        assert [len(p) for p in got] == sorted((len(p) for p in want), reverse=True)
        split += len(got) > 1
    assert split > 0  # the sets do split (at 40% dropout, k <= 6), so the test can fail
    assert len(NeighbourGraph.complete(ids).components(ids[::7])) == 1
    assert g.components([]) == []
    with pytest.raises(KeyError):
        g.components([1000])
