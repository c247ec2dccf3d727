"""Fairness figures of per-client accuracies: Jain's index and the worst 10%, against their
definitions computed directly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privfl.fairness import fairness_figures, jain_index, worst_fraction_mean


@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_jain_index_is_one_for_equal_shares_and_one_over_n_for_a_single_winner(n):
    assert jain_index(np.full(n, 0.37)) == pytest.approx(1.0, abs=1e-12)
    one = np.zeros(n)
    one[n // 2] = 0.8
    assert jain_index(one) == pytest.approx(1 / n, abs=1e-12)


def test_jain_index_against_its_formula_on_random_values():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.uniform(0, 1, rng.integers(2, 40))
        direct = sum(x) ** 2 / (len(x) * sum(v * v for v in x))
        assert jain_index(x) == pytest.approx(direct, rel=1e-12)
        assert 1 / len(x) - 1e-12 <= jain_index(x) <= 1 + 1e-12


def test_jain_index_refuses_negative_or_empty_values():
    with pytest.raises(ValueError, match="non-negative"):
        jain_index([0.5, -0.1])
    with pytest.raises(ValueError, match="non-empty"):
        jain_index([])


def test_worst_ten_percent_is_the_mean_of_the_ceil_ten_percent_smallest():
    rng = np.random.default_rng(1)
    for n in (1, 5, 10, 11, 19, 20, 21, 137):
        x = rng.uniform(0, 1, n)
        k = max(1, math.ceil(0.1 * n))
        direct = sum(sorted(x.tolist())[:k]) / k
        assert worst_fraction_mean(x) == pytest.approx(direct, rel=1e-12)
    # ties and a known case: 11 clients -> the 2 worst
    assert worst_fraction_mean([0.5, 0.0, 1.0, 0.25, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]) == 0.125


def test_fairness_figures_agree_with_numpy():
    acc = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    f = fairness_figures(acc)
    assert f["fed_accuracy_mean"] == pytest.approx(0.5)
    assert f["fed_accuracy_std"] == pytest.approx(np.sqrt(np.mean((acc - 0.5) ** 2)))
    assert f["fed_accuracy_worst10"] == pytest.approx(0.1)
    assert f["fed_accuracy_best10"] == pytest.approx(0.9)
    assert f["fed_accuracy_jain"] == pytest.approx(2.5**2 / (5 * float(acc @ acc)))


def test_federated_evaluation_reports_the_figures_of_its_per_client_accuracies(make_config):
    import privfl

    cfg = make_config(
        data={"clients": 10, "client_test_fraction": 0.3},
        federation={"rounds": 2, "clients_per_round": 4},
        evaluation={"federated_every": 1},
    )
    result = privfl.run(cfg, out=None, progress=False)
    for row in result.metrics:
        acc = np.array(row["fed_client_accuracy"])
        assert len(acc) == row["fed_clients"] == 10
        assert row["fed_accuracy_mean"] == pytest.approx(acc.mean())
        assert row["fed_accuracy_worst10"] == pytest.approx(acc.min())  # ceil(10% of 10) = 1
        assert row["fed_accuracy_jain"] == pytest.approx(acc.sum() ** 2 / (10 * acc @ acc))


def test_federated_evaluation_holds_out_twenty_percent_unless_told_otherwise():
    from privfl.config import config_from_dict
    from privfl.errors import ConfigError

    every = {"evaluation": {"federated_every": 5}}
    assert config_from_dict(every).data.client_test_fraction == 0.2
    assert config_from_dict({}).data.client_test_fraction == 0.0
    told = config_from_dict({**every, "data": {"client_test_fraction": 0.35}})
    assert told.data.client_test_fraction == 0.35
    with pytest.raises(ConfigError, match="client_test_fraction > 0"):
        config_from_dict({**every, "data": {"client_test_fraction": 0}})
    # A resolved config (every value written out) reads back the same.
    resolved = config_from_dict(every).to_toml_dict()
    assert config_from_dict(resolved).data.client_test_fraction == 0.2
