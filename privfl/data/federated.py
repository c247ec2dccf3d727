"""From a config to the federated data of a run: load, partition, hold out local test data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.data.base import ArrayDataset, DataBundle, Partition
from privfl.data.downsample import Downsampled, downsample_classes
from privfl.data.partition import PARTITIONERS, split_local_test
from privfl.errors import RunFolderError
from privfl.registry import Registry
from privfl.seeding import numpy_rng

if TYPE_CHECKING:
    from privfl.config import DataConfig


def _load_mnist(cfg: DataConfig, rng: np.random.Generator) -> DataBundle:
    from privfl.data.mnist import load_mnist

    return load_mnist(Path(cfg.dir))  # type: ignore[arg-type]


def _load_cifar10(cfg: DataConfig, rng: np.random.Generator) -> DataBundle:
    from privfl.data.cifar10 import load_cifar10

    return load_cifar10(Path(cfg.dir))  # type: ignore[arg-type]


def _load_femnist(cfg: DataConfig, rng: np.random.Generator) -> DataBundle:
    from privfl.data.femnist import load_femnist

    return load_femnist(Path(cfg.dir))  # type: ignore[arg-type]


def _load_digits(cfg: DataConfig, rng: np.random.Generator) -> DataBundle:
    from privfl.data.bundled import load_digits

    return load_digits(test_fraction=cfg.test_fraction, rng=rng)


def _load_patches(cfg: DataConfig, rng: np.random.Generator) -> DataBundle:
    from privfl.data.patches import load_patches

    return load_patches(test_fraction=cfg.test_fraction, rng=rng)


def _make_synthetic(cfg: DataConfig, rng: np.random.Generator) -> DataBundle:
    from privfl.data.bundled import make_synthetic

    return make_synthetic(
        samples=cfg.samples,
        shape=tuple(cfg.shape),
        classes=cfg.classes,
        noise=cfg.noise,
        test_fraction=cfg.test_fraction,
        rng=rng,
    )


def _load_pydoc(cfg: DataConfig, rng: np.random.Generator) -> DataBundle:
    from privfl.data.text import load_pydoc

    return load_pydoc(
        level=cfg.level,
        seq_len=cfg.seq_len or (80 if cfg.level == "char" else 20),
        stride=cfg.stride,
        test_fraction=cfg.test_fraction,
        vocab_size=cfg.vocab_size,
    )


def _load_shakespeare(cfg: DataConfig, rng: np.random.Generator) -> DataBundle:
    from privfl.data.shakespeare import load_shakespeare

    return load_shakespeare(Path(cfg.dir), seq_len=cfg.seq_len or 80)  # type: ignore[arg-type]


def _load_stackoverflow(cfg: DataConfig, rng: np.random.Generator) -> DataBundle:
    from privfl.data.stackoverflow import load_stackoverflow

    return load_stackoverflow(
        Path(cfg.dir),  # type: ignore[arg-type]
        seq_len=cfg.seq_len or 20,
        vocab_size=cfg.vocab_size or 10004,
    )


LOADERS: Registry[str, Callable[[DataConfig, np.random.Generator], DataBundle]] = Registry.of(
    "data.name",
    (
        ("digits", _load_digits),
        ("synthetic", _make_synthetic),
        ("patches", _load_patches),
        ("mnist", _load_mnist),
        ("cifar10", _load_cifar10),
        ("femnist", _load_femnist),
        ("pydoc", _load_pydoc),
        ("shakespeare", _load_shakespeare),
        ("stackoverflow", _load_stackoverflow),
    ),
)


@dataclass(frozen=True)
class FederatedData:
    """A data bundle and who holds which examples.

    Client data is never copied at partition time: :meth:`client_train` indexes on demand.
    ``downsampled`` records what ``data.class_fraction`` kept of each down-sampled class (empty
    when no class was down-sampled).
    """

    bundle: DataBundle
    partition: Partition
    downsampled: tuple[Downsampled, ...] = field(default=())

    @property
    def num_clients(self) -> int:
        return self.partition.num_clients

    def client_train(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Client ``client``'s training examples ``(x, y)``."""
        idx = torch.from_numpy(self.partition.indices[client])
        return self.bundle.train.x[idx], self.bundle.train.y[idx]

    def label_counts(self) -> np.ndarray:
        """Per-client training label histogram, shape ``(clients, classes)``."""
        return self.partition.label_counts(self.bundle.train.y.numpy(), self.bundle.num_classes)

    def summary(self, counts: np.ndarray | None = None) -> dict[str, object]:
        """Per-client example counts and their spread, for logs and run folders (``counts``:
        :meth:`label_counts` when the caller has it already)."""
        sizes = self.partition.sizes()
        counts = self.label_counts() if counts is None else counts
        summary: dict[str, object] = {
            "clients": int(len(sizes)),
            "examples": sizes.tolist(),
            "min": int(sizes.min()),
            "max": int(sizes.max()),
            "mean": float(sizes.mean()),
            "classes_per_client_mean": float((counts > 0).sum(axis=1).mean()),
        }
        if self.downsampled:  # only then, so that other runs' partition.json is unchanged
            summary["downsampled"] = [d.to_record() for d in self.downsampled]
        return summary

    def partition_record(self, counts: np.ndarray | None = None) -> dict[str, object]:
        """``partition.json``: :meth:`summary` and the label histogram (``counts``, else
        :meth:`label_counts`) in the form of :func:`label_counts_record`."""
        counts = self.label_counts() if counts is None else counts
        return {**self.summary(counts), **label_counts_record(counts)}


