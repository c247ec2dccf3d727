"""The secagg channel against the plaintext weighted mean, its ServerView, bytes and aborts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privfl.aggregation import WeightedMean
from privfl.defenses.secagg import messages, shamir
from privfl.defenses.secagg.channel import SecAggChannel, mean_error_bound
from privfl.defenses.secagg.config import SecAggConfig
from privfl.defenses.secagg.constants import ID_BYTES, KEY_BYTES, NONCE_BYTES, TAG_BYTES
from privfl.errors import ConfigError, PrivflError
from privfl.ledger import Ledger
from privfl.stages import AggregationResult, Aggregator, RoundContext
from privfl.update import ParamSpec, UpdateBatch


def _ctx(dim: int, ids, round=1, seed=0) -> RoundContext:
    spec = ParamSpec(("w",), ((dim,),), (0,), dim)
    return RoundContext(
        round, seed, torch.zeros(dim), spec, 100, np.asarray(ids, dtype=np.int64), Ledger()
    )


def _batch(n=8, d=300, seed=0, scale=0.2) -> UpdateBatch:
    rng = np.random.default_rng(seed)
    ids = rng.choice(100, size=n, replace=False)
    return UpdateBatch(
        client_ids=ids.astype(np.int64),
        deltas=torch.from_numpy(rng.normal(0, scale, size=(n, d)).astype(np.float32)),
        weights=rng.integers(5, 60, size=n).astype(np.float64),
    )


def _reference_mean(batch: UpdateBatch, clip: float, keep=None) -> np.ndarray:
    """The plaintext weighted mean of the clipped updates, float64 (independent of secagg)."""
    mask = np.ones(len(batch), bool) if keep is None else np.isin(batch.client_ids, keep)
    x = np.clip(batch.deltas.numpy().astype(np.float64), -clip, clip)[mask]
    w = batch.weights[mask]
    return (w[:, None] * x).sum(0) / w.sum()


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"bits": 16},
        {"bits": 48, "rounding": "stochastic"},
        {"neighbours": 4, "dropout": 0.25},
        {"neighbours": "auto", "dropout": 0.1, "corruption": 0.05},
    ],
    ids=["default", "16bit", "48bit-stochastic", "harary-dropout", "auto"],
)
def test_aggregate_matches_the_plain_weighted_mean_within_the_bound(cfg):
    batch = _batch()
    config = SecAggConfig(**cfg)
    channel = SecAggChannel(config, max_weight=60)
    ctx = _ctx(batch.deltas.shape[1], batch.client_ids)
    res = channel.transmit(batch, WeightedMean(), ctx)
    assert res.aggregation is not None, res.info
    survivors = res.view.client_ids
    assert set(res.dropped.tolist()) == set(batch.client_ids.tolist()) - set(survivors.tolist())
    ref = _reference_mean(batch, config.clip, survivors)
    values, weights = channel.codecs(len(batch))
    rho = batch.weights[np.isin(batch.client_ids, survivors)] / 60
    bound = mean_error_bound(values, weights, rho.sum(), len(survivors))
    err = np.abs(res.aggregation.delta.numpy().astype(np.float64) - ref)
    assert np.all(err <= bound + 2**-23 * np.abs(ref) + 1e-12)  # + the float32 cast
    if not cfg:  # and the plain aggregator agrees (float32 arithmetic; nothing was clipped)
        assert res.info["secagg_clipped"] == 0
        plain = WeightedMean().aggregate(batch, ctx).delta.numpy()
        np.testing.assert_allclose(res.aggregation.delta.numpy(), plain, atol=1e-6)


def test_16_bits_is_measurably_coarser_than_32():
    batch = _batch()
    ctx = _ctx(batch.deltas.shape[1], batch.client_ids)
    ref = _reference_mean(batch, 1.0)
    errs = {}
    for bits in (16, 32):
        res = SecAggChannel(SecAggConfig(bits=bits), max_weight=60).transmit(
            batch, WeightedMean(), ctx
        )
        errs[bits] = np.abs(res.aggregation.delta.numpy() - ref).max()
    assert errs[16] > 100 * errs[32]  # the quantization error is real and bounded, not zero


def test_clipping_is_applied_and_reported():
    batch = _batch(scale=2.0)
    ctx = _ctx(batch.deltas.shape[1], batch.client_ids)
    res = SecAggChannel(SecAggConfig(clip=0.5), max_weight=60).transmit(batch, WeightedMean(), ctx)
    expected = int((batch.deltas.abs() > 0.5).sum())
    assert res.info["secagg_clipped"] == expected > 0
    np.testing.assert_allclose(
        res.aggregation.delta.numpy(), _reference_mean(batch, 0.5), atol=1e-6
    )


def test_server_view_holds_only_masked_vectors_and_the_aggregate():
    batch = _batch()
    ctx = _ctx(batch.deltas.shape[1], batch.client_ids)
    channel = SecAggChannel(SecAggConfig(), max_weight=60)
    res = channel.transmit(batch, WeightedMean(), ctx)
    view = res.view
    assert view.updates is None and not view.has_plaintext_updates
    assert view.channel == "secagg"
    assert torch.equal(view.aggregate, res.aggregation.delta)
    masked = view.masked
    assert masked.vectors.shape == (len(batch), batch.deltas.shape[1] + 1)
    values, weights = channel.codecs(len(batch))
    for i, cid in enumerate(masked.client_ids):
        row = batch.deltas[batch.client_ids.tolist().index(cid)].numpy()
        encoded = values.encode(np.clip(row, -1, 1) * 0.5)
        assert np.count_nonzero(masked.vectors[i, :-1] == encoded) < 5  # nothing in the clear


def test_bytes_up_are_the_lengths_of_the_messages_sent():
    n, d = 6, 40
    batch = _batch(n=n, d=d)
    res = SecAggChannel(SecAggConfig(), max_weight=60).transmit(
        batch, WeightedMean(), _ctx(d, batch.client_ids)
    )
    # From the wire formats (messages.py), complete graph, no dropouts, per client:
    share_ct = NONCE_BYTES + messages.SharePlaintext.SIZE + TAG_BYTES
    advertise = 2 * KEY_BYTES
    share_keys = 4 + (n - 1) * (2 * ID_BYTES + share_ct)
    masked = 4 + 4 * (d + 1)
    unmask = 4 + n * (ID_BYTES + 1 + shamir.SHARE_BYTES)
    assert res.bytes_up == n * (advertise + share_keys + masked + unmask)
    assert res.bytes_up > n * d * 4  # more than the plain channel


def test_refuses_an_aggregator_other_than_the_weighted_mean():
    class Median(Aggregator):
        def aggregate(self, batch, ctx):
            return AggregationResult(batch.deltas.median(dim=0).values)

    batch = _batch()
    with pytest.raises(ConfigError, match="only the weighted mean.*Median"):
        SecAggChannel(SecAggConfig(), max_weight=60).transmit(
            batch, Median(), _ctx(300, batch.client_ids)
        )


def test_too_few_survivors_abort_without_an_aggregate():
    batch = _batch(n=6)
    channel = SecAggChannel(SecAggConfig(threshold=1.0, dropout=0.5), max_weight=60)
    res = channel.transmit(batch, WeightedMean(), _ctx(300, batch.client_ids))
    assert res.aggregation is None and res.view.aggregate is None
    assert "aborted" in res.info["secagg_abort"] and "fewer than" in res.info["secagg_abort"]
    lost = [c for s, ids in res.info["secagg_vanished"].items() if s != "unmasking" for c in ids]
    assert sorted(lost) == res.dropped.tolist()


def test_a_single_client_is_not_aggregated():
    batch = _batch(n=1)
    res = SecAggChannel(SecAggConfig(), max_weight=60).transmit(
        batch, WeightedMean(), _ctx(300, batch.client_ids)
    )
    assert res.aggregation is None and "at least 2 clients" in res.info["secagg_abort"]


def test_a_weight_above_max_weight_is_an_error():
    batch = _batch()
    with pytest.raises(PrivflError, match="max_weight"):
        SecAggChannel(SecAggConfig(), max_weight=10).transmit(
            batch, WeightedMean(), _ctx(300, batch.client_ids)
        )


def test_dropouts_are_drawn_from_the_round_stream():
    batch = _batch(n=10)
    channel = SecAggChannel(SecAggConfig(dropout=0.3), max_weight=60)
    a = channel.transmit(batch, WeightedMean(), _ctx(300, batch.client_ids, round=4))
    b = channel.transmit(batch, WeightedMean(), _ctx(300, batch.client_ids, round=4))
    c = channel.transmit(batch, WeightedMean(), _ctx(300, batch.client_ids, round=5))
    assert a.info["secagg_vanished"] == b.info["secagg_vanished"]
    assert sum(len(v) for v in a.info["secagg_vanished"].values()) == 3
    assert a.info["secagg_vanished"] != c.info["secagg_vanished"]
    assert torch.equal(a.aggregation.delta, b.aggregation.delta)  # the masks cancel exactly


def test_split_survivors_abort_unless_allow_insecure():
    # k = 2 on 20 clients with 30% dropout: the ring often splits. The same rounds (graph and
    # dropouts come from the round's streams) abort by default and complete with the parts
    # listed under allow_insecure, whose aggregate is then the survivors' mean.
    batch = _batch(n=20, d=50)
    safe = SecAggChannel(SecAggConfig(neighbours=2, dropout=0.3), max_weight=60)
    study = SecAggChannel(
        SecAggConfig(neighbours=2, dropout=0.3, allow_insecure=True), max_weight=60
    )
    splits = 0
    for round in range(1, 9):
        ctx = _ctx(50, batch.client_ids, round=round)
        a = safe.transmit(batch, WeightedMean(), ctx)
        b = study.transmit(batch, WeightedMean(), ctx)
        assert a.info["secagg_insecure"] is False and b.info["secagg_insecure"] is True
        assert a.info["secagg_split"] == []
        if b.info["secagg_split"]:
            splits += 1
            parts = b.info["secagg_split"]
            assert len(parts) > 1 and b.aggregation is not None
            assert sorted(c for p in parts for c in p) == b.view.client_ids.tolist()
            assert a.aggregation is None and "not connected" in a.info["secagg_abort"]
            assert f"{len(parts)} parts" in a.info["secagg_abort"]
            ref = _reference_mean(batch, 1.0, b.view.client_ids)
            np.testing.assert_allclose(b.aggregation.delta.numpy(), ref, atol=1e-6)
        elif b.aggregation is not None:
            assert a.aggregation is not None
            assert torch.equal(a.aggregation.delta, b.aggregation.delta)
    assert splits > 0  # the scenario does occur, so the test can fail
