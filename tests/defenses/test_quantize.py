"""Fixed-point codec: exact sums within the documented bound, headroom, stochastic rounding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.defenses.quantize import FixedPointCodec, Rounding


@settings(max_examples=40, deadline=None)
@given(
    clip=st.floats(1e-3, 1e3),
    bits=st.integers(16, 53),
    n=st.integers(1, 200),
    seed=st.integers(0, 2**32 - 1),
)
def test_decoded_sum_is_the_rounded_sum_and_within_the_bound(clip, bits, n, seed):
    # Prepare: n vectors inside [-c, c], including the extremes.
    codec = FixedPointCodec.for_bits(clip, bits, n)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-clip, clip, size=(n, 17))
    x[0, :2] = [clip, -clip]
    # Execute: add the residues with uint64 wrap-around, as secure aggregation does.
    total = np.zeros(17, dtype=np.uint64)
    for row in x:
        total += codec.encode(row).astype(np.uint64)
    decoded = codec.decode(total)
    # Assert: exactly the sum of the rounded integers (independent formula), within n/(2s).
    m_levels = (2 ** (bits - 1) - 1) // n
    s = m_levels / clip
    integers = codec.centered(codec.reduce(total))
    # float64 can round clip * (M / clip) up to M + 1 near 2^52 (bits = 53); the codec keeps
    # every contribution within its M levels, so the reference clamps too.
    rounded = np.clip(np.rint(x * s), -m_levels, m_levels)
    np.testing.assert_array_equal(integers, rounded.sum(axis=0).astype(np.int64))
    # (plus the float64 rounding of the decoded and the reference sums themselves)
    slack = 4 * np.finfo(np.float64).eps * np.abs(x).sum(axis=0)
    assert np.all(np.abs(decoded - x.sum(axis=0)) <= codec.error_bound() + slack)
    assert codec.error_bound() == pytest.approx(n * (0.5 + m_levels * 2.0**-53) / s)


def test_headroom_is_needed_and_sufficient():
    # 8 bits, 3 summands: M = 127 // 3 = 42, so 3 * 42 = 126 fits and 4 * 42 = 168 wraps.
    codec = FixedPointCodec.for_bits(1.0, 8, 3)
    assert codec.levels == 42
    top = codec.encode(np.array([1.0]))
    assert codec.decode(3 * top.astype(np.uint64))[0] == pytest.approx(3.0)
    assert codec.decode(3 * codec.encode(np.array([-1.0])).astype(np.uint64))[0] == -3.0
    wrapped = codec.decode(4 * top.astype(np.uint64))[0]
    assert wrapped < 0  # a fourth summand overflows: the headroom is tight


def test_values_outside_the_range_are_clipped():
    codec = FixedPointCodec.for_bits(0.5, 32, 4)
    np.testing.assert_allclose(
        codec.decode(codec.encode(np.array([3.0, -7.0, 0.25]))),
        [0.5, -0.5, 0.25],
        atol=codec.error_bound(1),
    )


def test_stochastic_rounding_is_unbiased_and_bounded():
    codec = FixedPointCodec.for_bits(1.0, 16, 100, Rounding.STOCHASTIC)
    s = codec.scale
    x = np.full(200_000, 0.3 / s + 0.123)  # a value between two levels
    q = codec.quantize(x, np.random.default_rng(0)) / s
    err = q - x
    assert np.all(np.abs(err) < 1 / s)
    # E[q] = x: the mean error is within 5 standard errors of zero (Bernoulli rounding).
    frac = (x[0] * s) % 1
    se = np.sqrt(frac * (1 - frac) / len(x)) / s
    assert abs(err.mean()) < 5 * se
    assert codec.error_bound() == pytest.approx(100 / s, rel=2**-30)
    # nearest rounding is biased on the same input (the check above can fail)
    near = FixedPointCodec.for_bits(1.0, 16, 100)
    assert abs((near.quantize(x) / s - x).mean()) > 10 * se


def test_prime_modulus_for_bfv():
    # A BFV-style prime plaintext modulus: sums reduce modulo p, not 2^k.
    p = 1032193
    codec = FixedPointCodec(2.0, p, 10)
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=(10, 50))
    total = sum(codec.encode(r).astype(np.uint64) for r in x) % np.uint64(p)
    assert np.all(np.abs(codec.decode(total) - x.sum(0)) <= codec.error_bound())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip": 1.0, "modulus": 2**8, "summands": 200}, "leaves no room"),
        ({"clip": 0.0, "modulus": 2**32, "summands": 2}, "clip"),
        ({"clip": 1.0, "modulus": 2**60, "summands": 2}, "modulus"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FixedPointCodec(**kwargs)


def test_nan_and_missing_rng_are_errors():
    codec = FixedPointCodec.for_bits(1.0, 32, 2, Rounding.STOCHASTIC)
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(np.array([np.nan]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="random generator"):
        codec.encode(np.array([0.1]))


def test_default_max_weight_is_one_under_central_and_local_dp():
    from privfl.config import config_from_dict
    from privfl.defenses.quantize import default_max_weight

    sizes = np.array([3, 41, 17])
    plain = config_from_dict({"defense": {"secagg": {}}})
    assert default_max_weight(plain, sizes) == 41.0
    for mode in ("central", "local"):
        dp = config_from_dict({"defense": {"dp": {"mode": mode, "noise_multiplier": 1.0}}})
        assert default_max_weight(dp, sizes) == 1.0
    sample = config_from_dict({"defense": {"dp": {"mode": "sample", "noise_multiplier": 1.0}}})
    assert default_max_weight(sample, sizes) == 41.0


def test_channels_encode_weight_one_under_dp_and_example_counts_without():
    from conftest import small_config

    from privfl.federation import Federation

    dp = {"dp": {"mode": "central", "noise_multiplier": 1.0}}
    for channel in ({"secagg": {}}, {"he": {"scheme": "bfv"}}):
        plain = Federation(small_config(defense=channel))
        largest = float(plain.data.partition.sizes().max())
        central = Federation(small_config(defense={**channel, **dp}))
        weights = []
        for fed in (plain, central):
            ch = fed.stages.channel
            weights.append(ch.max_weight if hasattr(ch, "max_weight") else ch.scheme.max_weight)
        assert weights == [largest, 1.0] and largest > 1
