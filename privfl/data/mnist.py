"""Loader of MNIST from its original IDX files (raw or gzip-compressed)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from privfl.data.base import ArrayDataset, DataBundle
from privfl.data.idx import read_idx
from privfl.errors import DataError

logger = logging.getLogger(__name__)

NUM_CLASSES = 10

#: split -> (images file, labels file), without the optional ``.gz`` suffix.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _expected_names() -> list[str]:
    return [name for pair in MNIST_FILES.values() for name in pair]


def _missing_message(directory: Path, what: str) -> str:
    names = ", ".join(_expected_names())
    return (
        f"MNIST not found: {what}. Expected the files {names} (each raw or with a .gz suffix) "
        f"in {directory}. Download them with: privfl data fetch mnist --dir {directory}"
    )


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_split(images_path: Path, labels_path: Path) -> ArrayDataset:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(
            f"{images_path} holds an array of shape {images.shape}; "
            "expected 3 dimensions (n, height, width)"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{images_path} holds {images.dtype} pixels; expected uint8 (code 0x08)")
    if labels.ndim != 1:
        raise DataError(f"{labels_path} holds an array of shape {labels.shape}; expected (n,)")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(
            f"{labels_path} has labels in [{labels.min()}, {labels.max()}]; "
            f"expected [0, {NUM_CLASSES})"
        )
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ArrayDataset(x=x.contiguous(), y=y)


def load_mnist(directory: str | Path) -> DataBundle:
    """Load MNIST from the four IDX files in ``directory``.

    The files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or with ``.gz``.

    Returns:
        A bundle named ``"mnist"`` with 10 classes; ``x`` is float32 in ``[0, 1]`` (pixel / 255)
        of shape ``(n, 1, H, W)`` with ``H, W`` taken from the files (28 for MNIST), ``y`` is
        int64 of shape ``(n,)``. Train has 60000 examples and test 10000 for the real files.

    Raises:
        DataError: the folder or a file is missing (the message lists the expected names and
            the ``privfl data fetch mnist`` command), or a file is malformed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(_missing_message(directory, f"the folder {directory} does not exist"))
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in _expected_names():
        path = _find(directory, name)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        raise DataError(_missing_message(directory, f"missing {', '.join(missing)}"))
    splits = {
        split: _load_split(found[images], found[labels])
        for split, (images, labels) in MNIST_FILES.items()
    }
    if splits["train"].x.shape[1:] != splits["test"].x.shape[1:]:
        raise DataError(
            f"MNIST train images in {directory} have shape {tuple(splits['train'].x.shape[1:])} "
            f"but test images {tuple(splits['test'].x.shape[1:])}; expected the same"
        )
    logger.info(
        "loaded MNIST from %s: %d train, %d test examples",
        directory,
        len(splits["train"]),
        len(splits["test"]),
    )
    return DataBundle(
        name="mnist", train=splits["train"], test=splits["test"], num_classes=NUM_CLASSES
    )


__all__ = ["MNIST_FILES", "load_mnist"]
