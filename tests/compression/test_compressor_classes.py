"""One Compressor class per method, registered by name: the registry covers every config
name, and each class's wire format, decoder, support, scale and aggregator agree with what
it sends."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from privfl.compression import (
    COMPRESSORS,
    QSGD,
    CompressionConfig,
    CompressionMethod,
    Compressor,
    CompressUpdates,
    MajorityVote,
    RandK,
    SignSGD,
    TopK,
    create_compressor,
)
from privfl.ledger import Ledger
from privfl.stages import RoundContext
from privfl.update import ParamSpec, UpdateBatch

CONFIGS = [
    {"method": "topk", "ratio": 0.05},
    {"method": "randk", "ratio": 0.05},
    {"method": "randk", "ratio": 0.05, "shared_seed": True},
    {"method": "randk", "ratio": 0.05, "error_feedback": True},
    {"method": "qsgd", "levels": 4},
    {"method": "sign"},
]


def _ctx(d, ids, r=1):
    spec = ParamSpec(("w",), ((d,),), (0,), d)
    return RoundContext(r, 0, torch.zeros(d), spec, 10, np.asarray(ids), Ledger())


def test_the_registry_holds_one_class_per_config_method():
    literal = typing.get_args(CompressionConfig.model_fields["method"].annotation)
    assert set(COMPRESSORS) == set(CompressionMethod) == set(literal)
    assert dict(COMPRESSORS) == {
        CompressionMethod.TOPK: TopK,
        CompressionMethod.RANDK: RandK,
        CompressionMethod.QSGD: QSGD,
        CompressionMethod.SIGN: SignSGD,
    }
    for key, cls in COMPRESSORS.items():
        assert cls.method == key
        assert issubclass(cls, Compressor)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_each_compressor_decodes_what_it_sends_at_its_message_length(cfg):
    d, ids = 700, np.array([1, 4, 7], dtype=np.int64)
    ctx = _ctx(d, ids, r=3)
    comp = create_compressor(CompressionConfig(**cfg), d)
    assert type(comp) is COMPRESSORS[CompressionMethod(cfg["method"])]
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(3, d)).astype(np.float32))
    payload = comp.compress(x, ids, ctx)
    messages = payload.to_messages()
    assert {len(m) for m in messages} == {comp.message_length(ctx)}
    assert torch.equal(comp.decoder(ctx)(messages), payload.dense())
    # public parameters only: a second instance (the server's) decodes the same
    assert torch.equal(
        create_compressor(CompressionConfig(**cfg), d).decoder(ctx)(messages), payload.dense()
    )


@pytest.mark.parametrize("cfg", CONFIGS)
def test_support_scale_and_aggregator_per_method(cfg):
    d = 700
    ctx = _ctx(d, [0, 1])
    comp = create_compressor(CompressionConfig(**cfg), d)
    support = comp.support(ctx)
    shared = cfg.get("shared_seed", False)
    assert (support is not None) == shared
    if shared:
        dense = comp.compress(torch.ones(2, d), np.array([0, 1]), ctx).dense()
        np.testing.assert_array_equal(np.flatnonzero(dense[0].numpy()), support)
        np.testing.assert_array_equal(np.flatnonzero(dense[1].numpy()), support)
    unbiased_randk = cfg["method"] == "randk" and not CompressionConfig(**cfg).uses_error_feedback
    assert comp.scale == (d / comp.k if unbiased_randk else 1.0)
    assert isinstance(comp.aggregator(), MajorityVote) == (cfg["method"] == "sign")
    if cfg["method"] != "sign":
        assert comp.aggregator() is None


@pytest.mark.parametrize("cfg", CONFIGS)
def test_the_transform_sends_what_its_compressor_encodes(cfg):
    d, ids = 300, np.array([2, 5], dtype=np.int64)
    ctx = _ctx(d, ids, r=2)
    t = CompressUpdates(CompressionConfig(**{**cfg, "error_feedback": False}), d)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(2, d)).astype(np.float32))
    out = t.apply(UpdateBatch(ids, x, np.ones(2)), ctx)
    expected = t.compressor.compress(x, ids, ctx)
    assert out.encoded.messages == expected.to_messages()
    assert out.encoded.support_scale == t.compressor.scale
    assert torch.equal(out.encoded.decode(), out.deltas)
