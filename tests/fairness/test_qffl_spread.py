"""q-FFL's claim on a toy federation where one model cannot serve everyone: q > 0 lowers the
spread of the clients' accuracies that q = 0 (FedAvg) leaves (Li et al., ICLR 2020)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import privfl
from privfl.data.base import ArrayDataset, DataBundle, Partition
from privfl.data.federated import FederatedData
from privfl.federation import Federation


def skewed(seed: int, major: int = 8, minor: int = 2) -> FederatedData:
    """Eight clients of 200 points labelled by ``x_1 > 0`` and two of 40 labelled by
    ``x_2 > 0`` (2-D Gaussian inputs; half of each client's points held out): a linear model
    fits one rule or a compromise, and FedAvg's example weights pick the majority's."""
    rng = np.random.default_rng(seed)
    xs, ys, train, test, start = [], [], [], [], 0
    for k in range(major + minor):
        n = 200 if k < major else 40
        x = rng.standard_normal((n, 2))
        xs.append(x)
        ys.append((x[:, 0 if k < major else 1] > 0).astype(np.int64))
        idx = start + np.arange(n)
        start += n
        train.append(idx[n // 2 :])
        test.append(idx[: n // 2])
    x = torch.tensor(np.concatenate(xs), dtype=torch.float32)
    y = torch.from_numpy(np.concatenate(ys))
    data = ArrayDataset(x, y)
    return FederatedData(DataBundle("synthetic", data, data, 2), Partition(train, test))


def _final(q: float, seed: int, rounds: int = 40) -> dict:
    data = skewed(seed)
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
