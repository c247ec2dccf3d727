"""Tests of privfl/data/partition.py: coverage, sizes, label skew, seeding and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.data.partition import dirichlet, iid, natural, shards, split_local_test
from privfl.errors import ConfigError

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def label_arrays(draw: st.DrawFn) -> np.ndarray:
    """Random labels: 50..400 examples over 2..10 classes (some classes may be absent)."""
    n = draw(st.integers(50, 400))
    classes = draw(st.integers(2, 10))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, classes, size=n)


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    """Every example 0..n-1 is in exactly one part."""
    allidx = np.concatenate(parts)
    assert len(allidx) == n
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n))


# ---------------------------------------------------------------------------- properties


@SETTINGS
@given(labels=label_arrays(), num_clients=st.integers(1, 20), seed=st.integers(0, 2**32 - 1))
def test_iid_covers_every_example_once_with_sizes_within_one(labels, num_clients, seed):
    parts = iid(labels, num_clients, np.random.default_rng(seed))

    assert len(parts) == num_clients
    assert_exact_cover(parts, len(labels))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@SETTINGS
@given(
    labels=label_arrays(),
    num_clients=st.integers(1, 8),
    alpha=st.floats(0.5, 10.0),
    min_examples=st.integers(1, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_covers_every_example_once_and_respects_min_examples(
    labels, num_clients, alpha, min_examples, seed
):
    parts = dirichlet(
        labels, num_clients, np.random.default_rng(seed), alpha=alpha, min_examples=min_examples
    )

    assert len(parts) == num_clients
    assert_exact_cover(parts, len(labels))
    assert min(len(p) for p in parts) >= min_examples


@SETTINGS
@given(
    labels=label_arrays(),
    num_clients=st.integers(1, 10),
    shards_per_client=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_shards_covers_every_example_once_with_shard_sized_clients(
    labels, num_clients, shards_per_client, seed
):
    parts = shards(
        labels, num_clients, np.random.default_rng(seed), shards_per_client=shards_per_client
    )

    assert len(parts) == num_clients
    assert_exact_cover(parts, len(labels))
    # Shards have floor(n / S) or ceil(n / S) examples, so a client of k shards lies between.
    n_shards = num_clients * shards_per_client
    lo, hi = len(labels) // n_shards, -(-len(labels) // n_shards)
    for p in parts:
        assert shards_per_client * lo <= len(p) <= shards_per_client * hi


@st.composite
def aligned_shard_cases(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """(num_clients, shards_per_client, shard_size, num_classes) with the number of shards a
    multiple of the number of classes, so each class block is a whole number of shards."""
    num_clients = draw(st.integers(1, 8))
    shards_per_client = draw(st.integers(1, 4))
    shard_size = draw(st.integers(1, 10))
    n_shards = num_clients * shards_per_client
    divisors = [c for c in range(2, 11) if n_shards % c == 0] or [1]
    num_classes = draw(st.sampled_from(divisors))
    return num_clients, shards_per_client, shard_size, num_classes


@SETTINGS
@given(case=aligned_shard_cases(), seed=st.integers(0, 2**32 - 1))
def test_shards_on_sorted_class_blocks_gives_whole_shards_and_few_classes(case, seed):
    # Prepare: labels already sorted in equal class blocks, each block = whole shards, so
    # shard j is exactly the positions [j * size, (j + 1) * size).
    num_clients, spc, size, num_classes = case
    n = num_clients * spc * size
    labels = np.repeat(np.arange(num_classes), n // num_classes)

    # Execute
    parts = shards(labels, num_clients, np.random.default_rng(seed), shards_per_client=spc)

    # Assert: each client holds exactly spc complete shards, hence at most spc classes.
    for p in parts:
        shard_ids, counts = np.unique(p // size, return_counts=True)
        assert len(shard_ids) == spc
        assert np.all(counts == size)
        assert len(np.unique(labels[p])) <= spc


def test_shards_on_shuffled_class_blocks_gives_at_most_shards_per_client_classes():
    # 10 classes x 60 examples, shuffled; 20 clients x 3 shards of 10 -> each shard is one
    # class (6 shards per class), so each client sees at most 3 classes.
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(10), 60))

    parts = shards(labels, 20, np.random.default_rng(1), shards_per_client=3)

    assert_exact_cover(parts, len(labels))
    assert max(len(np.unique(labels[p])) for p in parts) <= 3
    # and the split is not trivial: some client does see more than one class
    assert max(len(np.unique(labels[p])) for p in parts) > 1


# ---------------------------------------------------------------------------- label skew


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def test_dirichlet_with_huge_alpha_matches_the_global_label_mix():
    # 10 classes x 1000 examples over 5 clients. Under Dir(1e4 * 1_5) each share p_{c,k} has
    # mean 0.2 and sd sqrt(0.2 * 0.8 / (5e4 + 1)) ~= 1.8e-3, i.e. about 1.8 examples of the
    # ~200 a client gets per class, plus at most 1 from flooring the cut points. With 10
    # classes the client's total-variation distance to the global mix is then about
    # 0.5 * 10 * (1.8 * 0.8 + 1) / 2000 ~= 0.006; 0.03 is a > 5x margin (and a draw with
    # alpha = 1 lands near 0.2, so the bound does discriminate).
    labels = np.repeat(np.arange(10), 1000)
    global_mix = np.bincount(labels, minlength=10) / len(labels)

    for seed in range(3):
        parts = dirichlet(labels, 5, np.random.default_rng(seed), alpha=1e4)
        for p in parts:
            mix = np.bincount(labels[p], minlength=10) / len(p)
            assert total_variation(mix, global_mix) < 0.03


def test_dirichlet_with_alpha_one_is_far_from_the_global_label_mix():
    # The counterpart of the test above: the TV bound 0.03 is not trivially met.
    labels = np.repeat(np.arange(10), 1000)
    global_mix = np.bincount(labels, minlength=10) / len(labels)

    parts = dirichlet(labels, 5, np.random.default_rng(0), alpha=1.0)

    tvs = [
        total_variation(np.bincount(labels[p], minlength=10) / len(p), global_mix) for p in parts
    ]
    assert max(tvs) > 0.1


def test_dirichlet_small_alpha_gives_clearly_fewer_classes_per_client():
    # 10 classes x 100 examples, 10 clients. alpha = 100: shares ~0.1 +- 0.01, every client
    # gets ~10 of each class -> 10 classes. alpha = 0.05: each class's mass sits on a few
    # clients (observed mean ~3.7). Averaged over 5 seeds the gap must be at least 4 classes.
    labels = np.repeat(np.arange(10), 100)

    def mean_classes(alpha: float) -> float:
        counts = [
            len(np.unique(labels[p]))
            for seed in range(5)
            for p in dirichlet(labels, 10, np.random.default_rng(seed), alpha=alpha)
        ]
        return float(np.mean(counts))

    low, high = mean_classes(0.05), mean_classes(100.0)

    assert high == pytest.approx(10.0, abs=0.1)
    assert low <= high - 4


# ---------------------------------------------------------------------------- seeding

SEEDED = [
    pytest.param(iid, {}, id="iid"),
    pytest.param(dirichlet, {"alpha": 0.5}, id="dirichlet"),
    pytest.param(shards, {"shards_per_client": 2}, id="shards"),
]


@pytest.mark.parametrize(("fn", "kwargs"), SEEDED)
def test_same_seed_same_partition_different_seed_different(fn, kwargs):
    labels = np.random.default_rng(0).integers(0, 10, size=300)

    a = fn(labels, 7, np.random.default_rng(42), **kwargs)
    b = fn(labels, 7, np.random.default_rng(42), **kwargs)
    c = fn(labels, 7, np.random.default_rng(43), **kwargs)

    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_natural_same_seed_same_writers_different_seed_different():
    groups = np.repeat(np.arange(30), 4)
    labels = np.zeros(len(groups), dtype=np.int64)

    a = natural(labels, 5, np.random.default_rng(0), groups=groups)
    b = natural(labels, 5, np.random.default_rng(0), groups=groups)
    c = natural(labels, 5, np.random.default_rng(1), groups=groups)

    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("alpha", [0.0, -0.5])
def test_dirichlet_rejects_non_positive_alpha(alpha):
    labels = np.arange(100) % 10
    with pytest.raises(ConfigError, match=r"data\.alpha"):
        dirichlet(labels, 5, np.random.default_rng(0), alpha=alpha)


@pytest.mark.parametrize(
    ("fn", "num_clients", "kwargs", "field"),
    [
        pytest.param(iid, 11, {}, r"data\.clients", id="iid"),
        pytest.param(dirichlet, 11, {"alpha": 1.0}, r"data\.clients", id="dirichlet"),
        pytest.param(shards, 4, {"shards_per_client": 3}, r"data\.shards_per_client", id="shards"),
    ],
)
def test_too_few_examples_is_a_config_error_naming_the_field(fn, num_clients, kwargs, field):
    labels = np.arange(10) % 2  # 10 examples: fewer than the clients (or shards) asked for
    with pytest.raises(ConfigError, match=field):
        fn(labels, num_clients, np.random.default_rng(0), **kwargs)


def test_dirichlet_min_examples_beyond_the_data_is_a_config_error():
    # 10 clients x 6 examples > 50 examples: impossible whatever the draw.
    labels = np.arange(50) % 5
    with pytest.raises(ConfigError, match=r"data\.min_examples"):
        dirichlet(labels, 10, np.random.default_rng(0), alpha=1.0, min_examples=6)


def test_dirichlet_min_examples_never_met_in_draws_is_a_config_error():
    # 100 examples, 10 clients, min_examples = 10 needs an exactly even split, which
    # Dir(0.01) essentially never gives.
    labels = np.arange(100) % 10
    with pytest.raises(ConfigError, match=r"data\.min_examples"):
        dirichlet(labels, 10, np.random.default_rng(0), alpha=0.01, min_examples=10, max_tries=20)


def test_natural_without_groups_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data\.partition"):
        natural(np.zeros(10), 2, np.random.default_rng(0), groups=None)


def test_natural_with_more_clients_than_writers_is_a_config_error():
    groups = np.repeat(np.arange(3), 5)
    with pytest.raises(ConfigError, match=r"data\.clients=4.*only 3 writers"):
        natural(np.zeros(15), 4, np.random.default_rng(0), groups=groups)


# ---------------------------------------------------------------------------- natural


@pytest.mark.parametrize("num_clients", [1, 5, 12])
def test_natural_gives_each_client_exactly_one_whole_writer(num_clients):
    # 12 writers with different sizes, interleaved in the data set.
    rng = np.random.default_rng(3)
    groups = rng.permutation(np.repeat(np.arange(100, 112), np.arange(1, 13)))
    labels = np.zeros(len(groups), dtype=np.int64)

    parts = natural(labels, num_clients, np.random.default_rng(0), groups=groups)

    assert len(parts) == num_clients
    writers = []
    for p in parts:
        ws = np.unique(groups[p])
        assert len(ws) == 1
        # all of that writer's examples, nothing else
        np.testing.assert_array_equal(np.sort(p), np.flatnonzero(groups == ws[0]))
        writers.append(int(ws[0]))
    assert len(set(writers)) == num_clients


# ---------------------------------------------------------------------------- split_local_test


@SETTINGS
@given(
    sizes=st.lists(st.integers(0, 50), min_size=1, max_size=8),
    fraction=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_local_test_is_a_disjoint_split_respecting_the_fraction(sizes, fraction, seed):
    # Prepare: clients with disjoint, non-contiguous index sets.
    offsets = np.cumsum([0, *sizes])
    indices = [3 * np.arange(a, b) + 1 for a, b in zip(offsets[:-1], offsets[1:], strict=True)]

    # Execute
    train, test = split_local_test(indices, fraction, np.random.default_rng(seed))

    # Assert
    assert len(train) == len(test) == len(indices)
    for idx, tr, te in zip(indices, train, test, strict=True):
        assert len(np.intersect1d(tr, te)) == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.sort(idx))
        n = len(idx)
        if n == 0:
            continue
        assert len(tr) >= 1
        # the held-out share is fraction * n rounded, unless that would leave no training data
        assert abs(len(te) - fraction * n) <= 0.5 + 1e-9 or len(tr) == 1


def test_split_local_test_zero_fraction_keeps_everything_for_training():
    indices = [np.array([5, 2, 9]), np.array([1])]

    train, test = split_local_test(indices, 0.0, np.random.default_rng(0))

    assert [t.tolist() for t in train] == [[2, 5, 9], [1]]
    assert all(len(t) == 0 for t in test)


def test_split_local_test_hand_case():
    # 10 examples at 0.25 -> round(2.5) = 2 held out (Python rounds half to even).
    train, test = split_local_test([np.arange(10)], 0.25, np.random.default_rng(0))
    assert (len(train[0]), len(test[0])) == (8, 2)

    # 2 examples at 0.9 -> round(1.8) = 2, capped to 1 so one training example remains.
    train, test = split_local_test([np.array([3, 7])], 0.9, np.random.default_rng(0))
    assert (len(train[0]), len(test[0])) == (1, 1)
