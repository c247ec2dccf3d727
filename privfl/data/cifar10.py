"""Loader of CIFAR-10 from the "python version" pickles (``cifar-10-python.tar.gz``)."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privfl.data.base import ArrayDataset, DataBundle
from privfl.errors import DataError

logger = logging.getLogger(__name__)

NUM_CLASSES = 10
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES: tuple[str, ...] = ("test_batch",)
#: the folder the official archive extracts to.
ARCHIVE_FOLDER = "cifar-10-batches-py"

_IMAGE_SHAPE = (3, 32, 32)
_ROW_LEN = 3 * 32 * 32

# The batches hold a dict of bytes, lists of ints and one numpy array. Only the globals
# needed to rebuild numpy arrays are allowed, so a tampered pickle cannot run code.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Python 3 pickles bytes as _codecs.encode(str, "latin1") under protocols < 3.
        ("_codecs", "encode"),
    }
)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy array reconstruction globals."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR-10 batch"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> Any:
    """``pickle.load(f, encoding="bytes")`` restricted to numpy arrays and builtins."""
    with open(path, "rb") as f:
        data = f.read()
    return _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()


def _missing_message(directory: Path, what: str) -> str:
    names = ", ".join(TRAIN_BATCHES + TEST_BATCHES)
    return (
        f"CIFAR-10 not found: {what}. Expected the python-version batches {names} in "
        f"{directory} or in {directory / ARCHIVE_FOLDER}. Download them with: "
        f"privfl data fetch cifar10 --dir {directory}"
    )


def _batch_folder(directory: Path) -> Path:
    if not directory.is_dir():
        raise DataError(_missing_message(directory, f"the folder {directory} does not exist"))
    names = TRAIN_BATCHES + TEST_BATCHES
    candidates = (directory, directory / ARCHIVE_FOLDER)
    for folder in candidates:
        if all((folder / n).is_file() for n in names):
            return folder
    # Report what is missing from the most complete candidate.
    best = max(candidates, key=lambda f: sum((f / n).is_file() for n in names))
    missing = [n for n in names if not (best / n).is_file()]
    raise DataError(_missing_message(directory, f"missing {', '.join(missing)} in {best}"))


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _unpickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"CIFAR-10 batch {path} is not a valid python-version pickle: {e}") from e
    except OSError as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {e}") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(
            f"CIFAR-10 batch {path} holds {keys}; expected a dict with keys b'data' and b'labels'"
        )
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW_LEN:
        raise DataError(
            f"CIFAR-10 batch {path} has data of dtype {data.dtype} and shape {data.shape}; "
            f"expected uint8 of shape (n, {_ROW_LEN})"
        )
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"CIFAR-10 batch {path} has labels of dtype {labels.dtype} and shape {labels.shape}; "
            f"expected {len(data)} integers"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(
            f"CIFAR-10 batch {path} has labels in [{labels.min()}, {labels.max()}]; "
            f"expected [0, {NUM_CLASSES})"
        )
    return data, labels.astype(np.int64)


def _load_split(folder: Path, names: tuple[str, ...]) -> ArrayDataset:
    parts = [_read_batch(folder / n) for n in names]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    x = data.reshape(-1, *_IMAGE_SHAPE).astype(np.float32) / np.float32(255.0)
    return ArrayDataset(x=torch.from_numpy(x), y=torch.from_numpy(labels))


def load_cifar10(directory: str | Path) -> DataBundle:
    """Load CIFAR-10 from the python-version batches.

    The batches ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` are looked for in
    ``directory`` and then in ``directory/cifar-10-batches-py`` (where the official archive
    extracts to). Each is a pickled dict with ``b"data"`` (uint8, ``(n, 3072)``, channel-major
    rows: 1024 red, 1024 green, 1024 blue values) and ``b"labels"`` (n ints).

    Returns:
        A bundle named ``"cifar10"`` with 10 classes; ``x`` is float32 in ``[0, 1]`` of shape
        ``(n, 3, 32, 32)``, ``y`` int64 of shape ``(n,)``; the train split is the five training
        batches in order (50000 examples for the real files), the test split ``test_batch``.

    Raises:
        DataError: the folder or a batch is missing (the message lists the expected names and
            the ``privfl data fetch cifar10`` command), or a batch is malformed.
    """
    directory = Path(directory)
    folder = _batch_folder(directory)
    train = _load_split(folder, TRAIN_BATCHES)
    test = _load_split(folder, TEST_BATCHES)
    logger.info(
        "loaded CIFAR-10 from %s: %d train, %d test examples", folder, len(train), len(test)
    )
    return DataBundle(name="cifar10", train=train, test=test, num_classes=NUM_CLASSES)


__all__ = ["ARCHIVE_FOLDER", "TEST_BATCHES", "TRAIN_BATCHES", "load_cifar10"]
