"""The communication graph of a decentralized run and its mixing matrix.

A mixing matrix ``W`` (``n x n``) says how a node averages what it receives: after local
training node ``i`` holds ``sum_j W_ij x_j``. D-PSGD (Lian et al., NeurIPS 2017, Assumption 1)
needs ``W`` doubly stochastic (rows and columns sum to one) on a connected graph, so that the
average of the nodes' models is preserved by gossip and the nodes reach consensus; every matrix
built here is checked to be (:func:`check_doubly_stochastic`). The graphs come from networkx;
the weights are written here (no library builds gossip weights), following:

- Metropolis-Hastings: ``W_ij = 1 / (1 + max(d_i, d_j))`` on each edge, the rest of row ``i``
  on ``W_ii`` (Xiao and Boyd, "Fast linear iterations for distributed averaging", 2004);
- uniform (max-degree): ``W_ij = 1 / (d_max + 1)`` on each edge, the rest on ``W_ii``; on a
  regular graph every neighbour and the node itself weigh ``1 / (d + 1)``, on the complete
  graph ``W = 11^T / n`` (exact averaging);
- the static exponential graph of Ying et al., "Exponential Graph is Provably Efficient for
  Decentralized Deep Training", NeurIPS 2021 (used by Assran et al., "Stochastic Gradient
  Push", ICML 2019, in its time-varying one-peer form): node ``i`` averages itself and the
  ``tau`` nodes ``i + 2^k mod n`` (``2^k < n``) with weight ``1 / (tau + 1)`` each; directed,
  circulant, hence doubly stochastic. With ``mixing = "metropolis"`` the exponential graph is
  taken undirected (``i ~ i +- 2^k``) and weighted like the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from privfl.errors import ConfigError
from privfl.seeding import derive_seed

#: Draws of an Erdos-Renyi graph tried before a disconnected one is refused.
ER_ATTEMPTS = 100


@dataclass(frozen=True)
class Gossip:
    """A topology's graph and mixing matrix.

    Attributes:
        topology: the ``[federation] topology`` name.
        mixing: float64 ``(n, n)``, doubly stochastic; row ``i`` holds node ``i``'s weights.
        graph: the communication graph (directed for Ying et al.'s exponential weights).
    """

    topology: str
    mixing: np.ndarray
    graph: nx.Graph

    @property
    def num_nodes(self) -> int:
        """Number of nodes ``n``."""
        return len(self.mixing)

    def in_neighbours(self, node: int) -> np.ndarray:
        """The nodes whose models ``node`` receives (``W_node,j > 0``, ``j != node``),
        ascending: what a curious ``node`` sees each gossip step."""
        row = self.mixing[node].copy()
        row[node] = 0.0
        return np.flatnonzero(row > 0)

    @property
    def messages_per_step(self) -> int:
        """Model vectors sent in one gossip step, all nodes together: the off-diagonal
        non-zeros of ``W`` (each ``W_ij > 0`` is ``j`` sending its model to ``i``)."""
        return int(np.count_nonzero(self.mixing) - np.count_nonzero(np.diag(self.mixing)))

    @property
    def spectral_gap(self) -> float:
        """``1 - |lambda_2(W)|``, the second largest eigenvalue modulus (the consensus rate
        of Lian et al. 2017's rho; 1 for exact averaging, 0 for a disconnected graph)."""
        moduli = np.sort(np.abs(np.linalg.eigvals(self.mixing)))[::-1]
        return float(1.0 - moduli[1]) if len(moduli) > 1 else 1.0


def build_graph(topology: str, n: int, seed: int, p: float | None = None) -> nx.Graph:
    """The undirected communication graph of ``topology`` on ``n`` nodes ``0..n-1``.

    ``torus``: a ``rows x cols`` periodic grid with ``rows`` the largest factor of ``n`` not
    above ``sqrt(n)``; ``erdos_renyi``: G(n, p) drawn from the stream ``(seed, "topology",
    attempt)`` until connected (at most :data:`ER_ATTEMPTS` draws); ``exponential``: ``i ~ i
    +- 2^k``. Raises :class:`ConfigError` when the graph cannot be built connected.
    """
    if topology == "ring":
        graph = nx.cycle_graph(n)
    elif topology == "complete":
        graph = nx.complete_graph(n)
    elif topology == "torus":
        rows = max(r for r in range(1, int(np.sqrt(n)) + 1) if n % r == 0)
        if rows < 2:
            raise ConfigError(
                f"federation.topology = 'torus' needs data.clients = rows x cols with rows >= 2; "
                f"{n} is prime (use 'ring', or another number of clients)"
            )
        grid = nx.grid_2d_graph(rows, n // rows, periodic=True)
        graph = nx.convert_node_labels_to_integers(grid, ordering="sorted")
    elif topology == "exponential":
        graph = nx.Graph()
        graph.add_nodes_from(range(n))
        for i in range(n):
            graph.add_edges_from((i, (i + h) % n) for h in _hops(n))
    elif topology == "erdos_renyi":
        if p is None:
            raise ConfigError("topology = 'erdos_renyi' needs federation.decentralized.p")
        for attempt in range(ER_ATTEMPTS):
            graph = nx.erdos_renyi_graph(n, p, seed=derive_seed(seed, "topology", attempt))
            if nx.is_connected(graph):
                return graph
        raise ConfigError(
            f"federation.decentralized.p = {p:g}: no connected Erdos-Renyi graph on {n} nodes in "
            f"{ER_ATTEMPTS} draws; raise p above the connectivity threshold ln(n)/n = "
            f"{np.log(n) / n:.3g}"
        )
    else:
        raise ConfigError(f"federation.topology = {topology!r} is not a peer-to-peer graph")
    graph.remove_edges_from(nx.selfloop_edges(graph))
    if n > 0 and not nx.is_connected(graph):  # cannot happen for the graphs above
        raise ConfigError(f"topology {topology!r} on {n} nodes is not connected")
    return graph


def _hops(n: int) -> list[int]:
    """The exponential graph's hops ``2^k < n`` (Ying et al. 2021)."""
    return [1 << k for k in range(max(n - 1, 1).bit_length()) if (1 << k) < n]


def metropolis_weights(graph: nx.Graph) -> np.ndarray:
    """Metropolis-Hastings weights ``W_ij = 1 / (1 + max(d_i, d_j))`` on the edges of the
    undirected ``graph``, the rest of each row on the diagonal (Xiao and Boyd 2004):
    symmetric, hence doubly stochastic."""
    n = graph.number_of_nodes()
    adj = nx.to_numpy_array(graph, nodelist=range(n), weight=None) > 0
    deg = adj.sum(axis=1)
    w = np.where(adj, 1.0 / (1.0 + np.maximum.outer(deg, deg)), 0.0)
    w[np.diag_indices(n)] = 1.0 - w.sum(axis=1)
    return w


def uniform_weights(graph: nx.Graph) -> np.ndarray:
    """Max-degree weights ``W_ij = 1 / (d_max + 1)`` on the edges of ``graph``, the rest of
    each row on the diagonal: symmetric and doubly stochastic; ``11^T / n`` on a complete
    graph."""
    n = graph.number_of_nodes()
    adj = nx.to_numpy_array(graph, nodelist=range(n), weight=None) > 0
    w = adj / (1.0 + adj.sum(axis=1).max(initial=0))
    w[np.diag_indices(n)] = 1.0 - w.sum(axis=1)
    return w


def exponential_weights(n: int) -> np.ndarray:
    """Ying et al. 2021's static exponential graph: ``W_ij = 1 / (tau + 1)`` when ``j = i``
    or ``j - i mod n`` is a power of two (``tau`` = the number of hops ``2^k < n``);
    circulant, hence doubly stochastic."""
    hops = _hops(n) if n > 1 else []
    w = np.eye(n) / (len(hops) + 1)
    idx = np.arange(n)
    for h in hops:
        w[idx, (idx + h) % n] = 1.0 / (len(hops) + 1)
    return w


def check_doubly_stochastic(w: np.ndarray, tol: float = 1e-12) -> None:
    """Raise ``ValueError`` unless ``w`` is non-negative with unit row and column sums."""
    if (w < -tol).any():
        raise ValueError("mixing matrix has negative weights")
    rows, cols = np.abs(w.sum(axis=1) - 1).max(), np.abs(w.sum(axis=0) - 1).max()
    if max(rows, cols) > tol * len(w):
        raise ValueError(
            f"mixing matrix is not doubly stochastic (rows off by {rows:.2g}, "
            f"columns by {cols:.2g})"
        )


def build_gossip(topology: str, n: int, seed: int, *, mixing: str, p: float | None) -> Gossip:
    """The graph and doubly stochastic mixing matrix of ``topology`` on ``n`` nodes with the
    ``mixing`` rule (``"metropolis"`` or ``"uniform"``; see the module docstring)."""
    if topology == "exponential" and mixing == "uniform":
        w = exponential_weights(n)
        graph = nx.from_numpy_array(w - np.diag(np.diag(w)), create_using=nx.DiGraph)
    else:
        graph = build_graph(topology, n, seed, p)
        w = metropolis_weights(graph) if mixing == "metropolis" else uniform_weights(graph)
    check_doubly_stochastic(w)
    return Gossip(topology, w, graph)


__all__ = [
    "ER_ATTEMPTS",
    "Gossip",
    "build_gossip",
    "build_graph",
    "check_doubly_stochastic",
    "exponential_weights",
    "metropolis_weights",
    "uniform_weights",
]
