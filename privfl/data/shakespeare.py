"""Loader of LEAF's Shakespeare (next-character prediction, one client per speaking role) from
its JSON files (Caldas et al. 2018, "LEAF: A Benchmark for Federated Settings", arXiv
1812.01097; the data set of McMahan et al. 2017's Shakespeare runs)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from privfl.data.base import DataBundle
from privfl.data.leaf import read_leaf_json, split_folders
from privfl.data.text import Vocabulary, text_dataset
from privfl.errors import DataError

logger = logging.getLogger(__name__)

#: LEAF's character alphabet (``models/utils/language_utils.py``, ``ALL_LETTERS``), 80 characters;
#: privfl puts pad and oov before it, so a LEAF index i is privfl's id i + 2.
LEAF_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"

SHAKESPEARE_HINT = (
    "LEAF Shakespeare JSON is produced by LEAF's preprocessing: clone "
    "https://github.com/TalwalkarLab/leaf, run `./preprocess.sh -s niid --sf 0.2 -k 0 -t sample "
    "-tf 0.8` in data/shakespeare, then point privfl at that data/shakespeare folder (its "
    "data/train/*.json and data/test/*.json are used)"
)


def _read_split(folder: Path, vocab: Vocabulary, seq_len: int) -> dict[str, tuple[np.ndarray, ...]]:
    """user -> (x int64 ``(n, seq_len)``, y int64 ``(n,)``), merged over the folder's files."""
    per_user: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for path in sorted(folder.glob("*.json")):
        doc = read_leaf_json(path, "Shakespeare")
        for user, record in doc["user_data"].items():
            xs, ys = (record.get("x"), record.get("y")) if isinstance(record, dict) else (0, 0)
            if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
                raise DataError(
                    f"Shakespeare file {path}: user {user!r} needs equally long 'x' and 'y' lists"
                )
            if not xs:
                continue
            bad = [s for s in xs if not isinstance(s, str) or len(s) < seq_len]
            bad += [c for c in ys if not isinstance(c, str) or len(c) != 1]
            if bad:
                raise DataError(
                    f"Shakespeare file {path}: user {user!r} has {bad[0]!r}; expected x strings "
                    f"of at least data.seq_len = {seq_len} characters and y single characters"
                )
            x = vocab.encode("".join(s[len(s) - seq_len :] for s in xs)).reshape(-1, seq_len)
            per_user.setdefault(str(user), []).append((x, vocab.encode(ys)))
    if not per_user:
        raise DataError(f"Shakespeare folder {folder} holds no examples. {SHAKESPEARE_HINT}")
    return {
        u: (np.concatenate([x for x, _ in p]), np.concatenate([y for _, y in p]))
        for u, p in per_user.items()
    }


def load_shakespeare(directory: str | Path, *, seq_len: int = 80) -> DataBundle:
    """Load LEAF Shakespeare from ``directory/{train,test}/*.json`` (or ``directory/data/...``).

    Each file is LEAF's ``{"users": [...], "num_samples": [...], "user_data": {user: {"x":
    [80-character strings], "y": [next characters]}}}``. The vocabulary is LEAF's 80 letters
    after pad and oov (82 ids; characters outside it map to oov). ``seq_len`` < 80 keeps the
    last ``seq_len`` characters of each window. ``groups`` is each example's role: its index in
    the sorted union of train and test user names (the natural partition: one client per role).
    """
    directory = Path(directory)
    train_folder, test_folder = split_folders(directory, "Shakespeare", SHAKESPEARE_HINT)
    vocab = Vocabulary.with_tokens(list(LEAF_LETTERS), "char", sentences=False)
    train = _read_split(train_folder, vocab, seq_len)
    test = _read_split(test_folder, vocab, seq_len)
    index = {user: i for i, user in enumerate(sorted(set(train) | set(test)))}

    def dataset(split: dict[str, tuple[np.ndarray, ...]]):  # noqa: ANN202
        users = sorted(split)
        groups = np.concatenate([np.full(len(split[u][1]), index[u]) for u in users])
        return text_dataset(
            np.concatenate([split[u][0] for u in users]),
            np.concatenate([split[u][1] for u in users]),
            groups,
        )

    bundle = DataBundle(
        name="shakespeare",
        train=dataset(train),
        test=dataset(test),
        num_classes=len(vocab),
        vocab=vocab,
    )
    logger.info(
        "loaded Shakespeare from %s: %d roles, %d train, %d test windows",
        directory,
        len(index),
        len(bundle.train),
        len(bundle.test),
    )
    return bundle


__all__ = ["LEAF_LETTERS", "SHAKESPEARE_HINT", "load_shakespeare"]
