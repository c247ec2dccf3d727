"""The vectorized engine against the sequential one (the slow, obvious reference): same
seed, same model to float rounding, with unequal client sizes, momentum, weight decay,
FedProx, exact step counts and full batches; its schedules against the sequential engine's
own batches; and its logged fallback for trainers it cannot vectorize."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import small_config

from privfl.client import SGDTrainer, batch_schedule
from privfl.engine import ENGINES, SequentialEngine, VectorizedEngine
from privfl.engine.schedule import cohort_schedule
from privfl.federation import Federation
from privfl.plan import local_training_of
from privfl.seeding import torch_generator


def _run(cfg, engine: str) -> Federation:
    fed = Federation(
        cfg.model_copy(update={"federation": cfg.federation.model_copy(update={"engine": engine})})
    )
    for _ in range(cfg.federation.rounds):
        fed.run_round()
    return fed


CASES = {
    # Dirichlet sizes differ a lot: padded batches and clients that stop early.
    "dirichlet": {"data": {"partition": "dirichlet", "alpha": 0.3, "clients": 12}},
    "momentum+wd+prox": {
        "federation": {"momentum": 0.9, "weight_decay": 1e-3, "prox_mu": 0.5, "batch_size": 7},
        "data": {"partition": "dirichlet", "alpha": 1.0, "clients": 12},
    },
    "local_steps": {"federation": {"local_steps": 9, "batch_size": 20}},
    "full_batch": {"federation": {"local_steps": 3, "batch_size": "full"}},
    "cnn": {
        "model": {"name": "cnn", "channels": [4], "hidden": [8]},
        "federation": {"rounds": 1, "clients_per_round": 3, "batch_size": 16},
    },
    # the batched CNN kernel's models (no GroupNorm), here through torch.func
    "cnn_no_norm": {
        "model": {"name": "cnn", "channels": [4], "hidden": [8], "norm": "none"},
        "federation": {"rounds": 1, "clients_per_round": 3, "batch_size": 16},
    },
}


@pytest.mark.parametrize("path", ["batched-mlp", "torch.func"])
@pytest.mark.parametrize("case", CASES)
def test_vectorized_gives_the_sequential_model(case, path, monkeypatch):
    if case.startswith("cnn") and path == "batched-mlp":
        pytest.skip("the batched MLP kernel does not take CNNs")
    monkeypatch.setattr(VectorizedEngine, "vectorize_convolutions", True)  # the CNN cases
    monkeypatch.setattr(VectorizedEngine, "use_batched_cnn", False)  # torch.func for them
    monkeypatch.setattr(VectorizedEngine, "use_batched_mlp", path == "batched-mlp")
    base = {"federation": {"rounds": 3, "clients_per_round": 5, "batch_size": 16, "lr": 0.1}}
    sections = {**base, **CASES[case]}
    sections["federation"] = {**base["federation"], **CASES[case].get("federation", {})}
    cfg = small_config(**sections)
    seq, vec = _run(cfg, "sequential"), _run(cfg, "vectorized")
    assert not vec.engine.falls_back
    assert (vec.engine._mlp is not None) == (path == "batched-mlp") and vec.engine._cnn is None
    moved = (seq.params - Federation(cfg).params).abs().max()
    assert moved > 1e-2  # training did something
    assert torch.allclose(vec.params, seq.params, atol=2e-5, rtol=0)
    for a, b in zip(seq.metrics, vec.metrics, strict=True):
        assert a["clients"] == b["clients"] and a["examples"] == b["examples"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_schedule_reproduces_each_clients_batches():
    cfg = small_config(
        data={"partition": "dirichlet", "alpha": 0.3, "clients": 12},
        federation={"batch_size": 8, "local_epochs": 2},
    )
    fed = Federation(cfg)
    parts = fed.data.partition.indices
    clients = [0, 3, 5, 7, 11]
    sched = cohort_schedule(parts, clients, local_training_of(cfg), cfg.seed, 4)
    assert sched.padded and list(np.diff(sched.steps) <= 0) == [True] * (len(clients) - 1)
    for row, i in enumerate(sched.order.tolist()):
        cid = clients[i]
        g = torch_generator(cfg.seed, "client", 4, cid)
        expected = [
            torch.from_numpy(parts[cid])[idx]
            for idx in batch_schedule(len(parts[cid]), 8, 2, None, g)
        ]
        assert sched.steps[row] == len(expected)
        for t, b in enumerate(expected):
            got = sched.index[t, row][sched.mask[t, row] > 0]
            assert torch.equal(got, b)
        assert all(sched.active[t] > row for t in range(len(expected)))
        assert all(sched.active[t] <= row for t in range(len(expected), len(sched.active)))


class _OwnTrainer(SGDTrainer):
    """A trainer the vectorized engine does not know (as a poisoner's would be)."""


def test_cnn_falls_back_without_the_batched_kernel(caplog, monkeypatch):
    monkeypatch.setattr(VectorizedEngine, "use_batched_cnn", False)
    cfg = small_config(model={"name": "cnn", "channels": [4], "hidden": [8]})
    with caplog.at_level(logging.WARNING, logger="privfl.engine.vectorized"):
        fed = Federation(
            cfg.model_copy(
                update={"federation": cfg.federation.model_copy(update={"engine": "vectorized"})}
            )
        )
    assert fed.engine.falls_back and "convolutions" in caplog.text
    assert "the batched CNN kernel is switched off" in caplog.text


def test_unknown_trainer_falls_back_to_sequential_with_a_logged_reason(caplog):
    cfg = small_config(federation={"rounds": 2})
    fed = Federation(cfg)
    trainer = _OwnTrainer(local_training_of(cfg))
    args = (fed.make_model, fed.spec, fed.data, trainer, cfg.seed)
    with caplog.at_level(logging.WARNING, logger="privfl.engine.vectorized"):
        vec = VectorizedEngine(*args)
    assert vec.falls_back
    assert "_OwnTrainer is neither the plain SGD trainer nor the DP-SGD trainer" in caplog.text
    seq = SequentialEngine(*args)
    a, b = seq.train(fed.params, [1, 4, 7], 1), vec.train(fed.params, [1, 4, 7], 1)
    assert all(torch.equal(u.delta, v.delta) for u, v in zip(a, b, strict=True))


DP_CASES = {
    "sigma1": {"noise_multiplier": 1.0, "clip": 1.0},
    "tight_clip_momentum": {"noise_multiplier": 0.7, "clip": 0.05},
    "no_noise": {"noise_multiplier": 0.0, "clip": 0.5},
}


@pytest.mark.parametrize("path", ["ghost-norms", "nested-vmap"])
@pytest.mark.parametrize("case", DP_CASES)
def test_vectorized_dp_sgd_gives_the_opacus_model_for_the_same_noise(case, path, monkeypatch):
    # Same seed: the same Poisson lots and the same noise draws as DPSGDTrainer on Opacus, so
    # the models agree to float rounding, and the ledger's epsilon is the same. The MLP's
    # clipped sums come from the batched kernel's ghost norms or from per-example gradients.
    monkeypatch.setattr(VectorizedEngine, "use_batched_mlp", path == "ghost-norms")
    fed_extra = {"momentum": 0.5, "prox_mu": 0.1} if case == "tight_clip_momentum" else {}
    cfg = small_config(
        data={"partition": "dirichlet", "alpha": 0.5, "clients": 10},
        federation={"rounds": 2, "clients_per_round": 4, "batch_size": 12, "lr": 0.5, **fed_extra},
        defense={"dp": {"mode": "sample", **DP_CASES[case]}},
    )
    seq, vec = _run(cfg, "sequential"), _run(cfg, "vectorized")
    assert not vec.engine.falls_back
    assert (vec.engine._dp._mlp is not None) == (path == "ghost-norms")
    moved = (seq.params - Federation(cfg).params).abs().max()
    assert moved > 1e-2
    assert torch.allclose(vec.params, seq.params, atol=5e-5, rtol=0)
    for a, b in zip(seq.metrics, vec.metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["dp_clipped_fraction"] == pytest.approx(b["dp_clipped_fraction"], abs=1e-9)
    if DP_CASES[case]["noise_multiplier"] > 0:
        assert seq.ledger.to_json() == vec.ledger.to_json()
        assert 0 < seq.metrics[-1]["dp_clipped_fraction"] <= 1


def test_registered():
    assert ENGINES["vectorized"] is VectorizedEngine


def test_ten_thousand_clients_are_index_arrays_and_train_alike():
    # 10,000 registered clients cost their index arrays (one int64 per example, no copies of
    # the features), and both engines train a cohort drawn from them to the same model.
    cfg = small_config(
        data={
            "name": "synthetic",
            "samples": 25_000,
            "shape": [6],
            "test_fraction": 0.2,
            "partition": "iid",
            "clients": 10_000,
        },
        federation={"rounds": 2, "clients_per_round": 30, "batch_size": 1, "lr": 0.1},
    )
    seq, vec = _run(cfg, "sequential"), _run(cfg, "vectorized")
    parts = seq.data.partition.indices
    assert len(parts) == 10_000
    assert sum(p.nbytes for p in parts) == 8 * len(seq.data.bundle.train)
    assert torch.allclose(vec.params, seq.params, atol=1e-5, rtol=0)
