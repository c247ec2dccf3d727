"""The malicious clients: a fixed, seeded share of the population."""

from __future__ import annotations

import numpy as np
import pytest

from privfl.attacks.poisoning import PoisoningThreat, choose_malicious
from privfl.attacks.poisoning.config import Knowledge, malicious_count


@pytest.mark.parametrize(
    ("fraction", "clients", "count"),
    [(0.2, 50, 10), (0.1, 10, 1), (0.25, 10, 3), (0.04, 50, 2), (0.05, 10, 1), (0.01, 10, 0)],
)
def test_count_rounds_to_nearest(fraction, clients, count):
    assert malicious_count(fraction, clients) == count


def test_fixed_seeded_sorted_distinct():
    a = choose_malicious(0, 50, 0.2)
    assert a.dtype == np.int64 and len(a) == 10 and np.array_equal(a, np.unique(a))
    assert np.array_equal(a, choose_malicious(0, 50, 0.2))
    assert not np.array_equal(a, choose_malicious(1, 50, 0.2))
    assert a.min() >= 0 and a.max() < 50


def test_the_draw_is_uniform_over_clients():
    # Over many seeds every client is malicious about fraction of the time.
    hits = np.zeros(20)
    for seed in range(2000):
        hits[choose_malicious(seed, 20, 0.25)] += 1
    freq = hits / 2000
    assert np.all(np.abs(freq - 0.25) < 0.04)


def test_threat_model_rows_and_rounds():
    t = PoisoningThreat(np.array([2, 5, 9]), 10, start_round=3, knowledge=Knowledge.PARTIAL)
    ids = np.array([1, 2, 3, 9])
    assert t.rows(ids).tolist() == [False, True, False, True]
    assert t.attackers(ids, 2).tolist() == [] and t.attackers(ids, 3).tolist() == [2, 9]
    assert [t.is_malicious(c) for c in range(10)] == [c in (2, 5, 9) for c in range(10)]
    assert t.to_record()["knowledge"] == "partial"
