"""Per-client start models (``Engine.train(..., starts=...)``, what D-PSGD's nodes train
from): the vectorized engine against the sequential one, whose loop simply starts each client
from its own row."""

from __future__ import annotations

import pytest
import torch
from conftest import small_config

from privfl.engine import SequentialEngine, VectorizedEngine
from privfl.federation import Federation

CASES = {
    "plain": {},
    "momentum+wd+prox": {"momentum": 0.9, "weight_decay": 1e-3, "prox_mu": 0.5},
}


def _engines(cfg):
    fed = Federation(cfg)
    args = (fed.make_model, fed.spec, fed.data, fed.stages.trainer, cfg.seed)
    return fed, SequentialEngine(*args), VectorizedEngine(*args)


@pytest.mark.parametrize("dp", [False, True])
@pytest.mark.parametrize("path", ["batched-mlp", "torch.func"])
@pytest.mark.parametrize("case", CASES)
def test_vectorized_engine_trains_each_client_from_its_own_start(case, path, dp, monkeypatch):
    monkeypatch.setattr(VectorizedEngine, "use_batched_mlp", path == "batched-mlp")
    defense = {"dp": {"mode": "sample", "noise_multiplier": 0.8, "clip": 0.5}} if dp else {}
    cfg = small_config(
        data={"partition": "dirichlet", "alpha": 0.5, "clients": 10},
        federation={"batch_size": 7, "lr": 0.2, **CASES[case]},
        defense=defense,
    )
    fed, seq, vec = _engines(cfg)
    assert not vec.falls_back
    clients = [6, 1, 3, 8]
    g = torch.Generator().manual_seed(5)
    starts = fed.params + 0.1 * torch.randn(len(clients), fed.spec.dim, generator=g)
    a = seq.train(fed.params, clients, 2, starts=starts)
    b = vec.train(fed.params, clients, 2, starts=starts)
    for u, v, start in zip(a, b, starts, strict=True):
        assert u.client_id == v.client_id and u.num_examples == v.num_examples
        torch.testing.assert_close(u.delta, v.delta, atol=5e-5, rtol=0)
        # the update is relative to the client's own start, and training moved it
        trained = start + u.delta
        assert (trained - start).abs().max() > 1e-3
    # a client starting from the global model gets the update it gets without starts
    same = vec.train(fed.params, clients, 2, starts=fed.params.expand(len(clients), -1))
    plain = vec.train(fed.params, clients, 2)
    for u, v in zip(same, plain, strict=True):
        torch.testing.assert_close(u.delta, v.delta, atol=5e-6, rtol=0)
