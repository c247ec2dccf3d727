"""Who masks with whom: the complete graph (Bonawitz et al. 2017) or SecAgg+'s random
k-regular Harary graph (Bell et al., CCS 2020), and SecAgg+'s degree and threshold.

In SecAgg+ each client agrees pairwise masks with, and Shamir-shares its secrets among, only
its ``k`` neighbours, so per-client work is ``O(k)`` instead of ``O(n)``; with
``k = O(log n)`` the server's work is ``O(n log n)``. The graph is a Harary graph ``H_{k,n}``
(ring positions ``i``, ``j`` adjacent when their circular distance is at most ``k/2``) with
node labels randomly permuted, the construction of Bell et al. (Sec. 4, "random Harary graph").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from privfl.defenses.secagg.constants import CORRECTNESS_BITS, SECURITY_BITS


@dataclass(frozen=True)
class NeighbourGraph:
    """An undirected graph on a round's clients.

    Attributes:
        ids: the clients, sorted, int64 ``(n,)``.
        adjacency: bool ``(n, n)``, symmetric, false on the diagonal; row ``i`` is
            ``ids[i]``'s neighbours.
    """

    ids: np.ndarray
    adjacency: np.ndarray

    def __post_init__(self) -> None:
        a = self.adjacency
        n = len(self.ids)
        if a.shape != (n, n) or a.dtype != bool:
            raise ValueError(f"adjacency must be bool ({n}, {n}), got {a.dtype} {a.shape}")
        if not np.array_equal(a, a.T) or a.diagonal().any():
            raise ValueError("adjacency must be symmetric with an empty diagonal")
        if np.any(np.diff(self.ids) <= 0):
            raise ValueError("ids must be sorted and distinct")

    @classmethod
    def complete(cls, ids: np.ndarray) -> NeighbourGraph:
        """Every pair of clients (the original protocol)."""
        ids = np.sort(np.asarray(ids, dtype=np.int64))
        n = len(ids)
        return cls(ids, ~np.eye(n, dtype=bool))

    @classmethod
    def harary(cls, ids: np.ndarray, k: int, rng: np.random.Generator) -> NeighbourGraph:
        """A random ``k``-regular Harary graph: clients placed on a ring in random order
        (drawn from ``rng``), each adjacent to the ``k/2`` nearest on either side.

        ``k`` must be even and positive; ``k >= n - 1`` gives the complete graph.
        """
        ids = np.sort(np.asarray(ids, dtype=np.int64))
        n = len(ids)
        if k < 2 or k % 2:
            raise ValueError(f"the Harary degree k must be even and >= 2, got {k}")
        if k >= n - 1:
            return cls.complete(ids)
        pos = rng.permutation(n)
        gap = np.abs(pos[:, None] - pos[None, :])
        ring = np.minimum(gap, n - gap)
        return cls(ids, (ring >= 1) & (ring <= k // 2))

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def is_complete(self) -> bool:
        return bool(self.adjacency.sum() == self.size * (self.size - 1))

    @property
    def max_degree(self) -> int:
        return int(self.adjacency.sum(axis=1).max()) if self.size else 0

    def index(self, cid: int) -> int:
        """The row of client ``cid``."""
        i = int(np.searchsorted(self.ids, cid))
        if i >= self.size or self.ids[i] != cid:
            raise KeyError(f"client {cid} is not in this round")
        return i

    def neighbours(self, cid: int) -> np.ndarray:
        """``cid``'s neighbours (itself excluded), sorted ids."""
        return self.ids[self.adjacency[self.index(cid)]]

    def holders(self, cid: int) -> np.ndarray:
        """The clients that hold shares of ``cid``'s secrets: its neighbours and itself."""
        return np.sort(np.append(self.neighbours(cid), cid))

    def components(self, members: np.ndarray | list[int]) -> list[np.ndarray]:
        """The connected components of the subgraph induced by ``members`` (ids of this
        graph), each a sorted int64 array, largest first (ties: smallest id first).

        Pairwise masks cancel only inside a component, so a server that unmasks a set of
        survivors split into several components learns each component's sum (Bell et al.,
        CCS 2020, need the survivors' subgraph connected). Breadth-first search with
        ``scipy.sparse.csgraph`` over the induced adjacency, ``O(m^2)`` for ``m`` members.
        """
        ids = np.unique(np.asarray(members, dtype=np.int64))
        if ids.size == 0:
            return []
        rows = np.searchsorted(self.ids, ids)
        if np.any(rows >= self.size) or np.any(self.ids[np.minimum(rows, self.size - 1)] != ids):
            raise KeyError("members must be clients of this graph")
        if self.is_complete:
            return [ids]
        sub = self.adjacency[np.ix_(rows, rows)]
        count, labels = connected_components(csr_matrix(sub), directed=False)
        parts = [ids[labels == c] for c in range(count)]
        return sorted(parts, key=lambda a: (-a.size, int(a[0])))


