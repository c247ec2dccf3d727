"""Next-token models (char_lstm, word_lstm), their Opacus per-example gradients, the text
metrics (perplexity; word accuracy without pad/oov/bos/eos) and a run on the bundled text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from privfl.evaluation import evaluate_text
from privfl.models import CharLSTMConfig, NextTokenLSTM, WordLSTMConfig, create_model


def test_char_lstm_has_the_leaf_shape() -> None:
    v = 82
    m = create_model(CharLSTMConfig(), (80,), v, seed=0)
    assert isinstance(m.embedding, nn.Embedding) and m.vocab_size == v
    assert next(m.modules()) is m and list(m.children())[0] is m.embedding  # the first layer
    # LEAF / McMahan 2017: embedding 8, LSTM 256 x 2, dense head (gates: 4 x hidden)
    want = v * 8 + (4 * 256 * (8 + 256) + 2 * 4 * 256) + (4 * 256 * 512 + 2 * 4 * 256) + 256 * v + v
    assert sum(p.numel() for p in m.parameters()) == want
    assert m(torch.randint(0, v, (3, 80))).shape == (3, v)
    w = create_model(WordLSTMConfig(), (20,), 1004, seed=0)
    assert w.projection is not None and w.projection.out_features == 96 and w.head.in_features == 96


def test_dp_layers_compute_the_same_function() -> None:
    cfg = CharLSTMConfig(hidden=16, layers=2)
    plain = create_model(cfg, (12,), 30, seed=1)
    dp = create_model(cfg, (12,), 30, seed=1, dp_layers=True)
    dp.lstm.load_state_dict(plain.lstm.state_dict())  # DPLSTM keeps nn.LSTM's names
    for name in ("embedding", "head"):
        getattr(dp, name).load_state_dict(getattr(plain, name).state_dict())
    x = torch.randint(0, 30, (5, 12))
    torch.testing.assert_close(dp(x), plain(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["ew", "hooks"])
def test_opacus_per_example_gradients_of_the_dp_lstm(mode: str) -> None:
    from opacus.grad_sample import wrap_model

    torch.manual_seed(0)
    model = NextTokenLSTM(20, 4, 8, 2, projection=5, dp_layers=True)
    x, y = torch.randint(0, 20, (4, 6)), torch.randint(0, 20, (4,))
    want = []  # per-example gradients, one backward pass each (the independent computation)
    for i in range(4):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        want.append({n: p.grad.clone() for n, p in model.named_parameters()})
    gsm = wrap_model(model, mode, batch_first=True, loss_reduction="sum")
    gsm.zero_grad()
    F.cross_entropy(gsm(x), y, reduction="sum").backward()
    for n, p in model.named_parameters():
        got = p.grad_sample
        for i in range(4):
            torch.testing.assert_close(got[i], want[i][n], atol=1e-5, rtol=1e-4)


class _Fixed(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0]]


def test_text_metrics_against_numpy() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 6, 40)
    m = _Fixed(torch.from_numpy(logits))
    x = torch.arange(40)[:, None].repeat(1, 3)
    r = evaluate_text(m, x, torch.from_numpy(y), excluded=[0, 1, 3], batch_size=7)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = -logp[np.arange(40), y].mean()
    keep = ~np.isin(y, [0, 1, 3])
    assert r["test_loss"] == pytest.approx(ce, rel=1e-6)
    assert r["test_perplexity"] == pytest.approx(math.exp(ce), rel=1e-6)
    assert r["test_accuracy"] == pytest.approx((logits.argmax(1) == y)[keep].mean())
    assert r["test_accuracy"] != pytest.approx((logits.argmax(1) == y).mean())


def test_text_data_and_text_models_go_together() -> None:
    from privfl.config import Config

    with pytest.raises(ValueError, match="Use a text model: char_lstm, word_lstm"):
        Config(data={"name": "pydoc"})
    with pytest.raises(ValueError, match="Use a text data set"):
        Config(model={"name": "char_lstm"})


@pytest.mark.parametrize("level", ["char", "word"])
def test_a_run_on_the_bundled_text_reports_perplexity(level: str) -> None:
    import privfl
    from privfl.config import Config

    data = {"name": "pydoc", "partition": "natural", "clients": 6, "seq_len": 8, "level": level}
    data |= {"stride": 64} if level == "char" else {"vocab_size": 200}
    cfg = Config(
        name="lm",
        data=data,
        model={"name": "char_lstm" if level == "char" else "word_lstm", "hidden": 16}
        | ({"layers": 1} if level == "char" else {"embedding_dim": 8, "projection": 8}),
        federation={"rounds": 1, "clients_per_round": 2, "local_steps": 2, "batch_size": 8},
    )
    result = privfl.run(cfg, out=None, progress=False)
    rec = result.metrics[-1]
    assert rec["test_perplexity"] == pytest.approx(math.exp(rec["test_loss"]))
    assert 0 <= rec["test_accuracy"] <= 1


def test_the_vectorized_engine_names_token_data_when_it_falls_back(caplog) -> None:
    import logging

    from privfl.config import Config
    from privfl.federation import Federation

    cfg = Config(
        name="lm",
        data={"name": "pydoc", "clients": 4, "seq_len": 8, "stride": 64},
        model={"name": "char_lstm", "hidden": 8, "layers": 1},
        federation={"rounds": 1, "clients_per_round": 2, "engine": "vectorized"},
    )
    with caplog.at_level(logging.WARNING):
        fed = Federation(cfg)
    assert fed.engine.trains_with == "sequential"
    assert "token windows" in caplog.text
