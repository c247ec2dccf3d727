"""Loader of LEAF's FEMNIST (handwritten characters grouped by writer) from its JSON files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from privfl.data.base import ArrayDataset, DataBundle
from privfl.data.leaf import read_leaf_json, split_folders
from privfl.errors import DataError

logger = logging.getLogger(__name__)

NUM_CLASSES = 62
_IMAGE_SHAPE = (1, 28, 28)
_ROW_LEN = 28 * 28

#: how to produce the JSON files; shared with :mod:`privfl.data.fetch`.
LEAF_HINT = (
    "LEAF FEMNIST JSON is produced by LEAF's preprocessing, not downloaded ready-made: clone "
    "https://github.com/TalwalkarLab/leaf, run `./preprocess.sh -s niid --sf 0.05 -k 0 -t sample` "
    "in data/femnist, then point privfl at that data/femnist folder (its data/train/*.json and "
    "data/test/*.json are used) or copy the train/ and test/ folders into one directory"
)


def _read_split(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return user -> (x float32 ``(n, 784)``, y int64 ``(n,)``), merged over the folder's files."""
    per_user: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for path in sorted(folder.glob("*.json")):
        doc = read_leaf_json(path, "FEMNIST")
        for user, record in doc["user_data"].items():
            if not isinstance(record, dict) or "x" not in record or "y" not in record:
                raise DataError(f"FEMNIST file {path}: user {user!r} has no 'x' and 'y' lists")
            try:
                x = np.asarray(record["x"], dtype=np.float32)
                y = np.asarray(record["y"], dtype=np.int64)
            except (TypeError, ValueError) as e:
                raise DataError(
                    f"FEMNIST file {path}: user {user!r} has malformed x or y: {e}"
                ) from e
            if len(y) == 0:
                continue
            if x.ndim != 2 or x.shape[1] != _ROW_LEN:
                raise DataError(
                    f"FEMNIST file {path}: user {user!r} has x of shape {x.shape}; "
                    f"expected (n, {_ROW_LEN}) rows of 28x28 pixels"
                )
            if y.ndim != 1 or len(y) != len(x):
                raise DataError(
                    f"FEMNIST file {path}: user {user!r} has {len(x)} images but y of shape "
                    f"{y.shape}; expected ({len(x)},)"
                )
            if y.min() < 0 or y.max() >= NUM_CLASSES:
                raise DataError(
                    f"FEMNIST file {path}: user {user!r} has labels in [{y.min()}, {y.max()}]; "
                    f"expected [0, {NUM_CLASSES})"
                )
            per_user.setdefault(str(user), []).append((x, y))
    if not per_user:
        raise DataError(f"FEMNIST folder {folder} holds no examples. {LEAF_HINT}")
    return {
        user: (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
        for user, parts in per_user.items()
    }


def _to_dataset(
    split: dict[str, tuple[np.ndarray, np.ndarray]], index: dict[str, int]
) -> ArrayDataset:
    users = sorted(split)
    x = np.concatenate([split[u][0] for u in users]).reshape(-1, *_IMAGE_SHAPE)
    y = np.concatenate([split[u][1] for u in users])
    groups = np.concatenate([np.full(len(split[u][1]), index[u], dtype=np.int64) for u in users])
    return ArrayDataset(x=torch.from_numpy(x), y=torch.from_numpy(y), groups=groups)


def load_femnist(directory: str | Path) -> DataBundle:
    """Load LEAF FEMNIST from ``directory/{train,test}/*.json`` (or ``directory/data/...``).

    Each JSON file is LEAF's ``{"users": [...], "num_samples": [...], "user_data": {user:
    {"x": [[784 floats]], "y": [ints]}}}``. A user's examples from several files of one split
    are concatenated in file-name order.

    Returns:
        A bundle named ``"femnist"`` with 62 classes; ``x`` is float32 of shape
        ``(n, 1, 28, 28)`` (LEAF's values, unchanged), ``y`` int64 ``(n,)``, and ``groups`` on
        both splits an int64 ``(n,)`` writer index: the position of the user name in the sorted
        union of train and test user names, so one writer has the same index in both splits.
        Examples are ordered by writer index.

    Raises:
        DataError: the JSON files are missing (the message says how LEAF produces them and
            where they must be) or malformed.
    """
    directory = Path(directory)
    train_folder, test_folder = split_folders(directory, "FEMNIST", LEAF_HINT)
    train = _read_split(train_folder)
    test = _read_split(test_folder)
    index = {user: i for i, user in enumerate(sorted(set(train) | set(test)))}
    bundle = DataBundle(
        name="femnist",
        train=_to_dataset(train, index),
        test=_to_dataset(test, index),
        num_classes=NUM_CLASSES,
    )
    logger.info(
        "loaded FEMNIST from %s: %d writers, %d train, %d test examples",
        directory,
        len(index),
        len(bundle.train),
        len(bundle.test),
    )
    return bundle


__all__ = ["LEAF_HINT", "load_femnist"]
