"""Data sets, real-format loaders and partitioners.

``DATASET_NAMES`` and ``PARTITION_NAMES`` are the registries' keys; the config validates
against them. :func:`privfl.data.federated.build_federated_data` turns a config into data.
"""

from privfl.data.base import ArrayDataset, DataBundle, Partition
from privfl.data.federated import LOADERS
from privfl.data.partition import PARTITIONERS

DATASET_NAMES: tuple[str, ...] = tuple(LOADERS)
PARTITION_NAMES: tuple[str, ...] = tuple(PARTITIONERS)

__all__ = [
    "ArrayDataset",
    "DATASET_NAMES",
    "DataBundle",
    "PARTITIONERS",
    "PARTITION_NAMES",
    "Partition",
]
