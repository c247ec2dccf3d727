"""DP-FedAvg: clipping bound, the noise variance the ledger claims, the fixed denominator,
the adaptive clip and its honest noise split, equivalence with FedAvg at sigma = 0."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import small_config
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.defenses.dp.central import (
    ClipBound,
    ClipUpdates,
    GaussianSumNoise,
    split_noise_multiplier,
)
from privfl.defenses.dp.clipping import clip_rows
from privfl.errors import ConfigError
from privfl.federation import Federation
from privfl.ledger import SERVER, Ledger
from privfl.stages import AggregationResult, RoundContext
from privfl.update import ParamSpec, UpdateBatch


def _ctx(round=1, dim=4, n=10, ledger=None):
    spec = ParamSpec(("w",), ((dim,),), (0,), dim)
    return RoundContext(
        round, 0, torch.zeros(dim), spec, n, np.arange(n), ledger or Ledger(delta=1e-5)
    )


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(1, 50),
    st.floats(1e-3, 1e3),
    st.floats(1e-3, 1e4),
    st.integers(0, 2**31),
)
def test_clipped_rows_have_norm_at_most_s_and_small_rows_are_untouched(n, d, clip, scale, seed):
    rows = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * scale
    out, norms = clip_rows(rows, clip)
    out_norms = torch.linalg.vector_norm(out.double(), dim=1)
    assert bool((out_norms <= clip).all())
    small = norms <= clip
    assert torch.equal(out[small], rows[small])
    big = ~small
    if big.any():  # clipped rows keep their direction and reach the bound (to 1e-5)
        cos = torch.nn.functional.cosine_similarity(out[big].double(), rows[big].double())
        assert torch.allclose(cos, torch.ones_like(cos), atol=1e-6)
        assert torch.allclose(out_norms[big], torch.full_like(out_norms[big], clip), rtol=1e-5)


def test_noise_variance_is_what_the_ledger_claims():
    # Zero updates: the output is noise / (qN); its per-coordinate variance, estimated from
    # 20 rounds x 20000 coordinates, must be (sigma S / (qN))^2 with sigma the ledger's.
    sigma, clip, q, n, dim = 1.3, 0.7, 0.25, 40, 20000
    ledger = Ledger(delta=1e-5)
    stage = GaussianSumNoise(ClipBound(clip), noise_multiplier=sigma, sample_rate=q, num_clients=n)
    draws = []
    for r in range(1, 21):
        ctx = _ctx(r, dim, n, ledger)
        res = stage.apply(AggregationResult(torch.zeros(dim), weight_sum=4.0), ctx)
        draws.append(res.delta.double())
    x = torch.stack(draws)
    claimed = ledger.events[0].noise_multiplier
    assert claimed == sigma and len(ledger.events) == 20
    assert [e.party for e in ledger.events] == [SERVER] * 20
    var = float(x.var())
    assert var == pytest.approx((claimed * clip / (q * n)) ** 2, rel=0.02)
    assert abs(float(x.mean())) < 5 * math.sqrt(var / x.numel())
    # Rounds draw independent noise.
    assert abs(float(torch.corrcoef(x[:2])[0, 1])) < 0.05


def test_fixed_denominator_turns_the_mean_back_into_sum_over_qn():
    batch = UpdateBatch(
        client_ids=np.array([0, 1, 2]),
        deltas=torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.1]]),
        weights=np.array([100.0, 5.0, 7.0]),
    )
    bound = ClipBound(1.0)
    out = ClipUpdates(bound).apply(batch, _ctx(dim=2))
    assert np.array_equal(out.weights, np.ones(3))  # users weigh the same
    assert out.info["dp_clipped_fraction"] == pytest.approx(1 / 3)
    mean = out.deltas.mean(0)
    stage = GaussianSumNoise(bound, noise_multiplier=0.0, sample_rate=0.5, num_clients=10)
    res = stage.apply(AggregationResult(mean, weight_sum=3.0), _ctx(dim=2))
    expected = torch.tensor([0.6 * (1 - 1e-6) + 0.3, 0.8 * (1 - 1e-6) + 0.4 + 0.1]) / 5
    assert torch.allclose(res.delta, expected, atol=1e-6)


def test_noise_split_of_adaptive_clipping_is_one_gaussian_mechanism():
    # Andrew et al. 2021, Thm 1: releasing the sum with sigma_D and the count (sensitivity 1/2)
    # with sigma_b is one Gaussian mechanism with 1/sigma^2 = 1/sigma_D^2 + 1/(2 sigma_b)^2.
    for sigma, sigma_b in [(1.0, 2.0), (0.8, 0.5), (3.0, 10.0)]:
        s_d = split_noise_multiplier(sigma, sigma_b)
        assert s_d > sigma
        assert 1 / s_d**2 + 1 / (2 * sigma_b) ** 2 == pytest.approx(1 / sigma**2, rel=1e-12)
    with pytest.raises(ConfigError, match="count_noise_multiplier = 0.5 leaves no budget"):
        split_noise_multiplier(1.0, 0.5)


def test_adaptive_clip_moves_towards_the_target_quantile():
    # All updates have norm 2: starting at S = 0.5 everything is clipped, so S grows
    # geometrically (exp(eta * gamma) per round without noise) until it passes 2.
    bound = ClipBound(0.5)
    clip_t, noise_t = (
        ClipUpdates(bound),
        GaussianSumNoise(
            bound,
            noise_multiplier=0.0,
            sample_rate=1.0,
            num_clients=8,
            adaptive=True,
            target_quantile=0.5,
            clip_lr=0.2,
            count_noise_multiplier=1e-9,
        ),
    )
    rows = torch.randn(8, 5)
    rows = 2 * rows / rows.norm(dim=1, keepdim=True)
    clips = []
    for r in range(1, 40):
        ctx = _ctx(r, 5, 8)
        b = clip_t.apply(UpdateBatch(np.arange(8), rows, np.ones(8)), ctx)
        noise_t.apply(AggregationResult(b.deltas.mean(0), weight_sum=8.0), ctx)
        clips.append(bound.clip)
    assert clips[0] == pytest.approx(0.5 * math.exp(0.2 * 0.5), rel=1e-6)
    # It settles around 2 (above: all unclipped -> shrinks; below: grows).
    assert all(1.5 < c < 2.5 for c in clips[-10:])


def test_adaptive_count_noise_has_variance_sigma_b_squared():
    bound = ClipBound(1.0)
    stage = GaussianSumNoise(
        bound,
        noise_multiplier=1.0,
        sample_rate=1.0,
        num_clients=1,
        adaptive=True,
        clip_lr=1e-9,
        count_noise_multiplier=2.0,
    )
    est = []
    for r in range(1, 3001):
        res = stage.apply(AggregationResult(torch.zeros(1), weight_sum=0.0), _ctx(r, 1, 1))
        est.append(res.info["dp_unclipped_estimate"])
    assert float(np.var(est)) == pytest.approx(4.0, rel=0.08)


def test_sigma_zero_and_huge_clip_equals_plain_fedavg():
    # Equal client sizes (800 synthetic examples over 10 clients) and q = 1: the fixed
    # denominator qN equals the cohort and uniform weights equal example weights.
    sections = dict(
        data={"name": "synthetic", "samples": 1000, "shape": [1, 6, 6], "clients": 10},
        federation={"rounds": 2, "clients_per_round": 10, "batch_size": 16, "lr": 0.1},
    )
    plain = Federation(small_config(**sections))
    dp = Federation(
        small_config(
            **sections,
            defense={"dp": {"mode": "central", "noise_multiplier": 0.0, "clip": 1e9}},
        )
    )
    for _ in range(2):
        plain.run_round()
        dp.run_round()
    assert torch.allclose(plain.params, dp.params, atol=1e-6)
    assert math.isinf(dp.ledger.epsilon())
    # With noise it differs.
    noisy = Federation(
        small_config(
            **sections,
            defense={"dp": {"mode": "central", "noise_multiplier": 0.5, "clip": 1e9}},
        )
    )
    noisy.run_round()
    plain2 = Federation(small_config(**sections))
    plain2.run_round()
    assert not torch.allclose(plain2.params, noisy.params, atol=1e-3)


def test_a_round_without_sampled_clients_still_releases_noise_and_spends():
    cfg = small_config(
        data={"clients": 10},
        federation={"rounds": 12, "clients_per_round": 1, "batch_size": 16},
        defense={"dp": {"mode": "central", "noise_multiplier": 1.0, "clip": 1.0}},
    )
    fed = Federation(cfg)
    empty_seen = False
    for _ in range(12):
        before = fed.params.clone()
        rec = fed.run_round()
        assert not torch.equal(before, fed.params)  # noise is always released
        empty_seen |= rec["clients"] == []
    assert empty_seen, "the seed must give at least one empty Poisson cohort"
    assert [e.round for e in fed.ledger.events] == list(range(1, 13))
    assert fed.ledger.history(SERVER) == ((1.0, 0.1, 12),)


def test_central_run_resumes_to_the_same_ledger_and_clip(tmp_path):
    import privfl

    cfg = small_config(
        name="c",
        federation={"rounds": 4, "clients_per_round": 4, "batch_size": 16},
        defense={
            "dp": {
                "mode": "central",
                "noise_multiplier": 0.9,
                "clip": 0.5,
                "adaptive": True,
                "count_noise_multiplier": 1.0,
            }
        },
    )
    full = privfl.run(cfg, out=tmp_path / "a", progress=False)
    fed = Federation(cfg, folder=privfl.runfolder.RunFolder.create(tmp_path / "b", "c"))
    fed.folder.write_toml(privfl.runfolder.RunFile.CONFIG, cfg.to_toml_dict())
    fed.run_round()
    fed.run_round()
    resumed = privfl.resume(tmp_path / "b" / "c", progress=False)
    assert torch.equal(resumed.params, full.params)
    assert resumed.ledger.events == full.ledger.events
    assert resumed.metrics[-1]["dp_clip"] == full.metrics[-1]["dp_clip"]
