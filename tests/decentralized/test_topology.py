"""The graphs and mixing matrices of privfl.decentralized.topology."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from privfl.decentralized.topology import (
    build_gossip,
    build_graph,
    check_doubly_stochastic,
    metropolis_weights,
)
from privfl.errors import ConfigError

GRAPHS = ["ring", "torus", "erdos_renyi", "complete", "exponential"]


@pytest.mark.parametrize("mixing", ["metropolis", "uniform"])
@pytest.mark.parametrize("topology", GRAPHS)
@pytest.mark.parametrize("n", [6, 12, 50])
def test_mixing_is_doubly_stochastic_on_a_connected_graph(topology, mixing, n):
    g = build_gossip(topology, n, seed=3, mixing=mixing, p=0.3)
    w = g.mixing
    assert w.shape == (n, n) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    # connected: the consensus rate is below one, and W^k -> 11^T/n
    assert g.spectral_gap > 1e-4
    np.testing.assert_allclose(np.linalg.matrix_power(w, 20000), np.full((n, n), 1 / n), atol=1e-6)
    directed = topology == "exponential" and mixing == "uniform"
    connected = nx.is_strongly_connected if directed else nx.is_connected
    assert connected(g.graph)


def test_metropolis_weights_on_a_path_by_hand():
    # path 0-1-2-3: degrees 1,2,2,1; W_ij = 1/(1+max(d_i,d_j))
    w = metropolis_weights(nx.path_graph(4))
    third = 1 / 3
    expected = np.array(
        [
            [1 - third, third, 0, 0],
            [third, 1 - 2 * third, third, 0],
            [0, third, 1 - 2 * third, third],
            [0, 0, third, 1 - third],
        ]
    )
    np.testing.assert_allclose(w, expected, atol=1e-15)


def test_uniform_mixing_on_the_complete_graph_is_exact_averaging():
    w = build_gossip("complete", 7, 0, mixing="uniform", p=None).mixing
    np.testing.assert_allclose(w, np.full((7, 7), 1 / 7), atol=1e-15)


def test_exponential_uniform_is_ying_et_al_static_exponential_graph():
    # n = 8: node i averages itself and i+1, i+2, i+4 (mod 8), each 1/(log2(8)+1) = 1/4
    g = build_gossip("exponential", 8, 0, mixing="uniform", p=None)
    assert np.flatnonzero(g.mixing[0]).tolist() == [0, 1, 2, 4]
    assert np.flatnonzero(g.mixing[5]).tolist() == [1, 5, 6, 7]
    np.testing.assert_allclose(g.mixing[g.mixing > 0], 0.25)
    assert g.messages_per_step == 8 * 3
    assert g.in_neighbours(0).tolist() == [1, 2, 4]


def test_ring_and_torus_degrees_and_messages():
    ring = build_gossip("ring", 10, 0, mixing="metropolis", p=None)
    np.testing.assert_allclose(np.diag(ring.mixing), 1 / 3)  # 1/(1+2) to each of 2 neighbours
    assert ring.messages_per_step == 20
    torus = build_graph("torus", 50, 0)  # 5 x 10 periodic grid: 4-regular
    assert {d for _, d in torus.degree()} == {4} and torus.number_of_edges() == 100


def test_disconnected_or_impossible_graphs_are_refused():
    with pytest.raises(ConfigError, match="no connected Erdos-Renyi graph"):
        build_graph("erdos_renyi", 50, 0, p=0.01)
    with pytest.raises(ConfigError, match="prime"):
        build_graph("torus", 13, 0)


def test_erdos_renyi_graph_is_seeded():
    a = build_graph("erdos_renyi", 30, 7, p=0.2)
    b = build_graph("erdos_renyi", 30, 7, p=0.2)
    c = build_graph("erdos_renyi", 30, 8, p=0.2)
    assert sorted(a.edges) == sorted(b.edges) != sorted(c.edges)


def test_check_doubly_stochastic_refuses_a_row_stochastic_matrix():
    w = np.array([[0.5, 0.5], [1.0, 0.0]])
    with pytest.raises(ValueError, match="not doubly stochastic"):
        check_doubly_stochastic(w)
