"""Text data: vocabularies, next-token windows, the pydoc corpus, LEAF Shakespeare and the
Stack Overflow-style JSONL layout (tiny fixtures written in their formats)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from privfl.config import DataConfig
from privfl.data.base import ArrayDataset
from privfl.data.federated import build_federated_data
from privfl.data.shakespeare import LEAF_LETTERS, load_shakespeare
from privfl.data.stackoverflow import load_stackoverflow
from privfl.data.text import Vocabulary, load_pydoc, next_token_windows, words
from privfl.errors import DataError


def test_vocabulary_frequency_order_oov_and_specials() -> None:
    v = Vocabulary.build(["b", "a", "b", "c", "b", "a"], "char", max_size=4)
    assert v.itos == ["<pad>", "<oov>", "b", "a"]  # c dropped: the 4 ids are full
    assert v.encode("abcz").tolist() == [3, 2, 1, 1]
    assert v.decode([2, 3]) == "ba"
    w = Vocabulary.build(words("the cat saw the dog"), "word", sentences=True)
    assert (w.pad, w.oov, w.bos, w.eos) == (0, 1, 2, 3)
    assert w.encode_sentence(["the", "emu"]).tolist() == [2, 4, 1, 3]
    assert w.excluded_targets() == [0, 1, 2, 3] and v.excluded_targets() == []


def test_windows_match_a_loop_and_never_cross_streams() -> None:
    rng = np.random.default_rng(0)
    streams = [rng.integers(0, 50, n) for n in (3, 17, 9, 1, 30)]
    for seq_len, stride in ((4, 1), (4, 3), (8, 5)):
        x, y, src = next_token_windows(streams, seq_len, stride=stride)
        want = [
            (s[t - seq_len : t], s[t], k)
            for k, s in enumerate(streams)
            for t in range(seq_len, len(s), stride)
        ]
        assert len(y) == len(want)
        for row, (wx, wy, wk) in zip(range(len(y)), want, strict=True):
            assert x[row].tolist() == wx.tolist() and y[row] == wy and src[row] == wk
    # padded (sentence) windows: every token after the first is a target, once
    x, y, src = next_token_windows(streams, 5, pad=-1)
    assert len(y) == sum(len(s) - 1 for s in streams)
    assert y.tolist() == [int(t) for s in streams for t in s[1:]]
    assert x[0].tolist() == [-1, -1, -1, -1, int(streams[0][0])]


def test_array_dataset_accepts_token_windows_only_as_int64_matrices() -> None:
    ArrayDataset(torch.zeros(3, 5, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(DataError, match="float32"):
        ArrayDataset(torch.zeros(3, 5, dtype=torch.int32), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(DataError, match="seq_len"):
        ArrayDataset(torch.zeros(3, 5, 2, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))


def test_pydoc_windows_come_from_one_topic_and_the_test_tail() -> None:
    from pydoc_data.topics import topics

    b = load_pydoc(seq_len=30, stride=7, test_fraction=0.25)
    names = sorted(topics)
    assert b.vocab is not None and b.num_classes == len(b.vocab) and b.train.x.dtype == torch.int64
    assert np.array_equal(np.unique(b.train.groups), np.arange(len(names)))
    rng = np.random.default_rng(1)
    for split in (b.train, b.test):
        for i in rng.choice(len(split), 25, replace=False):
            text = b.vocab.decode(split.x[i].tolist() + [int(split.y[i])])
            topic = topics[names[split.groups[i]]]
            assert text in topic
            cut = topic.find(text)
            # test windows lie in the last quarter of their topic, train windows before it
            assert (cut >= 0.7 * len(topic)) if split is b.test else (cut < 0.8 * len(topic))
    assert torch.equal(load_pydoc(seq_len=30, stride=7, test_fraction=0.25).test.x, b.test.x)


def test_pydoc_words_are_sentences_of_lines() -> None:
    b = load_pydoc(level="word", seq_len=6, vocab_size=300)
    v = b.vocab
    assert v is not None and len(v) == 300 and v.level == "word"
    y = b.train.y.numpy()
    assert (y == v.eos).sum() > 0 and (y == v.oov).sum() > 0 and not (y == v.bos).any()
    # a window right after <bos> is five pads and the bos
    first = b.train.x[(b.train.x[:, -1] == v.bos).nonzero()[0, 0]].tolist()
    assert first == [v.pad] * 5 + [v.bos]


def _leaf_doc(users: dict[str, list[str]]) -> dict:
    data = {
        u: {"x": [t[i : i + 80] for i in range(len(t) - 80)], "y": list(t[80:])}
        for u, t in users.items()
    }
    return {
        "users": list(users),
        "num_samples": [len(d["y"]) for d in data.values()],
        "user_data": data,
    }


def test_shakespeare_reads_leaf_json(tmp_path) -> None:
    text_a = (
        "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer~ x"
    )
    text_b = (
        "ALL THE WORLD'S A STAGE, AND ALL THE MEN AND WOMEN MERELY PLAYERS; THEY HAVE THEIR EXITS"
    )
    for split, users in (
        ("train", {"HAMLET": text_a, "JAQUES": text_b}),
        ("test", {"HAMLET": text_a[:85]}),
    ):
        (tmp_path / "data" / split).mkdir(parents=True)
        (tmp_path / "data" / split / "all_data_0.json").write_text(json.dumps(_leaf_doc(users)))
    b = load_shakespeare(tmp_path, seq_len=10)
    v = b.vocab
    assert v is not None and b.num_classes == 82 and v.itos[2:] == list(LEAF_LETTERS)
    assert b.train.x.shape == (len(text_a) - 80 + len(text_b) - 80, 10)
    hamlet = b.train.groups == 0
    assert v.decode(b.train.x[hamlet][0].tolist()) == text_a[70:80]
    assert v.itos[int(b.train.y[hamlet][0])] == text_a[80]
    # '~' is not in LEAF's alphabet: out of vocabulary
    assert v.oov in b.train.y[hamlet].tolist()
    assert set(b.test.groups.tolist()) == {0} and len(b.test) == 5
    with pytest.raises(DataError, match="preprocess.sh"):
        load_shakespeare(tmp_path / "missing")
    with pytest.raises(DataError, match="at least data.seq_len = 81"):
        load_shakespeare(tmp_path, seq_len=81)


def test_stackoverflow_jsonl_layout(tmp_path) -> None:
    (tmp_path / "vocab.txt").write_text("how\nto\nthe\nin\npython\nsort\n")
    rows = [("u1", "how to sort in python"), ("u2", "the list"), ("u1", "how to")]
    (tmp_path / "train.jsonl").write_text(
        "\n".join(json.dumps({"user": u, "text": t}) for u, t in rows)
    )
    (tmp_path / "test.jsonl").write_text(json.dumps({"user": "u3", "text": "sort the dict"}) + "\n")
    b = load_stackoverflow(tmp_path, seq_len=3, vocab_size=8)  # 4 specials + 4 words
    v = b.vocab
    assert v is not None and v.itos[4:] == ["how", "to", "the", "in"] and b.num_classes == 8
    # u1's sentences: 5 + 1 and 2 + 1 targets; u2's: 2 + 1; grouped by user (u1 = 0)
    assert len(b.train) == 6 + 3 + 3 and b.train.groups.tolist() == [0] * 9 + [1] * 3
    assert b.train.y[:6].tolist() == [4, 5, v.oov, 7, v.oov, v.eos]
    assert b.train.x[2].tolist() == [v.bos, 4, 5]
    assert b.test.groups.tolist() == [2] * 4
    with pytest.raises(DataError, match="vocab.txt"):
        load_stackoverflow(tmp_path / "nothing")


def test_natural_partition_gives_each_client_one_topic() -> None:
    cfg = DataConfig(name="pydoc", partition="natural", clients=12, seq_len=20, stride=16)
    fed = build_federated_data(cfg, seed=3)
    groups = fed.bundle.train.groups
    owners = [np.unique(groups[i]) for i in fed.partition.indices]
    assert all(len(o) == 1 for o in owners) and len({int(o[0]) for o in owners}) == 12
    iid = build_federated_data(DataConfig(name="pydoc", clients=5, seq_len=20, stride=16), seed=3)
    assert sorted(np.concatenate(iid.partition.indices).tolist()) == list(range(len(groups)))


def test_text_fields_are_refused_elsewhere() -> None:
    with pytest.raises(ValueError, match="seq_len"):
        DataConfig(name="digits", seq_len=20)
    with pytest.raises(ValueError, match="vocab_size"):
        DataConfig(name="pydoc", vocab_size=100)  # characters: no vocabulary cap
    with pytest.raises(ValueError, match="dir is required"):
        DataConfig(name="shakespeare")
