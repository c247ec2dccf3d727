"""Synthetic(alpha, beta): the heterogeneous federated data set of Li et al. (FedProx, MLSys
2020) that q-FFL's experiments use (Li, Sanjabi, Beirami and Smith, ICLR 2020), generated as
the reference code does (github.com/litian96/fair_flearn, ``data/synthetic/
generate_synthetic.py``), with numpy's seeded Generator instead of the global state:

- device ``k`` holds ``floor(lognormal(4, 2)) + 50`` examples (a power law of sizes);
- ``u_k ~ N(0, alpha)``, ``W_k ~ N(u_k, 1)`` of shape ``(dimension, classes)``, ``b_k ~ N(u_k,
  1)``: each device labels with its own model (concept shift, stronger with ``alpha``);
- ``B_k ~ N(0, beta)``, ``v_k ~ N(B_k, 1)`` per coordinate, ``x ~ N(v_k, Sigma)`` with
  ``Sigma = diag(j^-1.2)``: each device's inputs differ too (stronger with ``beta``);
- ``y = argmax(W_k^T x + b_k)``.

A single global model cannot fit every device, so how it trades devices off is what q changes.
"""

from __future__ import annotations

import numpy as np
import torch

from privfl.data.base import ArrayDataset, DataBundle, Partition
from privfl.data.federated import FederatedData


def synthetic_federation(
    alpha: float,
    beta: float,
    *,
    devices: int = 100,
    dimension: int = 60,
    classes: int = 10,
    test_fraction: float = 0.2,
    max_examples: int | None = None,
    seed: int = 0,
) -> FederatedData:
    """Synthetic(alpha, beta) split among ``devices`` clients, each keeping ``test_fraction``
    of its examples as its own held-out data (federated evaluation); the central test set is
    the union of those hold-outs.

    Args:
        max_examples: caps a device's examples (the lognormal tail reaches tens of thousands);
            None keeps the reference code's sizes.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(4, 2, devices).astype(int) + 50
    if max_examples is not None:
        sizes = np.minimum(sizes, max_examples)
    mean_w = rng.normal(0, alpha, devices)
    big_b = rng.normal(0, beta, devices)
    cov = np.power(np.arange(1, dimension + 1), -1.2)
    xs, ys = [], []
    for k in range(devices):  # a handful of devices; each draw is vectorized
        v = rng.normal(big_b[k], 1, dimension)
        w = rng.normal(mean_w[k], 1, (dimension, classes))
        b = rng.normal(mean_w[k], 1, classes)
        x = v + rng.standard_normal((sizes[k], dimension)) * np.sqrt(cov)
        xs.append(x)
        ys.append(np.argmax(x @ w + b, axis=1))
    x_all = torch.from_numpy(np.concatenate(xs).astype(np.float32))
    y_all = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    train_idx, test_idx = [], []
    for k in range(devices):
        perm = starts[k] + rng.permutation(sizes[k])
        n_test = max(1, int(round(test_fraction * sizes[k])))
        test_idx.append(np.sort(perm[:n_test]).astype(np.int64))
        train_idx.append(np.sort(perm[n_test:]).astype(np.int64))
    held = torch.from_numpy(np.concatenate(test_idx))
    bundle = DataBundle(
        "synthetic", ArrayDataset(x_all, y_all), ArrayDataset(x_all[held], y_all[held]), classes
    )
    return FederatedData(bundle, Partition(train_idx, test_idx))


def two_rules(seed: int, major: int = 8, minor: int = 2) -> FederatedData:
    """A federation one linear model cannot serve: ``major`` clients of 200 points labelled
    by ``x_1 > 0`` and ``minor`` clients of 40 labelled by ``x_2 > 0`` (2-D standard normal
    inputs, half of each client's points held out for federated evaluation). FedAvg's
    example weights pick the majority's rule; q-FFL (Li et al., ICLR 2020) trades some of
    the majority's accuracy for the minority's."""
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
    data = ArrayDataset(
        torch.tensor(np.concatenate(xs), dtype=torch.float32), torch.from_numpy(np.concatenate(ys))
    )
    return FederatedData(DataBundle("synthetic", data, data, 2), Partition(train, test))


__all__ = ["synthetic_federation", "two_rules"]
