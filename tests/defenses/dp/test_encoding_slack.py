"""Central DP over secure aggregation and HE: what the aggregate sums of one client stays within
the clip norm S that the ledger assumes, whatever the channel's fixed-point rounding does.

The attack on the old code: an update whose coordinates sit just above half a rounding step
(and whose norm is just within S, so clipping leaves it alone) rounds every coordinate up, and
decodes to ``sqrt(d) (k + 1) step > S``. The decoded contribution is computed here from the
integers the channel would send, exactly (fractions), not with the channel's decoder.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import small_config

from privfl.defenses.dp.central import ClipUpdates
from privfl.defenses.dp.encoding import encoding_slack, per_value_error
from privfl.defenses.quantize import FixedPointCodec
from privfl.errors import ConfigError
from privfl.federation import Federation
from privfl.ledger import Ledger
from privfl.stages import RoundContext
from privfl.update import UpdateBatch

N = 4  # clients in the round (small_config's clients_per_round)
MAX_WEIGHT = 60  # about the largest client's example count: the default max_weight


def _federation(bits: int, clip: float, rounding: str = "nearest", max_weight: float = MAX_WEIGHT):
    cfg = small_config(
        defense={
            "dp": {"mode": "central", "noise_multiplier": 1.0, "clip": clip},
            "secagg": {"bits": bits, "max_weight": max_weight, "rounding": rounding},
        }
    )
    return Federation(cfg)


def _ctx(fed: Federation) -> RoundContext:
    return RoundContext(
        1, 0, fed.params, fed.spec, fed.config.data.clients, np.arange(N), Ledger(delta=1e-5)
    )


def _crafted(values: FixedPointCodec, max_weight: float, dim: int) -> tuple[torch.Tensor, float]:
    """A float32 update whose every coordinate lies 0.5-0.6 of a step above a multiple of the
    channel's step (nearest rounding moves each up), with norm near 1; and a clip S a hair
    above its norm, so that clipping to S leaves it as it is."""
    step = values.clip / values.levels * max_weight  # one level, in update units
    k = math.floor(1 / (math.sqrt(dim) * step))
    v = np.float32((k + 0.55) * step)
    assert 0.5 < float(v) / step - k < 0.6  # float32 keeps it past the half step
    x = torch.full((dim,), float(v), dtype=torch.float32)
    norm = float(torch.linalg.vector_norm(x.double()))
    return x, norm * (1 + 1e-9)


def _decoded_norm_squared(values: FixedPointCodec, residues: np.ndarray, max_weight: float):
    """||decode(row) * max_weight||^2 as an exact fraction: the contribution the aggregate
    sums (the sum of rows decodes to the sum of these; the weight slot divides out)."""
    q = values.centered(values.reduce(residues)).tolist()
    unit = Fraction(values.clip) / values.levels * Fraction(max_weight)
    return sum(Fraction(int(v) ** 2) for v in q) * unit**2


def _clip_transform(fed: Federation) -> ClipUpdates:
    return next(t for t in fed.stages.client_transforms if isinstance(t, ClipUpdates))


@pytest.mark.parametrize("bits", [16, 24, 32])
def test_a_crafted_update_decodes_within_the_clip_norm(bits):
    probe = _federation(bits, 1.0)
    values, _ = probe.stages.channel.codecs(N)
    dim = probe.spec.dim
    x, s = _crafted(values, MAX_WEIGHT, dim)
    fed = _federation(bits, s)  # S a hair above ||x||: DP's clip leaves x as it is
    batch = UpdateBatch(np.arange(N), x.repeat(N, 1), np.full(N, 7.0))
    ctx = _ctx(fed)
    sent = _clip_transform(fed).apply(batch, ctx)
    rows, _ = fed.stages.channel.encode(sent, ctx, *fed.stages.channel.codecs(N))
    bound = Fraction(s) ** 2
    for i in range(N):
        got = _decoded_norm_squared(values, rows[i, :dim], MAX_WEIGHT)
        ratio = math.sqrt(got / bound)
        assert got <= bound, f"bits {bits}: the decoded contribution is {ratio:.6g} x S"


@pytest.mark.parametrize("bits", [16, 24, 32])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_large_updates_decode_within_the_clip_norm(bits, rounding):
    fed = _federation(bits, 0.5, rounding)
    dim = fed.spec.dim
    g = torch.Generator().manual_seed(bits)
    deltas = torch.randn(N, dim, generator=g) * torch.tensor([[0.01], [0.3], [1.0], [50.0]])
    ctx = _ctx(fed)
    sent = _clip_transform(fed).apply(UpdateBatch(np.arange(N), deltas, np.ones(N)), ctx)
    values, _ = fed.stages.channel.codecs(N)
    rows, _ = fed.stages.channel.encode(sent, ctx, values, fed.stages.channel.codecs(N)[1])
    for i in range(N):
        assert _decoded_norm_squared(values, rows[i, :dim], MAX_WEIGHT) <= Fraction(0.5) ** 2


@pytest.mark.parametrize("bits", [16, 24, 32])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_slack_is_sqrt_d_times_the_worst_rounding_of_one_value(bits, rounding):
    """Independent: one level is c / M with M = floor((2^(bits-1) - 1) / n); nearest rounding
    moves a value by up to half a level, stochastic by up to a whole one (a generator whose
    draws are all just below 1 rounds up a value just above a level: the worst case)."""
    fed = _federation(bits, 1.0, rounding)
    dim = fed.spec.dim
    levels = (2 ** (bits - 1) - 1) // N
    worst = (0.5 if rounding == "nearest" else 1.0) / levels * MAX_WEIGHT
    slack = encoding_slack(fed.stages.channel, N, dim)
    assert slack == pytest.approx(math.sqrt(dim) * worst, rel=1e-6)
    assert slack >= math.sqrt(dim) * worst  # the float64 product's error is included

    class AlmostOne:
        def random(self, shape):
            return np.full(shape, 1 - 2.0**-40)

    values, _ = fed.stages.channel.codecs(N)
    y = np.full(dim, 1e-3 / levels)  # just above level 0, in the channel's units (rho y)
    q = values.quantize(y, AlmostOne() if rounding == "stochastic" else None)
    moved = np.abs(q / values.scale - y) * MAX_WEIGHT
    assert float(moved.max()) <= per_value_error(fed.stages.channel, N)
    if rounding == "stochastic":
        assert float(moved.max()) > 0.99 * worst  # the bound is reached, not loose


def test_slack_grows_with_the_cohort_and_shrinks_with_the_weight_scale():
    fed = _federation(16, 1.0)
    dim = fed.spec.dim
    small, large = (encoding_slack(fed.stages.channel, n, dim) for n in (4, 40))
    assert large > 9 * small
    fed1 = _federation(16, 1.0, max_weight=1.0)
    assert encoding_slack(fed1.stages.channel, 4, dim) == pytest.approx(small / MAX_WEIGHT)


def test_the_plain_channel_has_no_slack():
    fed = Federation(small_config(defense={"dp": {"mode": "central", "noise_multiplier": 1.0}}))
    assert encoding_slack(fed.stages.channel, 4, fed.spec.dim) == 0.0
    assert _clip_transform(fed).slack is None


def test_a_slack_as_large_as_the_clip_is_refused_with_the_fix():
    # bits 16, 10 clients a round, max_weight 150: one level is 150 / 3276 = 0.046 in
    # update units; half of it times sqrt(2410) = 1.12 > clip 1.
    cfg = small_config(
        federation={"clients_per_round": 10},
        defense={
            "dp": {"mode": "central", "noise_multiplier": 1.0, "clip": 1.0},
            "secagg": {"bits": 16, "max_weight": 150},
        },
    )
    with pytest.raises(ConfigError, match=r"max_weight = 1.*raise defense\.dp\.clip"):
        Federation(cfg)


def test_a_round_whose_cohort_leaves_no_room_sends_zeros():
    fed = _federation(16, 0.2)  # fine at 4 clients, not at 40
    dim = fed.spec.dim
    assert encoding_slack(fed.stages.channel, 40, dim) > 0.2
    batch = UpdateBatch(np.arange(40), torch.ones(40, dim), np.ones(40))
    out = _clip_transform(fed).apply(batch, _ctx(fed))
    assert torch.equal(out.deltas, torch.zeros(40, dim))
    assert out.info["dp_clipped_fraction"] == 1.0


def test_central_dp_over_secagg_at_16_bits_runs_and_reports_the_slack():
    cfg = small_config(
        federation={"rounds": 2},
        defense={
            "dp": {"mode": "central", "noise_multiplier": 0.5, "clip": 1.0},
            "secagg": {"bits": 16, "max_weight": 1.0},
        },
    )
    fed = Federation(cfg)
    records = [fed.run_round() for _ in range(2)]
    for rec in records:
        n = len(rec["clients"])
        if n:
            expected = encoding_slack(fed.stages.channel, n, fed.spec.dim)
            assert rec["dp_encoding_slack"] == pytest.approx(expected)
            assert 0 < rec["dp_encoding_slack"] < 0.02  # weight 1: a level is 1 / 8191


def _bfv_federation(clip: float) -> Federation:
    cfg = small_config(
        defense={
            "dp": {"mode": "central", "noise_multiplier": 1.0, "clip": clip},
            "he": {"scheme": "bfv", "plain_modulus_bits": 20, "max_weight": MAX_WEIGHT},
        }
    )
    return Federation(cfg)


def test_bfv_contribution_decodes_within_the_clip_norm():
    """BFV decrypts sums exactly; its error is the same fixed-point rounding (prime modulus)."""
    pytest.importorskip("tenseal")
    values, _ = _bfv_federation(1.0).stages.channel._scheme.codecs(N)
    x, s = _crafted(values, MAX_WEIGHT, _bfv_federation(1.0).spec.dim)
    fed = _bfv_federation(s)
    dim = fed.spec.dim
    batch = UpdateBatch(np.arange(N), x.repeat(N, 1), np.ones(N))
    sent = _clip_transform(fed).apply(batch, _ctx(fed))
    unit = Fraction(values.clip) / values.levels * MAX_WEIGHT
    for chunks in fed.stages.channel._scheme.encode(sent, lambda c: None).rows:
        q = chunks.reshape(-1)[:dim].tolist()
        assert sum(Fraction(v * v) for v in q) * unit**2 <= Fraction(s) ** 2


def test_ckks_slack_is_its_noise_bound_plus_the_key_holders_grid():
    """CKKS: fresh-encryption noise on the contribution, and the key holder rounds the sum to
    a grid; with and without one user the rounded sums differ by the contribution plus at
    most one grid step per value."""
    pytest.importorskip("tenseal")
    cfg = small_config(defense={"dp": {"mode": "central", "noise_multiplier": 1.0}, "he": {}})
    fed = Federation(cfg)
    scheme = fed.stages.channel._scheme
    grid = scheme.grid(N, scheme.bound)
    assert grid >= scheme.grid(N, 1.0) >= 2 * N * scheme.params.noise_bound
    e = scheme.params.noise_bound + grid
    dim = fed.spec.dim
    assert encoding_slack(fed.stages.channel, N, dim) == pytest.approx(math.sqrt(dim) * e)
    # Measured: the others' ciphertext with and without one more added, decrypted and rounded
    # to the grid as the key holder does, moves by the contribution and less than e a value.
    context = scheme.create_context()
    rng = np.random.default_rng(0)
    others = scheme.vector(context, rng.normal(size=scheme.slots) * 0.01)
    x = rng.normal(size=scheme.slots) * 0.01

    def released(vector):
        return np.round(scheme.decrypt(vector) / grid) * grid

    moved = released(others + scheme.vector(context, x)) - released(others) - x
    assert float(np.abs(moved).max()) <= e


@pytest.mark.parametrize("error_feedback", [False, True])
def test_shared_random_k_scales_the_slack_by_d_over_k(error_feedback):
    """Shared-seed random-k sends k coordinates unscaled; the server multiplies the decoded
    ones by d / k (without error feedback), and so their rounding error."""
    cfg = small_config(
        defense={
            "dp": {"mode": "central", "noise_multiplier": 1.0, "clip": 1.0},
            "secagg": {"bits": 32, "max_weight": 1.0},
        },
        compression={
            "method": "randk",
            "ratio": 0.1,
            "shared_seed": True,
            "error_feedback": error_feedback,
        },
    )
    fed = Federation(cfg)
    d = fed.spec.dim
    k = round(0.1 * d)
    e = per_value_error(fed.stages.channel, N)
    scale = 1.0 if error_feedback else d / k
    assert _clip_transform(fed).slack(N) == pytest.approx(math.sqrt(k) * scale * e)
