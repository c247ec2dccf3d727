"""The HE channel in a run: the same model as without it, a server view of ciphertext bytes
only, real byte counts, and refusal of what it cannot compute."""

from __future__ import annotations

from typing import Any

import pytest
import tenseal as ts
import torch
from conftest import small_config

import privfl
from privfl.aggregation import WeightedMean
from privfl.defenses.he import (
    CKKS_PRESETS,
    CKKSScheme,
    EncryptedRound,
    HEChannel,
    HEMetric,
    KeyHolder,
    Preset,
)
from privfl.errors import ConfigError
from privfl.federation import Federation
from privfl.stages import AggregationResult, Aggregator, Observer, ObserverContext
from privfl.update import ServerView


@pytest.fixture(scope="module")
def plain_run() -> privfl.RunResult:
    return privfl.run(small_config(), out=None, progress=False)


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
def test_he_run_learns_the_same_model_as_the_plain_run(plain_run, scheme):
    plain = plain_run
    he = privfl.run(small_config(defense={"he": {"scheme": scheme}}), out=None, progress=False)
    # CKKS adds ~1e-9 per aggregate, BFV's quantization ~1e-11 (2^39 levels); three rounds of
    # training keep the difference far below 1e-5 ...
    assert torch.allclose(he.params, plain.params, atol=1e-5, rtol=0)
    # ... while training moved the model by far more than that tolerance.
    init = Federation(small_config()).params
    assert (plain.params - init).abs().max() > 1e-2
    for p, h in zip(plain.metrics, he.metrics, strict=True):
        assert h["test_accuracy"] == pytest.approx(p["test_accuracy"], abs=1e-9)
        assert h["aggregated"] == p["aggregated"] == 4


class _Recorder(Observer):
    def __init__(self) -> None:
        self.views: list[ServerView] = []

    def observe(self, view: ServerView, ctx: ObserverContext) -> list[dict[str, Any]]:
        self.views.append(view)
        return []


def _reachable_leaves(obj: Any) -> list[Any]:
    if isinstance(obj, tuple | list):
        return [x for o in obj for x in _reachable_leaves(o)]
    return [obj]


def test_server_view_holds_only_ciphertext_bytes():
    fed = Federation(small_config(defense={"he": {"preset": "fast"}}))
    recorder = _Recorder()
    fed.stages.observers.append(recorder)
    record = fed.run_round()
    (view,) = recorder.views
    assert view.updates is None and view.aggregate is None and not view.has_plaintext_updates
    assert view.channel == "he"
    masked = view.masked
    assert isinstance(masked, EncryptedRound) and not masked.plaintext_available
    leaves = _reachable_leaves([masked.public_context, masked.messages, masked.aggregate])
    assert all(isinstance(x, bytes) for x in leaves) and len(masked.messages) == 4
    # What the server holds cannot be decrypted with what it has.
    public = ts.context_from(masked.public_context)
    assert not public.has_secret_key()
    # Byte accounting: bytes_up is exactly the bytes of the messages the server received.
    dim = fed.spec.dim
    assert record["bytes_up"] == sum(len(m) for m in masked.messages)
    assert record[HEMetric.AGGREGATE_BYTES] == len(masked.aggregate)
    assert record[HEMetric.RESULT_BYTES] == 4 * dim
    assert record[HEMetric.EXPANSION] == pytest.approx(record["bytes_up"] / (4 * 4 * dim), abs=1e-4)
    assert record[HEMetric.CIPHERTEXTS] == -(-(dim + 1) // 2048)
    # Round 1 sends the public context to the server and to each of the 4 clients.
    assert record[HEMetric.CONTEXT_BYTES] == 5 * len(masked.public_context)


def test_context_bytes_count_only_new_parties():
    fed = Federation(small_config(defense={"he": {"preset": "fast"}}))
    seen: set[int] = set()
    size = len(fed.stages.channel.server.public_context)
    for r in range(2):
        record = fed.run_round()
        new = set(record["clients"]) - seen
        seen |= new
        assert record[HEMetric.CONTEXT_BYTES] == size * (len(new) + (r == 0))


class _Median(Aggregator):
    def aggregate(self, batch, ctx) -> AggregationResult:
        return AggregationResult(batch.deltas.median(dim=0).values)


def test_only_the_weighted_mean_is_accepted():
    fed = Federation(small_config(defense={"he": {"preset": "fast"}}))
    fed.stages.aggregator = _Median()
    with pytest.raises(ConfigError, match="needs the individual plaintext updates"):
        fed.run_round()
    HEChannel.check_aggregator(WeightedMean())


def test_too_small_a_cohort_aborts_the_round():
    cfg = small_config(defense={"he": {"preset": "fast", "min_clients": 2}})
    fed = Federation(cfg)
    fed.stages.channel = HEChannel(CKKSScheme(CKKS_PRESETS[Preset.FAST]), min_clients=5)
    before = fed.params.clone()
    record = fed.run_round()
    assert torch.equal(fed.params, before) and record["aggregated"] == 0
    assert "at least defense.he.min_clients = 5" in record[HEMetric.ABORT]


def test_fresh_key_per_channel():
    a = KeyHolder(CKKSScheme(CKKS_PRESETS[Preset.FAST]))
    b = KeyHolder(CKKSScheme(CKKS_PRESETS[Preset.FAST]))
    assert a.key_id != b.key_id and a.public_context != b.public_context
