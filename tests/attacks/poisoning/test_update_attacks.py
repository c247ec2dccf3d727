"""Update-level attacks: closed forms, which rows they touch, and what they may read."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from privfl.aggregation import weighted_mean
from privfl.attacks.poisoning import (
    ALittleIsEnough,
    GaussianNoise,
    InnerProductManipulation,
    MinMax,
    MinSum,
    ModelReplacement,
    PoisoningThreat,
    SignFlipping,
    a_little_is_enough,
)
from privfl.attacks.poisoning.a_little_is_enough import alie_z_max
from privfl.attacks.poisoning.config import Knowledge
from privfl.attacks.poisoning.model_replacement import replacement_boost
from privfl.seeding import torch_generator
from privfl.update import UpdateBatch


def _ctx(round_=1, seed=0):
    return SimpleNamespace(round=round_, torch_rng=lambda *p: torch_generator(seed, *p, round_))


def _batch(seed=0, n=8, d=40):
    g = torch.Generator().manual_seed(seed)
    ids = np.arange(100, 100 + n, dtype=np.int64)
    return UpdateBatch(ids, torch.randn(n, d, generator=g), np.arange(1.0, n + 1))


MALICIOUS = np.array([101, 104, 106])


def _threat(knowledge=Knowledge.OMNISCIENT, start=1):
    return PoisoningThreat(MALICIOUS, 200, start_round=start, knowledge=knowledge)


ATTACKS = {
    "sign_flip": lambda t: SignFlipping(t, 4.0),
    "gaussian": lambda t: GaussianNoise(t, 2.0),
    "alie": lambda t: ALittleIsEnough(t, 1.0),
    "ipm": lambda t: InnerProductManipulation(t, 0.5),
    "min_max": lambda t: MinMax(t, "std"),
    "min_sum": lambda t: MinSum(t, "unit"),
    "model_replacement": lambda t: ModelReplacement(t, server_lr=1.0),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_only_malicious_rows_change_and_the_input_is_untouched(name):
    batch = _batch()
    before = batch.deltas.clone()
    out = ATTACKS[name](_threat()).apply(batch, _ctx())
    assert torch.equal(batch.deltas, before)
    bad = np.isin(batch.client_ids, MALICIOUS)
    assert torch.equal(out.deltas[~bad], before[~bad])
    assert not torch.equal(out.deltas[bad], before[bad])
    assert np.array_equal(out.weights, batch.weights) and np.array_equal(
        out.client_ids, batch.client_ids
    )


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_honest_before_the_start_round(name):
    batch = _batch()
    out = ATTACKS[name](_threat(start=5)).apply(batch, _ctx(round_=4))
    assert torch.equal(out.deltas, batch.deltas)


def test_sign_flipping_and_boosting_are_scaled_copies():
    batch = _batch()
    bad = torch.from_numpy(np.isin(batch.client_ids, MALICIOUS))
    out = SignFlipping(_threat(), 4.0).apply(batch, _ctx())
    torch.testing.assert_close(out.deltas[bad], -4.0 * batch.deltas[bad])
    out = ModelReplacement(_threat(), server_lr=0.5).apply(batch, _ctx())
    # n = 8 updates, 3 attackers, eta = 0.5: gamma = 8 / (0.5 * 3)
    torch.testing.assert_close(out.deltas[bad], 8 / 1.5 * batch.deltas[bad])


def test_model_replacement_boost_replaces_the_global_model():
    # Bagdasaryan et al. Eq. (3): with benign updates that cancel out and equal weights,
    # G + eta * mean(updates) is exactly the attackers' mean model.
    rng = np.random.default_rng(0)
    n, m, eta, d = 10, 3, 0.7, 25
    g = torch.from_numpy(rng.standard_normal(d).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((m, d)).astype(np.float32))
    benign = torch.from_numpy(rng.standard_normal((n - m, d)).astype(np.float32))
    benign -= benign.mean(dim=0)
    gamma = replacement_boost(n, m, eta)
    deltas = torch.cat([gamma * (x - g), benign])
    new = g + eta * weighted_mean(deltas, torch.ones(n))
    torch.testing.assert_close(new, x.mean(dim=0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("knowledge", list(Knowledge))
def test_statistical_attacks_read_benign_rows_only_when_omniscient(knowledge):
    batch = _batch()
    bad = np.isin(batch.client_ids, MALICIOUS)
    ref = batch.deltas[torch.from_numpy(~bad if knowledge is Knowledge.OMNISCIENT else bad)]
    ref64 = ref.double().numpy()
    out = InnerProductManipulation(_threat(knowledge), 0.5).apply(batch, _ctx())
    want = -0.5 * ref64.mean(axis=0)
    for row in out.deltas[torch.from_numpy(bad)]:
        np.testing.assert_allclose(row.numpy(), want, rtol=1e-5, atol=1e-6)
    out = ALittleIsEnough(_threat(knowledge), 1.3).apply(batch, _ctx())
    want = ref64.mean(axis=0) + 1.3 * ref64.std(axis=0)
    for row in out.deltas[torch.from_numpy(bad)]:
        np.testing.assert_allclose(row.numpy(), want, rtol=1e-5, atol=1e-5)


def test_omniscient_attackers_without_benign_peers_use_their_own_rows():
    batch = _batch(n=3)
    batch = UpdateBatch(MALICIOUS.copy(), batch.deltas, batch.weights)
    out = InnerProductManipulation(_threat(), 1.0).apply(batch, _ctx())
    torch.testing.assert_close(out.deltas[0], -batch.deltas.mean(dim=0))


def _phi(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


@pytest.mark.parametrize(("n", "m"), [(50, 10), (51, 12), (10, 2), (20, 4), (7, 3)])
def test_alie_z_max_is_the_quantile_of_the_supporters(n, m):
    z = alie_z_max(n, m)
    s = math.floor(n / 2 + 1) - m
    assert _phi(z) == pytest.approx((n - s) / n, abs=1e-12)


def test_alie_z_max_example_and_limits():
    # n = 50, m = 10: s = 26 - 10 = 16 supporters, Phi(z) = 34/50 = 0.68, z = 0.4677.
    assert alie_z_max(50, 10) == pytest.approx(0.46770, abs=1e-4)
    with pytest.raises(ValueError):
        alie_z_max(10, 6)


def test_alie_moves_every_coordinate_by_z_standard_deviations():
    x = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 13.0]])
    out = a_little_is_enough(x, 2.0)
    sd = x.double().numpy().std(axis=0)
    np.testing.assert_allclose(out.numpy(), [3.0 + 2 * sd[0], 11.0 + 2 * sd[1]], rtol=1e-6)


def test_alie_is_the_authors_gradient_attack_in_update_space():
    # moranant/attacking_distributed_learning, malicious.py (DriftAttack): the attackers send
    # the gradient mean_g - z * std_g, and the server steps by -lr * g.
    g = torch.randn(7, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lr, z = 0.1, 1.5
    authors_gradient = g.mean(dim=0) - z * g.std(dim=0, correction=0)
    crafted_update = a_little_is_enough((-lr * g).float(), z).double()
    torch.testing.assert_close(crafted_update, -lr * authors_gradient, rtol=1e-5, atol=1e-6)


def test_gaussian_noise_statistics_and_determinism():
    batch = _batch(d=20000)
    a = GaussianNoise(_threat(), 2.0).apply(batch, _ctx(round_=3))
    b = GaussianNoise(_threat(), 2.0).apply(batch, _ctx(round_=3))
    c = GaussianNoise(_threat(), 2.0).apply(batch, _ctx(round_=4))
    bad = torch.from_numpy(np.isin(batch.client_ids, MALICIOUS))
    noise = a.deltas[bad].double()
    # 60,000 draws: the sample std is within 2% of sigma, the mean within 4 sigma/sqrt(N).
    assert abs(float(noise.std()) - 2.0) < 0.04
    assert abs(float(noise.mean())) < 4 * 2.0 / math.sqrt(noise.numel())
    assert torch.equal(a.deltas, b.deltas) and not torch.equal(a.deltas, c.deltas)
