"""Federated data on a chosen set of examples, partitioned as a config says: the training
sets of a membership attack's shadow federations (each a different subset of the population,
split among as many clients, the same way, as the attacked run's)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from privfl.data.base import ArrayDataset, DataBundle, Partition
from privfl.data.partition import PARTITIONERS, split_local_test
from privfl.seeding import numpy_rng

if TYPE_CHECKING:
    from privfl.config import DataConfig
    from privfl.data.federated import FederatedData


def partition_examples(cfg: DataConfig, train: ArrayDataset, seed: int) -> Partition:
    """``train`` split among ``cfg.clients`` clients by ``cfg.partition`` (with its settings),
    then each client's local hold-out (``cfg.client_test_fraction``).

    Randomness: the partition uses the stream ``(seed, "partition")`` and the local hold-out
    ``(seed, "local-test")``.
    """
    kwargs: dict[str, object] = {}
    if cfg.partition == "dirichlet":
        kwargs = {"alpha": cfg.alpha, "min_examples": cfg.min_examples}
    elif cfg.partition == "shards":
        kwargs = {"shards_per_client": cfg.shards_per_client}
    elif cfg.partition == "natural":
        kwargs = {"groups": train.groups}
    labels = train.y.numpy()
    indices = PARTITIONERS[cfg.partition](
        labels, cfg.clients, numpy_rng(seed, "partition"), **kwargs
    )
    local_train, local_test = split_local_test(
        indices, cfg.client_test_fraction, numpy_rng(seed, "local-test")
    )
    return Partition(local_train, local_test)


def federated_subset(
    cfg: DataConfig, x: torch.Tensor, y: torch.Tensor, bundle: DataBundle, seed: int
) -> FederatedData:
    """The examples ``(x, y)`` as a training split, partitioned by ``cfg`` with ``seed``; the
    test split and the facts (classes, name) are ``bundle``'s."""
    from privfl.data.federated import FederatedData

    train = ArrayDataset(x, y)
    return FederatedData(replace(bundle, train=train), partition_examples(cfg, train, seed))


__all__ = ["federated_subset", "partition_examples"]
