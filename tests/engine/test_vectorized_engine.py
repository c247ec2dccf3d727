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

from privfl.client import batch_schedule
from privfl.engine import ENGINES, VectorizedEngine
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
        "model": {"name": "cnn", "channels": [4, 8], "hidden": [16]},
        "federation": {"rounds": 2, "batch_size": 16, "local_epochs": 1},
    },
}


@pytest.mark.parametrize("case", CASES)
def test_vectorized_gives_the_sequential_model(case):
    base = {"federation": {"rounds": 3, "clients_per_round": 5, "batch_size": 16, "lr": 0.1}}
    sections = {**base, **CASES[case]}
    sections["federation"] = {**base["federation"], **CASES[case].get("federation", {})}
    cfg = small_config(**sections)
    seq, vec = _run(cfg, "sequential"), _run(cfg, "vectorized")
    assert not vec.engine.falls_back
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


def test_dp_sgd_trainer_falls_back_to_sequential_with_a_logged_reason(caplog):
    cfg = small_config(
        federation={"engine": "vectorized", "rounds": 1},
        defense={"dp": {"mode": "sample", "noise_multiplier": 1.0, "clip": 1.0}},
    )
    with caplog.at_level(logging.WARNING, logger="privfl.engine.vectorized"):
        fed = Federation(cfg)
    assert fed.engine.falls_back
    assert "DPSGDTrainer is not the plain SGD trainer" in caplog.text
    fed.run_round()
    seq = _run(
        cfg.model_copy(
            update={"federation": cfg.federation.model_copy(update={"engine": "sequential"})}
        ),
        "sequential",
    )
    assert torch.equal(fed.params, seq.params)


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
