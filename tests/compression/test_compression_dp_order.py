"""Compression after DP: under central DP the compressed update is clipped again to S (its
encoding scaled, so it stays an encoding); majority vote runs end to end."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import small_config

import privfl
from privfl.compression import CompressionConfig, CompressUpdates, MajorityVote
from privfl.defenses.dp.central import ClipBound, ClipUpdates
from privfl.ledger import Ledger
from privfl.stages import RoundContext, RoundNotes
from privfl.update import ParamSpec, UpdateBatch


@pytest.mark.parametrize(
    "cfg",
    [
        {"method": "randk", "ratio": 0.05, "error_feedback": False},  # d/k = 20x scaling
        {"method": "qsgd", "levels": 2},
        {"method": "sign"},
        {"method": "topk", "ratio": 0.1, "error_feedback": True},
    ],
)
def test_central_dp_clips_the_compressed_update(cfg):
    d, n, clip = 600, 5, 0.5
    rng = np.random.default_rng(0)
    ids = np.arange(n, dtype=np.int64)
    ctx = RoundContext(1, 0, torch.zeros(d), ParamSpec(("w",), ((d,),), (0,), d), 10, ids, Ledger())
    x = torch.from_numpy(rng.normal(0, 0.1, (n, d)).astype(np.float32))
    bound = ClipBound(clip)
    batch = ClipUpdates(bound).apply(UpdateBatch(ids, x, np.ones(n)), ctx)
    assert ctx.notes.clip is not None and ctx.notes.clip.send_clip == clip  # the round's note
    free = CompressUpdates(CompressionConfig(**cfg), d).apply(
        batch, replace(ctx, notes=RoundNotes())
    )
    out = CompressUpdates(CompressionConfig(**cfg), d).apply(batch, ctx)
    norms = torch.linalg.vector_norm(out.deltas.double(), dim=1)
    assert (norms <= clip).all()
    assert torch.equal(out.encoded.decode(), out.deltas)
    # the same encoding, scaled row by row (norms above S brought down to S)
    free_norms = torch.linalg.vector_norm(free.deltas.double(), dim=1)
    factor = torch.clamp(clip / free_norms, max=1.0)
    torch.testing.assert_close(
        out.deltas.double(), free.deltas.double() * factor[:, None], rtol=1e-5, atol=1e-7
    )
    if cfg["method"] in ("randk", "qsgd"):
        assert (free_norms > clip).any()  # without the second clip the bound would break
    else:  # top-k keeps a subset; the scaled sign has norm ||x||_1 / sqrt(d) <= ||x||_2
        assert (free_norms <= clip).all()


def test_central_dp_plan_orders_clipping_before_compression_by_slot():
    cfg = small_config(
        defense={"dp": {"mode": "central", "noise_multiplier": 1.0}},
        compression={"method": "randk", "shared_seed": True},
    )
    fed = privfl.Federation(cfg)
    names = [type(t).__name__ for t in fed.stages.client_transforms]
    assert names.index("ClipUpdates") < names.index("CompressUpdates")
    record = fed.run_round()  # the compressed updates respect the round's clip note
    assert record["dp_clip"] == 1.0


def test_sign_runs_with_majority_vote_and_counts_one_bit_a_coordinate():
    cfg = small_config(compression={"method": "sign"})
    res = privfl.run(cfg, out=None, progress=False)
    fed = privfl.Federation(cfg)
    assert isinstance(fed.stages.aggregator, MajorityVote)
    d = res.params.numel()
    for rec in res.metrics:
        assert rec["bytes_up"] == len(rec["clients"]) * (4 + -(-d // 8))
