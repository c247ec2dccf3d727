"""Config validation of [compression] beside secure channels, and shared-seed random-k /
QSGD actually summing under secure aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_config

from privfl.aggregation import WeightedMean
from privfl.channel import PlainChannel
from privfl.compression import CompressionConfig, CompressUpdates
from privfl.defenses.secagg.channel import SecAggChannel, mean_error_bound
from privfl.defenses.secagg.config import SecAggConfig
from privfl.errors import ConfigError
from privfl.ledger import Ledger
from privfl.stages import RoundContext
from privfl.update import ParamSpec, UpdateBatch


@pytest.mark.parametrize(
    "compression,defense,match",
    [
        ({"method": "topk"}, {"secagg": {}}, "supports differ"),
        ({"method": "topk"}, {"he": {}}, "supports differ"),
        ({"method": "randk"}, {"secagg": {}}, "shared_seed = true"),
        ({"method": "randk", "shared_seed": True}, {"he": {}}, "encrypts all d coordinates"),
        ({"method": "sign"}, {"secagg": {}}, "majority vote"),
        ({"method": "sign"}, {"dp": {"mode": "central", "noise_multiplier": 1.0}}, "majority"),
        ({"method": "topk", "levels": 4}, {}, "levels applies only when method = 'qsgd'"),
        ({"method": "qsgd", "shared_seed": True}, {}, "shared_seed applies only"),
    ],
)
def test_bad_combinations_are_config_errors(compression, defense, match):
    with pytest.raises(ConfigError, match=match):
        small_config(compression=compression, defense=defense)


@pytest.mark.parametrize(
    "compression", [{"method": "randk", "shared_seed": True}, {"method": "qsgd", "levels": 8}]
)
def test_shared_randk_and_qsgd_are_accepted_with_secagg(compression):
    cfg = small_config(compression=compression, defense={"secagg": {}})
    assert cfg.compression is not None and cfg.defense.secagg is not None


def _round(d=400, n=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(50, n, replace=False)).astype(np.int64)
    spec = ParamSpec(("w",), ((d,),), (0,), d)
    ctx = RoundContext(3, 0, torch.zeros(d), spec, 50, ids, Ledger())
    batch = UpdateBatch(
        ids,
        torch.from_numpy(rng.normal(0, 0.05, (n, d)).astype(np.float32)),
        rng.integers(5, 40, n).astype(np.float64),
    )
    return batch, ctx


@pytest.mark.parametrize(
    "cfg",
    [
        {"method": "randk", "ratio": 0.1, "shared_seed": True, "error_feedback": False},
        {"method": "qsgd", "levels": 8, "error_feedback": False},
    ],
)
def test_compressed_updates_sum_correctly_under_secagg(cfg):
    batch, ctx = _round()
    d = ctx.spec.dim
    sent = CompressUpdates(CompressionConfig(**cfg), d).apply(batch, ctx)
    plain = PlainChannel().transmit(sent, WeightedMean(), ctx)
    channel = SecAggChannel(SecAggConfig(), max_weight=40)
    secure = channel.transmit(sent, WeightedMean(), ctx)
    # the plaintext weighted mean of what was sent (decoded from the bytes), independently
    ref = (batch.weights[:, None] * sent.encoded.decode().numpy().astype(np.float64)).sum(0)
    ref /= batch.weights.sum()
    np.testing.assert_allclose(plain.aggregation.delta.numpy(), ref, atol=1e-6)
    values, weights = channel.codecs(len(batch))
    bound = mean_error_bound(values, weights, batch.weights.sum() / 40, len(batch))
    bound *= sent.encoded.support_scale  # random-k: the raw values are summed, then scaled
    err = np.abs(secure.aggregation.delta.numpy() - ref).max()
    assert err <= bound
    if cfg["method"] == "randk":
        support = sent.encoded.support
        assert len(support) == 40
        off = np.setdiff1d(np.arange(d), support)
        assert (secure.aggregation.delta.numpy()[off] == 0).all()
        # the masked vectors carry only the shared coordinates (+ the weight slot), and raw
        # values: the dense, d/k-scaled vectors would be clipped to [-c, c]
        full = channel.transmit(sent.with_deltas(sent.deltas.clone()), WeightedMean(), ctx)
        assert full.bytes_up - secure.bytes_up == len(batch) * (d - 40) * 4  # 32-bit ring
        assert full.info["secagg_clipped"] > 0 and secure.info["secagg_clipped"] == 0