@dataclass(frozen=True)
class SecAggPlusParameters:
    """A SecAgg+ degree and threshold with the failure probabilities they give.

    Attributes:
        k: the graph degree (``n - 1``: the complete graph).
        t: shares (out of ``k + 1``: the neighbours and the client itself) that reconstruct a
            client's secrets.
        privacy_failure: union bound over the ``n`` clients of P[at least ``t`` of a client's
            ``k + 1`` share-holders are corrupted] (then server and colluders learn its secrets).
        correctness_failure: union bound of P[fewer than ``t`` of a client's share-holders
            survive] (then the round aborts).
        bounds_met: both are within ``2^-sigma`` and ``2^-eta``.
    """

    k: int
    t: int
    privacy_failure: float
    correctness_failure: float
    bounds_met: bool


@lru_cache(maxsize=128)
def secaggplus_parameters(
    n: int,
    *,
    dropout: float,
    corruption: float,
    security_bits: int = SECURITY_BITS,
    correctness_bits: int = CORRECTNESS_BITS,
) -> SecAggPlusParameters:
    """The smallest even degree ``k`` (and a threshold ``t``) for ``n`` clients of which a
    fraction ``dropout`` may vanish and a fraction ``corruption`` may collude with the server.

    For each candidate ``k`` a client's ``m = k + 1`` share-holders are modelled as independent
    draws (corrupted with probability ``gamma``, surviving with probability ``1 - delta``),
    and ``t`` must satisfy, with a union bound over the ``n`` clients,

        n * P[Binomial(m, gamma) >= t]     <= 2^-sigma   (no client's secrets leak),
        n * P[Binomial(m, 1 - delta) < t]  <= 2^-eta     (every needed secret is recoverable),

    and ``t > m / 2`` (so a server cannot collect both of a client's secrets from disjoint
    halves). Among valid ``t`` the smallest is taken (the widest dropout margin). This is the
    shape of Bell et al.'s analysis (CCS 2020, Sec. 4 and Appendix: ``k = O(log n)``, ``t``
    a constant fraction of ``k``) with binomial tails instead of their exact bounds. Their third
    condition (the survivors' subgraph stays connected) is not part of the choice of ``k``; it
    is checked in every round instead (:meth:`NeighbourGraph.components`): a round whose
    survivors are split aborts before any unmasking share is asked for. When no ``k < n - 1``
    qualifies, the complete graph is returned with the ``t`` that comes closest
    (``bounds_met`` false); an explicit ``k`` below the returned one is refused at config
    time (:func:`privfl.defenses.secagg.config.check_secagg_degree`).
    """
    if n < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {n}")
    if not 0 <= dropout < 1 or not 0 <= corruption < 1:
        raise ValueError("dropout and corruption must be fractions in [0, 1)")
    log_n = math.log(n)
    priv_cap = -security_bits * math.log(2) - log_n
    corr_cap = -correctness_bits * math.log(2) - log_n
    for k in [*range(2, n - 1, 2), n - 1]:
        m = k + 1
        ts = np.arange(m // 2 + 1, m + 1)
        log_priv = stats.binom.logsf(ts - 1, m, corruption)  # log P[X >= t]
        log_corr = stats.binom.logcdf(ts - 1, m, 1.0 - dropout)  # log P[X <= t - 1]
        ok = (log_priv <= priv_cap) & (log_corr <= corr_cap)
        if ok.any():
            i = int(np.flatnonzero(ok)[0])
            met = True
        elif k == n - 1:
            # The complete graph and still no valid t: the t with the smallest worst excess.
            i = int(np.argmin(np.maximum(log_priv - priv_cap, log_corr - corr_cap)))
            met = False
        else:
            continue
        return SecAggPlusParameters(
            k, int(ts[i]), _union(log_priv[i], log_n), _union(log_corr[i], log_n), met
        )
    raise AssertionError("unreachable: the loop ends with the complete graph")


def _union(log_p: float, log_n: float) -> float:
    return float(min(1.0, math.exp(log_p + log_n)))


def threshold_for(holders: int, fraction: float) -> int:
    """``t = ceil(fraction * holders)``: shares of a client's ``holders`` share-holders needed
    to reconstruct its secrets (``fraction`` is ``defense.secagg.threshold``)."""
    if holders < 1:
        raise ValueError(f"holders must be >= 1, got {holders}")
    # A tiny tolerance so that 0.6 * 10 is 6, not 7 (0.6 * 10 = 6.000000000000001).
    return max(1, min(holders, math.ceil(fraction * holders - 1e-9)))


__all__ = ["NeighbourGraph", "SecAggPlusParameters", "secaggplus_parameters", "threshold_for"]
