"""Local DP: each client's clip and noise, its own stream, per-client accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_config

from privfl.accounting import epsilon_of
from privfl.defenses.dp.local import LocalGaussian
from privfl.federation import Federation
from privfl.ledger import Ledger, client_party
from privfl.stages import RoundContext
from privfl.update import ParamSpec, UpdateBatch


def _ctx(dim, n_clients=100, round=1, ledger=None):
    spec = ParamSpec(("w",), ((dim,),), (0,), dim)
    return RoundContext(
        round, 7, torch.zeros(dim), spec, n_clients, np.arange(3), ledger or Ledger(delta=1e-5)
    )


def test_noise_variance_clip_and_events_per_client():
    dim, sigma, clip = 50000, 0.8, 0.5
    ledger = Ledger(delta=1e-5)
    batch = UpdateBatch(np.array([3, 9, 120]), torch.zeros(3, dim), np.array([5.0, 9.0, 7.0]))
    big = batch.with_deltas(torch.full((3, dim), 1.0))  # norm sqrt(dim) >> clip
    stage = LocalGaussian(clip=clip, noise_multiplier=sigma)
    out = stage.apply(batch, _ctx(dim, ledger=ledger))
    var = out.deltas.double().var(dim=1)
    assert torch.allclose(
        var, torch.full((3,), (sigma * clip) ** 2, dtype=torch.float64), rtol=0.03
    )
    assert np.array_equal(out.weights, np.ones(3))
    # Client 120 is beyond the population (a canary): noised like anyone, but no budget.
    assert [e.party for e in ledger.events] == [client_party(3), client_party(9)]
    assert all(e.sample_rate == 1.0 and e.sensitivity == 2.0 for e in ledger.events)
    # Without noise the rows are clipped to the bound.
    clipped = LocalGaussian(clip=clip, noise_multiplier=0.0).apply(big, _ctx(dim))
    assert bool((clipped.deltas.double().norm(dim=1) <= clip).all())
    assert clipped.info["dp_clipped_fraction"] == 1.0


def test_a_clients_noise_does_not_depend_on_the_cohort():
    stage = LocalGaussian(clip=1.0, noise_multiplier=1.0)
    a = stage.apply(UpdateBatch(np.array([4, 5]), torch.zeros(2, 10), np.ones(2)), _ctx(10))
    b = stage.apply(UpdateBatch(np.array([1, 5]), torch.zeros(2, 10), np.ones(2)), _ctx(10))
    assert torch.equal(a.deltas[1], b.deltas[1]) and not torch.equal(a.deltas[0], b.deltas[0])


def test_local_run_accounts_every_participation_of_every_client():
    cfg = small_config(
        federation={"rounds": 3, "clients_per_round": 4, "batch_size": 16},
        defense={"dp": {"mode": "local", "noise_multiplier": 2.0, "clip": 1.0}},
    )
    fed = Federation(cfg)
    seen: dict[int, int] = {}
    for _ in range(3):
        rec = fed.run_round()
        for c in rec["clients"]:
            seen[c] = seen.get(c, 0) + 1
    eps = fed.ledger.epsilons()
    assert set(eps) == {client_party(c) for c in seen}
    # Each participation is one Gaussian mechanism at sigma / sensitivity = 1, q = 1.
    for c, k in seen.items():
        assert fed.ledger.history(client_party(c)) == ((1.0, 1.0, k),)
        assert eps[client_party(c)] == pytest.approx(epsilon_of(((1.0, 1.0, k),), delta=1e-5))
