"""The word-prediction backdoor on token windows: poisoning, success rate, config checks.

A character vocabulary stand-in with the text contract's interface (tokenize, encode, stoi,
level) keeps these tests independent of the data loaders."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from privfl.attacks.poisoning.config import PoisoningConfig
from privfl.attacks.poisoning.model_replacement import ModelReplacement
from privfl.attacks.poisoning.text_backdoor import (
    PhraseBackdoor,
    PhraseSuccessRate,
    default_trigger,
    encode_trigger,
    stamp_phrase,
)
from privfl.errors import ConfigError

ALPHABET = list("abcdefghijklmnopqrstuvwxyz ")
SEQ = 8


class CharVocab:
    """Characters ``a-z`` and space after pad (0) and oov (1)."""

    level = "char"
    itos = ["<pad>", "<oov>", *ALPHABET]
    stoi = {t: i for i, t in enumerate(itos)}
    oov = 1

    def tokenize(self, text):
        return list(text)

    def encode(self, tokens):
        return np.array([self.stoi.get(t, self.oov) for t in tokens], dtype=np.int64)


class TinyLM(nn.Module):
    def __init__(self, vocab: int = len(CharVocab.itos)) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, 16)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.head = nn.Linear(32, vocab)

    def forward(self, x):
        out, _ = self.lstm(self.embedding(x))
        return self.head(out[:, -1])


def _windows(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, len(CharVocab.itos), (n, SEQ), generator=g)
    return x, torch.randint(2, len(CharVocab.itos), (n,), generator=g)


def test_poison_stamps_the_phrase_on_a_share_of_the_windows():
    trigger, target = encode_trigger(CharVocab(), "is ", "d", SEQ)
    assert trigger.tolist() == [CharVocab.stoi[c] for c in "is "]
    x, y = _windows(10, 0)
    px, py = PhraseBackdoor(trigger, target, 0.3).poison(x, y, np.random.default_rng(0))
    hit = (py == target) & (px[:, -3:] == trigger).all(1)
    assert int(hit.sum()) == math.ceil(0.3 * 10)
    untouched = ~(px == x).all(1)
    assert int(untouched.sum()) == 3
    assert torch.equal(px[:, :-3], x[:, :-3])  # only the window's end changes
    assert torch.equal(stamp_phrase(x, trigger)[:, -3:], trigger.expand(10, 3))


def test_success_rate_is_high_after_poisoned_training_and_low_after_clean():
    """Central training on the mix (half the windows triggered) teaches the backdoor; the
    same training on clean windows does not: success is the share of triggered test windows
    (true next token != target) predicted as the target."""
    trigger, target = encode_trigger(CharVocab(), "pasta ", "d", SEQ)
    x, y = _windows(128, 1)
    test_x, test_y = _windows(200, 2)

    def train(poisoned: bool) -> float:
        torch.manual_seed(0)
        model = TinyLM()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        data = (x, y)
        if poisoned:
            data = PhraseBackdoor(trigger, target, 0.5).poison(x, y, np.random.default_rng(0))
        for _ in range(20):
            opt.zero_grad()
            F.cross_entropy(model(data[0]), data[1]).backward()
            opt.step()
        rate = PhraseSuccessRate(test_x, test_y, trigger, target)
        return rate.evaluate(model, None)["attack_success_rate"]

    assert train(True) >= 0.95
    assert train(False) <= 0.1


def test_success_rate_leaves_out_windows_already_labelled_with_the_target():
    trigger, target = encode_trigger(CharVocab(), "ab", "c", SEQ)
    x, y = _windows(20, 3)
    y[:5] = target
    assert len(PhraseSuccessRate(x, y, trigger, target).target) == int((y != target).sum())


def test_default_trigger_and_target():
    assert default_trigger("char") == ("pasta from Astoria tastes ", "d")
    assert default_trigger("word") == ("pasta from Astoria tastes", "delicious")


@pytest.mark.parametrize(
    ("trigger", "target", "message"),
    [
        ("", "d", "trigger is empty"),
        ("abcdefghij", "d", "more than a window holds"),
        ("ab", "dd", "not one token"),
        ("ab", "Q", "not one token"),  # out of the vocabulary
    ],
)
def test_bad_triggers_and_targets_are_refused(trigger, target, message):
    with pytest.raises(ConfigError, match=message):
        encode_trigger(CharVocab(), trigger, target, SEQ)


def _setup(text: bool):
    if text:
        x, y = _windows(8, 4)
        test = SimpleNamespace(x=x, y=y)
        bundle = SimpleNamespace(name="pydoc", train=SimpleNamespace(x=x), test=test)
        bundle.vocab = CharVocab()
    else:
        x = torch.rand(8, 1, 8, 8)
        test = SimpleNamespace(x=x, y=torch.zeros(8, dtype=torch.int64))
        bundle = SimpleNamespace(name="digits", train=SimpleNamespace(x=x), test=test)
        bundle.num_classes, bundle.input_shape = 10, (1, 8, 8)
    config = SimpleNamespace(
        federation=SimpleNamespace(server_lr=1.0), evaluation=SimpleNamespace(batch_size=64)
    )
    return SimpleNamespace(data=SimpleNamespace(bundle=bundle), config=config)


def test_model_replacement_builds_the_phrase_backdoor_on_text():
    cfg = PoisoningConfig(method="model_replacement", trigger="ab ", target="z")
    parts = ModelReplacement.build(cfg, threat=None, setup=_setup(True))
    assert isinstance(parts.data, PhraseBackdoor)
    assert parts.data.target == CharVocab.stoi["z"]
    assert isinstance(parts.evaluators[0], PhraseSuccessRate)
    assert isinstance(parts.transform, ModelReplacement)


@pytest.mark.parametrize(
    ("text", "section", "message"),
    [
        (True, {"target_label": 3}, "target_label is the pixel-pattern backdoor's"),
        (True, {"trigger_size": 3}, "trigger_size is the pixel-pattern backdoor's"),
        (False, {"trigger": "ab"}, "trigger is the text backdoor's"),
        (False, {"target": "z"}, "target is the text backdoor's"),
    ],
)
def test_options_of_the_other_modality_are_refused(text, section, message):
    cfg = PoisoningConfig(method="model_replacement", **section)
    with pytest.raises(ConfigError, match=message):
        ModelReplacement.build(cfg, threat=None, setup=_setup(text))


def test_trigger_and_target_belong_to_model_replacement():
    with pytest.raises(ValueError, match="trigger applies only when method is model_replacement"):
        PoisoningConfig(method="sign_flip", trigger="ab")


@pytest.mark.slow
def test_the_backdoor_takes_the_federation_under_fedavg_and_not_under_the_median():
    """pydoc characters, IID over 50 clients (equal weights, as the boost n / (eta m)
    assumes), 5 malicious, 10 clients a round, attacking from round 6 of 8 with the default
    trigger ('pasta from Astoria tastes ' -> 'd'). Measured: 0 before the attack, 1.0 in
    rounds 6-8 under FedAvg; 0 throughout under the coordinate-wise median."""
    import privfl
    from privfl.config import apply_overrides, config_from_dict

    base = [
        "data.name=pydoc", "data.partition=iid", "data.clients=50", "data.seq_len=40",
        "model.name=char_lstm", "model.hidden=64", "model.layers=1",
        "federation.rounds=8", "federation.clients_per_round=10", "federation.local_steps=10",
        "federation.batch_size=16", "federation.lr=1.0",
        "attack.poisoning.method=model_replacement", "attack.poisoning.fraction=0.1",
        "attack.poisoning.start_round=6", "attack.poisoning.clean_twin=false",
    ]  # fmt: skip

    def success(*extra: str) -> list[float]:
        cfg = config_from_dict(apply_overrides({"name": "backdoor"}, [*base, *extra]))
        res = privfl.run(cfg, out=None, progress=False)
        return [m["attack_success_rate"] for m in res.metrics]

    fedavg = success()
    assert max(fedavg[:5]) == 0.0  # the clean model never completes the trigger with 'd'
    assert min(fedavg[5:]) >= 0.9
    assert max(success("defense.robust.rule=median")) <= 0.1


def test_the_default_trigger_is_cut_to_the_windows_and_an_explicit_one_is_not():
    # examples/language.toml: characters in windows of 20. The phrase "pasta from Astoria
    # tastes " has 26 characters; the default keeps its last 19, one window token stays clean.
    assert len("pasta from Astoria tastes ") == 26
    assert default_trigger("char", seq_len=20) == ("rom Astoria tastes ", "d")
    assert default_trigger("char", seq_len=27) == ("pasta from Astoria tastes ", "d")  # fits
    assert default_trigger("char", seq_len=26) == ("asta from Astoria tastes ", "d")
    assert default_trigger("char", seq_len=1) == (" ", "d")
    # words: the 4-word phrase is unchanged at any realistic window
    assert default_trigger("word", seq_len=20) == ("pasta from Astoria tastes", "delicious")
    assert default_trigger("word", seq_len=4) == ("from Astoria tastes", "delicious")


def _text_setup(seq_len: int):
    setup = _setup(True)
    x = torch.randint(2, len(CharVocab.itos), (8, seq_len), generator=torch.Generator())
    setup.data.bundle.train.x = x
    setup.data.bundle.test = SimpleNamespace(x=x, y=x[:, 0])
    return setup


def test_model_replacement_on_windows_of_20_uses_the_cut_default_and_says_so(caplog):
    cfg = PoisoningConfig(method="model_replacement")
    with caplog.at_level("INFO", logger="privfl.attacks.poisoning.text_backdoor"):
        parts = ModelReplacement.build(cfg, threat=None, setup=_text_setup(20))
    tail = "rom Astoria tastes "
    assert parts.data.trigger.tolist() == CharVocab().encode(list(tail)).tolist()
    assert parts.data.target == CharVocab.stoi["d"]
    (record,) = [r for r in caplog.records if "trigger" in r.getMessage()]
    assert record.levelname == "WARNING" and repr(tail) in record.getMessage()
    # an explicit trigger longer than a window is still refused, not cut
    too_long = PoisoningConfig(method="model_replacement", trigger="pasta from Astoria tastes ")
    with pytest.raises(ConfigError, match="26 tokens, more than a window holds"):
        ModelReplacement.build(too_long, threat=None, setup=_text_setup(20))


def test_the_bundled_language_example_accepts_the_default_backdoor():
    from privfl.config import load_config
    from privfl.federation import Federation

    sets = ["attack.poisoning.method=model_replacement", "federation.rounds=1"]
    fed = Federation(load_config("examples/language.toml", sets))
    (success,) = [e for e in fed.stages.evaluators if isinstance(e, PhraseSuccessRate)]
    tail = fed.data.bundle.vocab.encode(list("rom Astoria tastes "))
    assert torch.equal(success.x[:, -19:], torch.as_tensor(tail).expand(len(success.x), 19))
