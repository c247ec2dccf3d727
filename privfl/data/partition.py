"""Partitioners: how the training examples are split among clients.

Each partitioner is a pure function of the labels (and writer ids for ``natural``) and an
explicit numpy Generator, returning one index array per client. Every example is assigned
to at most one client; iid, dirichlet and shards assign every example exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from privfl.errors import ConfigError
from privfl.registry import Registry

Partitioner = Callable[..., list[np.ndarray]]


def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, then split into ``num_clients`` nearly equal parts (sizes differ by <= 1).

    >>> labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    >>> parts = iid(labels, 3, np.random.default_rng(0))
    >>> [len(p) for p in parts]
    [4, 3, 3]
    >>> sorted(np.concatenate(parts).tolist()) == list(range(10))  # every example once
    True
    """
    _check_enough(len(labels), num_clients, "iid", f"data.clients={num_clients}")
    return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), num_clients)]


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    alpha: float,
    min_examples: int = 1,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Label-skewed split: for each class ``c``, proportions ``p_c ~ Dir(alpha * 1_K)`` over the
    ``K`` clients decide how that class's examples are divided (Hsu et al. 2019, arXiv
    1909.06335; the sampling loop of Li et al. 2022 NIID-Bench). Small alpha: each client holds
    few classes; alpha -> inf: the IID label mix. Draws are repeated until every client holds
    at least ``min_examples`` examples.

    At alpha = 0.1, five clients share ten classes of 100 examples very unevenly; each
    example still goes to exactly one client:

    >>> labels = np.repeat(np.arange(10), 100)
    >>> parts = dirichlet(labels, 5, np.random.default_rng(0), alpha=0.1)
    >>> [len(p) for p in parts]
    [105, 29, 394, 204, 268]
    >>> [len(np.unique(labels[p])) for p in parts]  # classes held by each client
    [2, 5, 8, 6, 9]
    >>> np.unique(np.concatenate(parts)).size
    1000
    """
    if alpha <= 0:
        raise ConfigError(f"data.alpha must be > 0, got {alpha}")
    _check_enough(
        len(labels),
        num_clients * max(min_examples, 1),
        "dirichlet",
        f"data.clients={num_clients} x data.min_examples={min_examples}",
    )
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p) * len(idx)).astype(np.int64)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(o) for o in out) >= min_examples:
            return out
    raise ConfigError(
        f"dirichlet(alpha={alpha}) left a client with fewer than data.min_examples={min_examples} "
        f"examples in {max_tries} draws; raise alpha, lower min_examples or use fewer clients"
    )


def shards(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, *, shards_per_client: int
) -> list[np.ndarray]:
    """McMahan et al. 2017 pathological non-IID: sort by label, cut into
    ``num_clients * shards_per_client`` equal shards, give each client ``shards_per_client``
    random shards (so most clients see at most that many classes).

    >>> labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    >>> [p.tolist() for p in shards(labels, 2, np.random.default_rng(0), shards_per_client=2)]
    [[0, 1, 2, 6, 7], [3, 4, 5, 8, 9]]
    """
    n_shards = num_clients * shards_per_client
    _check_enough(
        len(labels),
        n_shards,
        "shards",
        f"data.clients={num_clients} x data.shards_per_client={shards_per_client}",
    )
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, n_shards)
    owner = rng.permutation(n_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row])) for row in owner]


def natural(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, *, groups: np.ndarray | None
) -> list[np.ndarray]:
    """The data set's own split: one client per writer/user (LEAF). With more writers than
    ``num_clients``, a seeded random subset of writers is used; examples of unused writers are
    left out."""
    if groups is None:
        raise ConfigError("data.partition='natural' needs a data set with writer ids (femnist)")
    writers = np.unique(groups)
    if num_clients > len(writers):
        raise ConfigError(
            f"data.clients={num_clients} but the data set has only {len(writers)} writers "
            "for partition='natural'"
        )
    chosen = np.sort(rng.choice(writers, size=num_clients, replace=False))
    return [np.flatnonzero(groups == w) for w in chosen]


def _check_enough(n: int, needed: int, name: str, fields: str) -> None:
    if n < needed:
        raise ConfigError(
            f"{name} partition needs at least {needed} training examples ({fields}), have {n}"
        )


PARTITIONERS: Registry[str, Partitioner] = Registry.of(
    "data.partition",
    (("iid", iid), ("dirichlet", dirichlet), ("shards", shards), ("natural", natural)),
)


def split_local_test(
    indices: list[np.ndarray], fraction: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hold out ``fraction`` of each client's examples (at least one training example stays)
    for federated evaluation. Returns ``(train_indices, test_indices)``.

    >>> clients = [np.arange(8), np.array([8])]  # a client of one example keeps it to train on
    >>> train, test = split_local_test(clients, 0.25, np.random.default_rng(0))
    >>> [len(t) for t in train], [len(t) for t in test]
    ([6, 1], [2, 0])
    """
    train, test = [], []
    for idx in indices:
        k = min(int(round(fraction * len(idx))), len(idx) - 1) if fraction > 0 else 0
        perm = rng.permutation(idx)
        test.append(np.sort(perm[:k]))
        train.append(np.sort(perm[k:]))
    return train, test


__all__ = ["PARTITIONERS", "dirichlet", "iid", "natural", "shards", "split_local_test"]