# partition.json keeps the dense (clients, classes) label table up to this many classes, so
# that every image set (10-62 classes) and character vocabulary (Shakespeare 80, pydoc
# characters 105) writes it as before: one short row per client. Word vocabularies go well past
# it (pydoc words ~3.3k, Stack Overflow 10k) while a client uses a small share of them, so their
# dense rows are mostly zeros (500 Stack Overflow clients: 5M integers, ~10 MB of JSON); those
# tables are written sparse, a client's nonzero cells only.
SPARSE_LABEL_COUNTS_ABOVE = 256


def label_counts_record(counts: np.ndarray) -> dict[str, object]:
    """The label histogram ``counts`` (shape ``(clients, classes)``) as ``partition.json``
    holds it. Up to :data:`SPARSE_LABEL_COUNTS_ABOVE` classes the dense table,
    ``{"label_counts": [[count of each class] of each client]}``; above, ``{"label_counts_sparse":
    {"classes": C, "labels": [[the labels a client holds, ascending] of each client], "counts":
    [[their counts] of each client]}}``. :func:`label_counts_from_record` reads either back.

    >>> label_counts_record(np.array([[2, 0], [0, 1]]))
    {'label_counts': [[2, 0], [0, 1]]}
    >>> wide = np.zeros((2, 300), dtype=np.int64)
    >>> wide[0, 7], wide[1, [3, 299]] = 5, (1, 2)
    >>> label_counts_record(wide)["label_counts_sparse"]
    {'classes': 300, 'labels': [[7], [3, 299]], 'counts': [[5], [1, 2]]}
    """
    counts = np.asarray(counts)
    if counts.shape[1] <= SPARSE_LABEL_COUNTS_ABOVE:
        return {"label_counts": counts.tolist()}
    labels = [np.flatnonzero(row) for row in counts]
    return {
        "label_counts_sparse": {
            "classes": int(counts.shape[1]),
            "labels": [ids.tolist() for ids in labels],
            "counts": [row[ids].tolist() for row, ids in zip(counts, labels, strict=True)],
        }
    }


def label_counts_from_record(record: Mapping[str, Any]) -> np.ndarray:
    """The dense label histogram, int64 of shape ``(clients, classes)``, of a ``partition.json``
    record in either form of :func:`label_counts_record`.

    >>> label_counts_from_record({"label_counts": [[2, 0], [0, 1]]}).tolist()
    [[2, 0], [0, 1]]
    >>> sparse = {"classes": 4, "labels": [[3], [0, 1]], "counts": [[5], [1, 2]]}
    >>> label_counts_from_record({"label_counts_sparse": sparse}).tolist()
    [[0, 0, 0, 5], [1, 2, 0, 0]]
    """
    if "label_counts" in record:
        return np.asarray(record["label_counts"], dtype=np.int64)
    if "label_counts_sparse" not in record:
        raise RunFolderError("partition record has neither label_counts nor label_counts_sparse")
    sparse = record["label_counts_sparse"]
    rows = sparse["labels"]
    dense = np.zeros((len(rows), int(sparse["classes"])), dtype=np.int64)
    for i, (ids, n) in enumerate(zip(rows, sparse["counts"], strict=True)):
        dense[i, np.asarray(ids, dtype=np.int64)] = n
    return dense


def build_federated_data(cfg: DataConfig, seed: int) -> FederatedData:
    """Load the data set ``cfg.name`` and partition it among ``cfg.clients`` clients.

    With ``cfg.class_fraction`` set, the named classes of the training split are down-sampled
    first (before partitioning; the test split is untouched).

    Randomness: the train/test split uses the stream ``(seed, "data")``, the down-sampling
    ``(seed, "downsample")``, the partition ``(seed, "partition")`` and the local hold-out
    ``(seed, "local-test")``.
    """
    bundle = LOADERS[cfg.name](cfg, numpy_rng(seed, "data"))
    downsampled: list[Downsampled] = []
    if cfg.class_fraction:
        train, downsampled = downsample_classes(
            bundle.train, cfg.class_fraction, bundle.num_classes, numpy_rng(seed, "downsample")
        )
        bundle = replace(bundle, train=train)
    return FederatedData(bundle, partition_examples(cfg, bundle.train, seed), tuple(downsampled))


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
    rng = numpy_rng(seed, "partition")
    indices = PARTITIONERS[cfg.partition](train.y.numpy(), cfg.clients, rng, **kwargs)
    local_train, local_test = split_local_test(
        indices, cfg.client_test_fraction, numpy_rng(seed, "local-test")
    )
    return Partition(local_train, local_test)


def federated_subset(
    cfg: DataConfig, x: torch.Tensor, y: torch.Tensor, bundle: DataBundle, seed: int
) -> FederatedData:
    """The examples ``(x, y)`` as a training split, partitioned by ``cfg`` with ``seed``; the
    test split and the facts (classes, name) are ``bundle``'s (a membership attack's shadow
    federations: each a different subset of the population, split among as many clients, the
    same way, as the attacked run's)."""
    train = ArrayDataset(x, y)
    return FederatedData(replace(bundle, train=train), partition_examples(cfg, train, seed))


__all__ = [
    "LOADERS",
    "SPARSE_LABEL_COUNTS_ABOVE",
    "FederatedData",
    "build_federated_data",
    "federated_subset",
    "label_counts_from_record",
    "label_counts_record",
    "partition_examples",
]
