"""Text data: vocabularies, next-token windows, and the bundled English corpus ``pydoc``.

A text data set is an ordinary :class:`~privfl.data.base.DataBundle` whose features are int64
token ids of shape ``(n, seq_len)`` and whose label is the id of the token that follows the
window (next-token prediction as classification over the vocabulary, as LEAF Shakespeare:
80 characters -> the next one; Caldas et al. 2018, arXiv 1812.01097). ``num_classes`` is the
vocabulary size and the bundle carries the :class:`Vocabulary` as ``bundle.vocab``.

Windows are cut from each client's token stream separately (:func:`next_token_windows`), so
no window ever spans two clients (or two sentences, for sentence-level data).

The bundled ``pydoc`` corpus is the reference documentation that ships with every Python
install (``pydoc_data.topics``: 79 topics, about 465,000 characters of English prose and code),
one client per topic: a natural non-IID split that stands in for LEAF Shakespeare or Stack
Overflow, which must be produced or downloaded separately.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from privfl.data.base import ArrayDataset, DataBundle
from privfl.errors import DataError

Level = Literal["char", "word"]

PAD, OOV, BOS, EOS = "<pad>", "<oov>", "<bos>", "<eos>"

#: a word is a run of letters/digits/underscores or one punctuation character
_WORD_RE = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Vocabulary:
    """Token <-> id maps with special tokens.

    Attributes:
        itos: the token of each id; the special tokens come first.
        level: ``"char"`` (tokens are characters) or ``"word"``.
        pad: id of the padding token (left-pads windows at the start of a sentence).
        oov: id every out-of-vocabulary token maps to.
        eos: id of the end-of-sentence token, None when the data have no sentences.
        bos: id of the beginning-of-sentence token, None when the data have no sentences.
        stoi: the inverse of ``itos``.
    """

    itos: list[str]
    level: Level
    pad: int = 0
    oov: int = 1
    eos: int | None = None
    bos: int | None = None
    stoi: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stoi = {t: i for i, t in enumerate(self.itos)}
        if len(stoi) != len(self.itos):
            raise DataError("a vocabulary lists a token twice")
        object.__setattr__(self, "stoi", stoi)

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(
        cls,
        tokens: Iterable[str],
        level: Level,
        *,
        max_size: int | None = None,
        sentences: bool = False,
    ) -> Vocabulary:
        """The vocabulary of ``tokens``: the special tokens (pad, oov, and bos/eos when
        ``sentences``), then the tokens by decreasing count (ties in first-seen order), at most
        ``max_size`` ids in all (``None``: every token seen). Tokens left out map to ``oov``.

        >>> v = Vocabulary.build("abracadabra", "char")
        >>> v.itos, v.encode("abz").tolist()
        (['<pad>', '<oov>', 'a', 'b', 'r', 'c', 'd'], [2, 3, 1])
        """
        specials = [PAD, OOV] + ([BOS, EOS] if sentences else [])
        if max_size is not None and max_size <= len(specials):
            raise DataError(f"a vocabulary of {max_size} ids leaves no room for tokens")
        counts = Counter(tokens)
        keep = None if max_size is None else max_size - len(specials)
        words = [t for t, _ in counts.most_common(keep) if t not in specials]
        return cls.with_tokens(words, level, sentences=sentences)

    @classmethod
    def with_tokens(cls, tokens: Sequence[str], level: Level, *, sentences: bool) -> Vocabulary:
        """The vocabulary of exactly ``tokens`` (in that order) after the special tokens."""
        specials = [PAD, OOV] + ([BOS, EOS] if sentences else [])
        return cls(
            itos=specials + [t for t in tokens if t not in specials],
            level=level,
            pad=0,
            oov=1,
            bos=2 if sentences else None,
            eos=3 if sentences else None,
        )

    def tokenize(self, text: str) -> list[str]:
        """``text`` split into this vocabulary's tokens (characters, or :func:`words`)."""
        return list(text) if self.level == "char" else words(text)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """int64 ids of ``tokens`` (unknown tokens -> ``oov``)."""
        get, oov = self.stoi.get, self.oov
        return np.fromiter((get(t, oov) for t in tokens), dtype=np.int64)

    def encode_sentence(self, tokens: Sequence[str]) -> np.ndarray:
        """``[bos] + ids(tokens) + [eos]`` (a vocabulary built with ``sentences=True``)."""
        if self.bos is None or self.eos is None:
            raise DataError("this vocabulary has no sentence tokens")
        return np.concatenate([[self.bos], self.encode(tokens), [self.eos]]).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` (characters joined; words joined by spaces)."""
        toks = [self.itos[int(i)] for i in ids]
        return "".join(toks) if self.level == "char" else " ".join(toks)

    def excluded_targets(self) -> list[int]:
        """Ids that word-level accuracy leaves out: pad, oov, bos and eos (Stack Overflow's
        published metric; Reddi et al. 2021, "Adaptive Federated Optimization", ICLR, App. C).
        Character vocabularies exclude nothing (LEAF Shakespeare counts every character)."""
        if self.level == "char":
            return []
        return [i for i in (self.pad, self.oov, self.bos, self.eos) if i is not None]


#: the data sets whose examples are token windows
TEXT_DATASETS: tuple[str, ...] = ("pydoc", "shakespeare", "stackoverflow")


def check_text_model(data_name: str, model_name: str, text_models: Sequence[str]) -> None:
    """Refuse a text data set with an image model and a text model on images (the models
    differ in their inputs: token ids vs float tensors).

    Raises:
        ValueError: naming the mismatch and the fix (the config reports it as a ConfigError).
    """
    if (data_name in TEXT_DATASETS) == (model_name in text_models):
        return
    if data_name in TEXT_DATASETS:
        raise ValueError(
            f"data.name = '{data_name}' holds token windows; model.name = '{model_name}' reads "
            f"float inputs. Use a text model: {', '.join(text_models)}"
        )
    raise ValueError(
        f"model.name = '{model_name}' reads token windows; data.name = '{data_name}' holds "
        f"float inputs. Use a text data set: {', '.join(TEXT_DATASETS)}"
    )


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``: runs of letters, digits and underscores, and each
    punctuation character on its own.

    >>> words("Use print(x), then stop.")
    ['use', 'print', '(', 'x', ')', ',', 'then', 'stop', '.']
    """
    return _WORD_RE.findall(text.lower())


def next_token_windows(
    streams: Sequence[np.ndarray], seq_len: int, *, stride: int = 1, pad: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ``stride``-th window of ``seq_len`` consecutive tokens of each stream, with the
    token that follows it as the label. Windows never span two streams.

    Without ``pad``, the first target of a stream is its token ``seq_len`` (a stream shorter
    than ``seq_len + 1`` gives no window). With ``pad`` (sentence data), each stream is
    left-padded with ``seq_len - 1`` pad ids, so every token after the first is a target (the
    windows of TFF's Stack Overflow pipeline, one target per position).

    Returns:
        ``x`` int64 ``(n, seq_len)``, ``y`` int64 ``(n,)`` and ``source`` int64 ``(n,)``, the
        stream each window came from.

    >>> x, y, s = next_token_windows([np.arange(5), np.arange(10, 13)], 2, stride=2)
    >>> x.tolist(), y.tolist(), s.tolist()
    ([[0, 1], [2, 3], [10, 11]], [2, 4, 12], [0, 0, 1])
    >>> next_token_windows([np.array([7, 8, 9])], 2, pad=0)[0].tolist()
    [[0, 7], [7, 8]]
    """
    if seq_len < 1 or stride < 1:
        raise DataError(f"seq_len and stride must be >= 1, got {seq_len} and {stride}")
    if pad is not None:
        lead = np.full(seq_len - 1, pad, dtype=np.int64)
        streams = [np.concatenate([lead, np.asarray(s, dtype=np.int64)]) for s in streams]
    lengths = np.array([len(s) for s in streams], dtype=np.int64)
    flat = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in streams])
        if len(streams)
        else np.zeros(0, dtype=np.int64)
    )
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    # targets of stream k: positions start_k + seq_len, + stride, ... < start_k + len_k
    counts = np.maximum(0, -(-(lengths - seq_len) // stride))
    source = np.repeat(np.arange(len(streams), dtype=np.int64), counts)
    within = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    targets = starts[source] + seq_len + within * stride
    x = flat[targets[:, None] - seq_len + np.arange(seq_len)]
    return x.reshape(-1, seq_len), flat[targets], source


def text_dataset(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> ArrayDataset:
    """An :class:`ArrayDataset` of token windows (int64 features) with their clients."""
    return ArrayDataset(
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)),
        y=torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
        groups=np.asarray(groups, dtype=np.int64),
    )


def load_pydoc(
    *,
    level: Level = "char",
    seq_len: int = 80,
    stride: int = 1,
    test_fraction: float = 0.2,
    vocab_size: int | None = None,
) -> DataBundle:
    """The bundled English corpus: Python's reference documentation (``pydoc_data.topics``),
    one client (group) per topic, in sorted topic order.

    Test split (deterministic, no randomness): the last ``test_fraction`` of each topic's text
    (cut at a line boundary) is its test part, the rest its training part; windows are cut
    from each part separately, so no test target is inside a training window.

    ``level = "char"``: each part is one character stream; a window of ``seq_len`` characters
    every ``stride`` characters predicts the next character; the vocabulary is every character
    of the training text (pad and oov first). ``level = "word"``: each non-empty line is a
    sentence ``<bos> words <eos>`` (:func:`words`), every word and the eos is a target of the
    (left-padded) ``seq_len`` tokens before it; the vocabulary is the ``vocab_size`` most
    frequent training words (with pad, oov, bos, eos), as Stack Overflow's.
    """
    from pydoc_data.topics import topics

    names = sorted(topics)
    train_parts, test_parts = [], []
    for name in names:
        lines = topics[name].splitlines(keepends=True)
        total = sum(len(line) for line in lines)
        cut, seen = len(lines), 0
        for i, line in enumerate(lines):
            if seen >= (1 - test_fraction) * total:
                cut = i
                break
            seen += len(line)
        train_parts.append(lines[:cut])
        test_parts.append(lines[cut:])

    if level == "char":
        vocab = Vocabulary.build((c for p in train_parts for c in "".join(p)), "char")

        def cut(parts: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            streams = [vocab.encode("".join(p)) for p in parts]
            return next_token_windows(streams, seq_len, stride=stride)
    else:
        vocab = Vocabulary.build(
            (w for p in train_parts for line in p for w in words(line)),
            "word",
            max_size=vocab_size,
            sentences=True,
        )

        def cut(parts: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            sents = [[words(line) for line in part] for part in parts]
            streams = [vocab.encode_sentence(t) for part in sents for t in part if t]
            owner = np.array([k for k, part in enumerate(sents) for t in part if t], np.int64)
            x, y, s = next_token_windows(streams, seq_len, stride=stride, pad=vocab.pad)
            return x, y, owner[s]

    tx, ty, tg = cut(train_parts)
    vx, vy, vg = cut(test_parts)
    if len(ty) == 0 or len(vy) == 0:
        raise DataError(f"pydoc: seq_len = {seq_len} leaves no windows; use a shorter one")
    return DataBundle(
        name="pydoc",
        train=text_dataset(tx, ty, tg),
        test=text_dataset(vx, vy, vg),
        num_classes=len(vocab),
        vocab=vocab,
    )


__all__ = [
    "TEXT_DATASETS",
    "BOS",
    "check_text_model",
    "EOS",
    "OOV",
    "PAD",
    "Vocabulary",
    "load_pydoc",
    "next_token_windows",
    "text_dataset",
    "words",
]
