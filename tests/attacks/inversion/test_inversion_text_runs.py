"""The token attack in whole runs on the bundled pydoc text (slow: an LSTM federation)."""

from __future__ import annotations

import statistics

import pytest

import privfl
from privfl.config import apply_overrides, config_from_dict

pytestmark = pytest.mark.slow

BASE = [
    "data.name=pydoc",
    "data.partition=natural",
    "data.seq_len=40",
    "model.name=char_lstm",
    "model.hidden=64",
    "model.layers=1",
    "federation.rounds=1",
    "federation.clients_per_round=10",
    "federation.local_steps=10",
    "federation.batch_size=16",
    "federation.lr=1.0",
    "attack.inversion.rounds=[1]",
]


def _records(*extra: str) -> list[dict]:
    cfg = config_from_dict(apply_overrides({"name": "tokens"}, [*BASE, *extra]))
    res = privfl.run(cfg, out=None, progress=False)
    return [r for r in res.attacks if r["attack"] == "tokens"]


def test_undefended_updates_give_the_tokens_away_and_dp_noise_hides_them():
    """Plain SGD: every claimed token is true, and the median recall is >= 0.9 (0.99
    measured; what is missed never moved the float32 weights, see docs/inversion.md). Local
    DP at sigma 0.01 (clip 1): recall under 0.5 (0 measured), precision still 1."""
    plain = _records()
    assert len(plain) == 8 and all(r["threshold_rule"] == "exact" for r in plain)
    assert all(r["token_precision"] == 1.0 for r in plain)
    assert statistics.median(r["token_recall"] for r in plain) >= 0.9
    noisy = _records(
        "defense.dp.mode=local", "defense.dp.noise_multiplier=0.01", "defense.dp.clip=1.0"
    )
    assert all(r["threshold_rule"] == "noise floor" for r in noisy)
    assert statistics.median(r["token_recall"] for r in noisy) < 0.5
    assert statistics.median(r["token_precision"] for r in noisy) >= 0.9


def test_secure_aggregation_leaves_the_union_of_the_tokens():
    (r,) = _records("defense.secagg.threshold=0.6")
    assert r["target"] == "aggregate" and len(r["clients"]) >= 8
    assert r["token_recall"] >= 0.8 and r["token_precision"] == 1.0
