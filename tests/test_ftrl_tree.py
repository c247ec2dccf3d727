"""DP-FTRL's tree (Kairouz et al. 2021): exact prefix sums at sigma = 0, the prefix noise's
variance (popcount(t) nodes), and the tree's sensitivity against nodes enumerated by hand and
against the single-participation-per-tree formula of tensorflow_privacy's
``compute_rdp_tree_restart`` (depth ``floor(log2 T) + 1`` per tree)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from privfl.defenses.dp.tree import (
    TreeAggregator,
    completed_levels,
    prefix_levels,
    squared_sensitivity_by_round,
    tree_of_round,
    worst_squared_sensitivity,
)


def _zero_noise(level: int) -> torch.Tensor:
    return torch.zeros(5, dtype=torch.float64)


@pytest.mark.parametrize("size", [1, 2, 7, 8, 13])
def test_prefix_sums_equal_the_true_ones_without_noise(size):
    rng = np.random.default_rng(size)
    leaves = torch.as_tensor(rng.normal(size=(size, 5)))
    tree = TreeAggregator(5, size)
    for t in range(1, size + 1):
        got = tree.add(leaves[t - 1], _zero_noise)
        assert torch.allclose(got, leaves[:t].sum(0), rtol=0, atol=1e-12)
        assert torch.allclose(tree.prefix(), got, rtol=0, atol=0)
    with pytest.raises(ValueError, match="full"):
        tree.add(leaves[0], _zero_noise)


def test_prefix_levels_and_completed_levels_by_hand():
    # t = 6 = 110b: [1..4] (level 2) + [5..6] (level 1); leaf 6 completes [6] and [5..6].
    assert prefix_levels(6) == [1, 2]
    assert completed_levels(6) == [0, 1]
    assert prefix_levels(7) == [0, 1, 2]
    assert completed_levels(8) == [0, 1, 2, 3]
    assert tree_of_round(7, 3) == (2, 1)
    assert tree_of_round(7, None) == (0, 7)


def test_prefix_noise_has_the_variance_of_its_nodes():
    # Zero leaves, unit node noise: the prefix at leaf t is the sum of popcount(t) nodes, so
    # its per-coordinate variance is popcount(t); 40000 coordinates estimate it to ~1.5%.
    dim, size = 40_000, 8
    gen = torch.Generator().manual_seed(0)
    tree = TreeAggregator(dim, size)
    for t in range(1, size + 1):
        prefix = tree.add(
            torch.zeros(dim), lambda h: torch.randn(dim, generator=gen, dtype=torch.float64)
        )
        nodes = bin(t).count("1")
        assert prefix.var().item() == pytest.approx(nodes, rel=0.05), t
    # and prefixes that share a node are correlated: prefix(7) - prefix(6) is node [7] alone
    # (variance 1), not the sum of three fresh nodes.


def test_consecutive_prefixes_share_nodes():
    dim = 40_000
    gen = torch.Generator().manual_seed(1)
    tree = TreeAggregator(dim, 8)
    prefixes = [
        tree.add(torch.zeros(dim), lambda h: torch.randn(dim, generator=gen, dtype=torch.float64))
        for _ in range(7)
    ]
    # prefix(7) = [1..4] + [5,6] + [7], prefix(6) = [1..4] + [5,6]: the difference is one node.
    assert (prefixes[6] - prefixes[5]).var().item() == pytest.approx(1.0, rel=0.05)
    # prefix(4) = [1..4], prefix(3) = [1,2] + [3]: no node in common, variance 1 + 2.
    assert (prefixes[3] - prefixes[2]).var().item() == pytest.approx(3.0, rel=0.05)


def test_state_dict_round_trip_gives_the_same_prefixes():
    leaves = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a, b = TreeAggregator(3, 8), TreeAggregator(3, 8)
    noise = lambda h: torch.full((3,), float(h + 1), dtype=torch.float64)  # noqa: E731
    for t in range(3):
        a.add(leaves[t], noise)
    b.load_state_dict(a.state_dict())
    for t in range(3, 6):
        assert torch.equal(a.add(leaves[t], noise), b.add(leaves[t], noise))


# ---------------------------------------------------------------------- sensitivity


def _pattern(rounds: int, users: dict[int, list[int]]) -> np.ndarray:
    p = np.zeros((rounds, len(users)), dtype=bool)
    for u, ts in users.items():
        p[np.asarray(ts) - 1, u] = True
    return p


def test_sensitivity_of_nodes_enumerated_by_hand():
    # T = 4, nodes [1] [2] [3] [4] [1,2] [3,4] [1..4].
    # user 0 at rounds 1, 3: counts 1 0 1 0 | 1 1 | 2 -> by round: 1, 1+1=2 ([1,2] ends at 2),
    #   3 ([3]), 3 + 1 ([3,4]) + 4 ([1..4]) = 8.
    # user 1 at rounds 1, 2: counts 1 1 0 0 | 2 0 | 2 -> 1, 1+1+4 = 6, 6, 6+4 = 10.
    # user 2 at round 4 only: 0, 0, 0, 1 + 1 + 1 = 3.
    p = _pattern(4, {0: [1, 3], 1: [1, 2], 2: [4]})
    d = squared_sensitivity_by_round(p)
    assert d[:, 0].tolist() == [1, 2, 3, 8]
    assert d[:, 1].tolist() == [1, 6, 6, 10]
    assert d[:, 2].tolist() == [0, 0, 0, 3]
    assert worst_squared_sensitivity(p).tolist() == [1, 6, 6, 10]


def test_sensitivity_of_a_partial_tree_by_hand():
    # T = 6 (no node [5..8]): user at rounds 2, 5, 6. Nodes completed: [1]..[6], [1,2], [3,4],
    # [5,6], [1..4]. Counts: [2]=1, [5]=1, [6]=1, [1,2]=1, [5,6]=2, [1..4]=1 -> 1+1+1+1+4+1 = 9.
    p = _pattern(6, {0: [2, 5, 6]})
    d = squared_sensitivity_by_round(p)[:, 0]
    assert d.tolist() == [0, 2, 2, 3, 4, 9]


def test_restarts_sum_the_trees():
    # restart every 3: trees {1,2,3} and {4,5,6}; user at 2, 3, 4.
    # tree 1 nodes [1] [2] [3] [1,2]: 0 1 1 1 -> 3 by round 3; tree 2 nodes [4] [5] [6] [4,5]:
    # 1 0 0 1, [4] released at round 4 (3 + 1), [4,5] at round 5 (4 + 1).
    p = _pattern(6, {0: [2, 3, 4]})
    d = squared_sensitivity_by_round(p, restart_every=3)[:, 0]
    assert d.tolist() == [0, 2, 3, 4, 5, 5]
    # Without restarts, by round 4: [2] [3] [4] 1 each, [1,2] 1, [3,4] 2^2, [1..4] 3^2.
    one = squared_sensitivity_by_round(p)[:, 0]
    assert one[3] == 1 + 1 + 1 + 1 + 4 + 9


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 8, 9, 31, 32])
def test_one_participation_per_tree_matches_tensorflow_privacy_restart_formula(steps):
    # compute_rdp_tree_restart: each tree adds floor(log2 steps) + 1 (a leaf's complete
    # ancestors, the worst leaf being the first); three epochs, each user once per epoch.
    epochs, users = 3, steps
    p = np.zeros((epochs * steps, users), dtype=bool)
    rng = np.random.default_rng(steps)
    for e in range(epochs):
        order = rng.permutation(users)
        p[e * steps + np.arange(steps), order] = True
    worst = worst_squared_sensitivity(p, restart_every=steps)[-1]
    assert worst <= epochs * (math.floor(math.log2(steps)) + 1)
    # the user at leaf 1 of every tree reaches it
    q = np.zeros((epochs * steps, 1), dtype=bool)
    q[np.arange(epochs) * steps, 0] = True
    assert worst_squared_sensitivity(q, restart_every=steps)[-1] == epochs * (
        math.floor(math.log2(steps)) + 1
    )
