"""q-FFL's claim on a toy federation where one model cannot serve everyone: q > 0 lowers the
spread of the clients' accuracies that q = 0 (FedAvg) leaves (Li et al., ICLR 2020)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import privfl
from privfl.fairness.synthetic import two_rules
from privfl.federation import Federation


def _final(q: float, seed: int, rounds: int = 40) -> dict:
    data = two_rules(seed)
    n = data.num_clients
    cfg = privfl.Config(
        name="toy",
        seed=seed,
        data={"name": "synthetic", "clients": n, "client_test_fraction": 0.5},
        model={"name": "mlp", "hidden": []},
        federation={
            "rounds": rounds,
            "clients_per_round": n,
            "local_steps": 1,
            "batch_size": "full",
            "lr": 0.5,
            "server_optimizer": "qffl",
            "server_q": q,
        },
        evaluation={"every": rounds, "federated_every": rounds},
    )
    logging.disable(logging.WARNING)
    try:
        fed = Federation(cfg, data=data)
        while not fed.done:
            fed.run_round()
    finally:
        logging.disable(logging.NOTSET)
    return fed.metrics[-1]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_q_above_zero_lowers_the_spread_of_client_accuracies(seed):
    fedavg, fair = _final(0.0, seed), _final(2.0, seed)
    minority = slice(8, 10)
    acc0, acc2 = np.array(fedavg["fed_client_accuracy"]), np.array(fair["fed_client_accuracy"])
    # The minority gains, the spread falls by a clear margin, at some cost in the mean.
    assert acc2[minority].mean() > acc0[minority].mean() + 0.05
    assert fair["fed_accuracy_std"] < fedavg["fed_accuracy_std"] - 0.03
    assert fair["fed_accuracy_worst10"] >= fedavg["fed_accuracy_worst10"]
    assert fair["fed_accuracy_jain"] > fedavg["fed_accuracy_jain"]
    assert fair["fed_accuracy_mean"] < fedavg["fed_accuracy_mean"]
