"""Shamir sharing of 32-byte secrets over GF(2^31 - 1) (nine limbs): every t-subset
reconstructs, t - 1 shares say nothing, and the vectorized sharing equals a slow reference."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.defenses.secagg import shamir

P = shamir.PRIME


def _shares(secret: bytes, t: int, xs: list[int]) -> dict[int, np.ndarray]:
    out = shamir.split([secret], threshold=t, xs=xs)
    return {x: out[i, 0] for i, x in enumerate(xs)}


def test_the_field_and_the_limbs():
    assert sympy.isprime(P) and P == 2**31 - 1
    assert shamir.LIMBS * shamir.LIMB_BITS >= 256 and 2**shamir.LIMB_BITS < P
    secret = os.urandom(32)
    assert shamir.from_limbs(shamir.to_limbs(secret)) == secret
    assert shamir.from_limbs(shamir.to_limbs(b"\xff" * 32)) == b"\xff" * 32


def test_shares_are_the_polynomials_evaluated_slowly():
    # Reference: rebuild each limb's polynomial from t shares by Lagrange interpolation in
    # Python integers and check it passes through every other share and through the secret.
    secret, t, xs = os.urandom(32), 4, [2, 3, 5, 7, 11, 13]
    shares = _shares(secret, t, xs)
    limbs = shamir.to_limbs(secret)
    for j in range(shamir.LIMBS):
        base = {x: int(shares[x][j]) for x in xs[:t]}
        for x in [0, *xs[t:]]:
            want = int(limbs[j]) if x == 0 else int(shares[x][j])
            assert _lagrange_eval(base, x) == want


def _lagrange_eval(points: dict[int, int], x: int) -> int:
    total = 0
    for xi, yi in points.items():
        num = den = 1
        for xj in points:
            if xj != xi:
                num = num * (x - xj) % P
                den = den * (xi - xj) % P
        total += yi * num * pow(den, -1, P)
    return total % P


def test_every_threshold_subset_reconstructs():
    # Flower's shamir_test.py style: all C(6, 4) = 15 subsets of size t, and larger ones.
    secret = os.urandom(32)
    xs = [3, 5, 8, 13, 21, 34]
    shares = _shares(secret, 4, xs)
    for size in (4, 5, 6):
        for subset in itertools.combinations(xs, size):
            assert shamir.combine({x: shares[x] for x in subset}, threshold=4) == secret


def test_fewer_than_t_shares_reveal_nothing():
    secret = os.urandom(32)
    xs = list(range(1, 8))
    shares = _shares(secret, 5, xs)
    known = {x: shares[x] for x in xs[:4]}  # t - 1 shares
    # Interpolating them (degree t - 2) gives a wrong secret ...
    wrong = shamir.interpolate_at_zero(known)
    assert not np.array_equal(wrong, shamir.to_limbs(secret))
    with pytest.raises(ValueError, match="fewer than the threshold"):
        shamir.combine(known, threshold=5)
    # ... and every candidate secret is consistent with them: for each limb a degree t - 1
    # polynomial passes through the t - 1 shares and (0, candidate limb).
    for candidate in (bytes(32), b"\x01" * 32, os.urandom(32)):
        cand = shamir.to_limbs(candidate)
        for j in range(shamir.LIMBS):
            f = {0: int(cand[j]), **{x: int(v[j]) for x, v in known.items()}}
            assert all(_lagrange_eval(f, x) == int(known[x][j]) for x in known)


def test_a_tampered_share_gives_a_wrong_secret_or_an_error():
    secret = os.urandom(32)
    xs = [1, 2, 3]
    shares = _shares(secret, 3, xs)
    shares[2] = shares[2].copy()
    shares[2][0] = (shares[2][0] + 1) % P
    try:
        assert shamir.combine(shares, threshold=3) != secret
    except ValueError:
        pass  # the limbs did not even form a 256-bit value


def test_sharing_is_randomized_and_the_secrets_independent():
    a = shamir.split([bytes(32), bytes(32)], threshold=2, xs=[1, 2])
    b = shamir.split([bytes(32), bytes(32)], threshold=2, xs=[1, 2])
    assert not np.array_equal(a, b)
    assert not np.array_equal(a[:, 0], a[:, 1])  # same secret, independent polynomials


def test_coefficients_are_uniform_in_the_field():
    # Share values at x = 1 of the zero secret with t = 2 are the coefficient a_1 itself.
    vals = shamir.split([bytes(32)] * 2000, threshold=2, xs=[1, 2])[0].ravel()
    assert vals.min() >= 0 and vals.max() < P
    counts = np.bincount(vals >> 27, minlength=16)  # 16 bins over [0, 2^31)
    expected = len(vals) / 16
    assert ((counts - expected) ** 2 / expected).sum() < 50  # chi-square, 15 dof


@settings(max_examples=30, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    t=st.integers(1, 12),
    extra=st.integers(0, 6),
    data=st.data(),
)
def test_random_thresholds_reconstruct(secret, t, extra, data):
    xs = data.draw(
        st.lists(st.integers(1, 10**6), min_size=t + extra, max_size=t + extra, unique=True)
    )
    shares = _shares(secret, t, xs)
    subset = data.draw(st.permutations(xs))[:t]
    assert shamir.combine({x: shares[x] for x in subset}, threshold=t) == secret


def test_wire_encoding_round_trips_and_rejects_out_of_field():
    share = np.array([P - 1, 0, 1, 2, 3, 4, 5, 6, 7], dtype=np.int64)
    np.testing.assert_array_equal(shamir.from_bytes(shamir.to_bytes(share)), share)
    with pytest.raises(ValueError, match="outside the field"):
        shamir.from_bytes(shamir.to_bytes(np.full(9, P, dtype=np.int64)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secrets": [bytes(31)], "threshold": 2, "xs": [1, 2]}, "32 bytes"),
        ({"secrets": [bytes(32)], "threshold": 3, "xs": [1, 2]}, "cannot reach"),
        ({"secrets": [bytes(32)], "threshold": 2, "xs": [1, 1]}, "distinct"),
        ({"secrets": [bytes(32)], "threshold": 2, "xs": [0, 1]}, "distinct"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        shamir.split(**kwargs)


def _slow_consistent(points: dict[int, np.ndarray], t: int) -> bool:
    """Reference: interpolate each limb from the t smallest points in Python integers and
    evaluate at every other point."""
    xs = sorted(points)
    for j in range(shamir.LIMBS):
        base = {x: int(points[x][j]) for x in xs[:t]}
        if any(_lagrange_eval(base, x) != int(points[x][j]) for x in xs[t:]):
            return False
    return True


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(1, 9),
    extra=st.integers(0, 6),
    wrong=st.integers(0, 3),
    data=st.data(),
)
def test_the_consistency_check_agrees_with_a_slow_reference(t, extra, wrong, data):
    m = t + extra
    xs = data.draw(st.lists(st.integers(1, P - 1), min_size=m, max_size=m, unique=True))
    shares = _shares(os.urandom(32), t, xs)
    for _ in range(min(wrong, m)):  # change one limb of some shares (maybe the same one)
        x = data.draw(st.sampled_from(xs))
        j = data.draw(st.integers(0, shamir.LIMBS - 1))
        delta = data.draw(st.integers(1, P - 1))
        shares[x] = shares[x].copy()
        shares[x][j] = (shares[x][j] + delta) % P
    order = sorted(xs)
    got = shamir.consistent(
        np.array([order], dtype=np.int64),
        np.array([[shares[x] for x in order]], dtype=np.int64),
        threshold=t,
    )
    assert got.tolist() == [_slow_consistent(shares, t)]


def test_consistency_is_batched_over_share_sets():
    t, xs = 3, [[4, 9, 16, 25, 36], [1, 2, 3, 5, 8], [7, 11, 13, 17, 19]]
    sets = [_shares(os.urandom(32), t, row) for row in xs]
    sets[1][5] = (sets[1][5] + 1) % P  # every limb of one share off by one
    ys = np.array([[s[x] for x in row] for s, row in zip(sets, xs, strict=True)])
    assert shamir.consistent(np.array(xs), ys, threshold=t).tolist() == [True, False, True]
    assert shamir.consistent(np.array(xs), ys, threshold=5).all()  # m = t: nothing to check


def test_dual_weights_annihilate_low_degree_polynomials():
    xs = np.array([[3, 5, 8, 13, 21, 34]], dtype=np.int64)
    v = shamir.dual_weights(xs)[0]
    for degree in range(6):  # sum_i v_i x_i^d = 0 for d <= m - 2, and 1 for d = m - 1
        total = sum(int(vi) * pow(int(xi), degree, P) for vi, xi in zip(v, xs[0], strict=True))
        assert total % P == (1 if degree == 5 else 0)


def test_combine_refuses_a_wrong_share_it_can_detect():
    secret, xs = os.urandom(32), [2, 3, 5, 7, 11, 13]
    shares = _shares(secret, 4, xs)
    assert shamir.combine(shares, threshold=4) == secret
    shares[13] = (shares[13] + np.arange(9)) % P  # limbs 1..8 off, beyond the first t
    with pytest.raises(shamir.InconsistentShares, match="degree 3"):
        shamir.combine(shares, threshold=4)
    assert shamir.combine(shares, threshold=4, check=False) == secret  # never looked at 13
    # exactly t shares: nothing to check, the wrong share gives a wrong secret
    four = {x: shares[x] for x in (2, 3, 5, 13)}
    try:
        assert shamir.combine(four, threshold=4) != secret
    except ValueError:
        pass  # the limbs did not even form a 256-bit value
