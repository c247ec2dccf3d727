"""Loader of Stack Overflow-style next-word data: one client per user, sentences of
whitespace-separated tokens, and a vocabulary file (the layout of TFF's Stack Overflow set,
written as JSON lines; Reddi et al. 2021, "Adaptive Federated Optimization", ICLR).

Layout of ``data.dir`` (see docs/language.md)::

    vocab.txt     one token per line, most frequent first (the first data.vocab_size - 4 used)
    train.jsonl   one sentence per line: {"user": "<id>", "text": "tokens separated by spaces"}
    test.jsonl    the same, the held-out sentences

Each sentence becomes ``<bos> tokens <eos>``; every token after ``<bos>`` is the target of the
``seq_len`` tokens before it (left-padded), the windows of TFF's pipeline, one per target.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from privfl.data.base import ArrayDataset, DataBundle
from privfl.data.text import Vocabulary, next_token_windows, text_dataset
from privfl.errors import DataError

logger = logging.getLogger(__name__)

STACKOVERFLOW_HINT = (
    "expected data.dir to hold vocab.txt (one token per line, most frequent first) and "
    'train.jsonl / test.jsonl (one sentence per line: {"user": "...", "text": "..."}); '
    "see docs/language.md for how to write them from TFF's Stack Overflow set"
)


def _read_vocab(path: Path, vocab_size: int) -> Vocabulary:
    try:
        tokens = [t.strip() for t in path.read_text(encoding="utf-8").splitlines()]
    except OSError as e:
        raise DataError(f"cannot read the vocabulary {path}: {e}. {STACKOVERFLOW_HINT}") from e
    tokens = [t for t in tokens if t]
    if not tokens:
        raise DataError(f"the vocabulary {path} is empty. {STACKOVERFLOW_HINT}")
    if vocab_size <= 4:
        raise DataError(f"data.vocab_size = {vocab_size} leaves no room beside the 4 specials")
    return Vocabulary.with_tokens(tokens[: vocab_size - 4], "word", sentences=True)


def _read_sentences(path: Path) -> tuple[list[str], list[list[str]]]:
    users, sentences = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n} is not valid JSON: {e}") from e
                if not isinstance(rec, dict) or "user" not in rec or "text" not in rec:
                    raise DataError(f'{path}:{n}: expected {{"user": ..., "text": ...}}')
                users.append(str(rec["user"]))
                sentences.append(str(rec["text"]).split())
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}. {STACKOVERFLOW_HINT}") from e
    return users, sentences


def load_stackoverflow(
    directory: str | Path, *, seq_len: int = 20, vocab_size: int = 10004
) -> DataBundle:
    """Load next-word windows from ``directory`` (layout in the module docstring).

    The vocabulary is pad, oov, bos, eos and the first ``vocab_size - 4`` tokens of vocab.txt
    (Reddi et al. 2021: the 10,000 most frequent words, plus special tokens). ``groups`` is the
    user's index in the sorted union of train and test users (the natural partition).
    """
    directory = Path(directory)
    vocab = _read_vocab(directory / "vocab.txt", vocab_size)
    splits = {s: _read_sentences(directory / f"{s}.jsonl") for s in ("train", "test")}
    users = sorted({u for us, _ in splits.values() for u in us})
    index = {u: i for i, u in enumerate(users)}

    def dataset(split: str) -> ArrayDataset:
        us, sents = splits[split]
        keep = [i for i, s in enumerate(sents) if s]
        if not keep:
            raise DataError(f"{directory / (split + '.jsonl')} holds no sentences")
        streams = [vocab.encode_sentence(sents[i]) for i in keep]
        x, y, s = next_token_windows(streams, seq_len, pad=vocab.pad)
        owner = np.array([index[us[i]] for i in keep], dtype=np.int64)
        order = np.argsort(owner[s], kind="stable")  # examples grouped by user
        return text_dataset(x[order], y[order], owner[s][order])

    bundle = DataBundle(
        name="stackoverflow",
        train=dataset("train"),
        test=dataset("test"),
        num_classes=len(vocab),
        vocab=vocab,
    )
    logger.info(
        "loaded Stack Overflow-style data from %s: %d users, %d train, %d test windows",
        directory,
        len(users),
        len(bundle.train),
        len(bundle.test),
    )
    return bundle


__all__ = ["STACKOVERFLOW_HINT", "load_stackoverflow"]
