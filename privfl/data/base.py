"""In-memory data sets and the federated view of them.

A data set is held once as two tensors; a client's data is an index array into it (no copies),
so thousands of registered clients cost only their index arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from privfl.errors import DataError

if TYPE_CHECKING:
    from privfl.data.text import Vocabulary


@dataclass(frozen=True)
class ArrayDataset:
    """Examples held as tensors.

    Attributes:
        x: float32 tensor, shape ``(n, *input_shape)`` (images are ``(n, C, H, W)``), or int64
            token ids ``(n, seq_len)`` (text: see :mod:`privfl.data.text`).
        y: int64 tensor, shape ``(n,)``, class labels in ``[0, num_classes)``.
        groups: optional int64 array, shape ``(n,)``: the writer/user each example came from,
            used by the natural partitioner (LEAF FEMNIST).
    """

    x: torch.Tensor
    y: torch.Tensor
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.is_contiguous():
            # Row-major strides for the same memory. numpy gives a size-1 axis any stride (1
            # for the digits' channel axis), and PyTorch reads a unit channel stride as
            # channels-last: digits CNNs then ran channels-last kernels, Opacus'
            # ExpandedWeights failed on them and its hooks computed wrong per-example
            # gradients (privfl.defenses.dp.dpsgd).
            object.__setattr__(self, "x", self.x.reshape(-1).view(self.x.shape))
        if self.x.dtype not in (torch.float32, torch.int64):
            raise DataError(
                f"features must be float32 (images) or int64 (tokens), got {self.x.dtype}"
            )
        if self.x.dtype == torch.int64 and self.x.ndim != 2:
            raise DataError(f"token features must be (n, seq_len), got {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.ndim != 1:
            raise DataError(
                f"labels must be a 1-D int64 tensor, got {self.y.dtype} {tuple(self.y.shape)}"
            )
        if len(self.x) != len(self.y):
            raise DataError(f"{len(self.x)} examples but {len(self.y)} labels")
        if self.groups is not None and len(self.groups) != len(self.y):
            raise DataError(f"{len(self.y)} examples but {len(self.groups)} group ids")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def is_text(self) -> bool:
        """Whether the features are token ids (int64) rather than float inputs."""
        return self.x.dtype == torch.int64


@dataclass(frozen=True)
class DataBundle:
    """A train/test pair with the facts models need.

    Attributes:
        name: registry name of the data set (``"digits"``, ``"mnist"``, ...).
        train: the training examples, partitioned among clients.
        test: the held-out examples of centralized evaluation.
        num_classes: number of labels (for text: the vocabulary size).
        vocab: the :class:`privfl.data.text.Vocabulary` of a text data set, None for images.
    """

    name: str
    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    vocab: Vocabulary | None = None

    @property
    def is_text(self) -> bool:
        """Whether the examples are token windows (next-token prediction)."""
        return self.vocab is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


@dataclass(frozen=True)
class Partition:
    """Which training examples each client holds.

    Attributes:
        indices: one int64 array per client, indices into ``DataBundle.train``.
        test_indices: optional, one array per client into ``DataBundle.train`` held out from
            local training for federated evaluation (empty arrays when not used).
    """

    indices: list[np.ndarray]
    test_indices: list[np.ndarray] = field(default_factory=list)

    @property
    def num_clients(self) -> int:
        return len(self.indices)

    def sizes(self) -> np.ndarray:
        """Examples per client, shape ``(num_clients,)``."""
        return np.array([len(i) for i in self.indices], dtype=np.int64)

    def label_counts(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """Per-client label histogram, shape ``(num_clients, num_classes)``."""
        counts = np.zeros((self.num_clients, num_classes), dtype=np.int64)
        for k, idx in enumerate(self.indices):
            counts[k] = np.bincount(labels[idx], minlength=num_classes)
        return counts


__all__ = ["ArrayDataset", "DataBundle", "Partition"]
