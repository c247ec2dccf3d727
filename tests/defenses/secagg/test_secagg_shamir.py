"""Shamir sharing over GF(2^256 + 297): every t-subset reconstructs, t - 1 shares say nothing."""

from __future__ import annotations

import itertools
import secrets

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.defenses.secagg import shamir


def test_the_field_is_the_smallest_prime_above_2_to_the_256():
    assert sympy.isprime(shamir.PRIME)
    assert sympy.nextprime(2**256) == shamir.PRIME
    assert shamir.PRIME < 2 ** (8 * shamir.SHARE_BYTES)


def test_every_threshold_subset_reconstructs():
    # Flower's shamir_test.py style: all C(6, 4) = 15 subsets of size t.
    secret = secrets.randbits(256)
    xs = [3, 5, 8, 13, 21, 34]
    shares = dict(zip(xs, shamir.split(secret, threshold=4, xs=xs), strict=True))
    for subset in itertools.combinations(xs, 4):
        assert shamir.combine({x: shares[x] for x in subset}, threshold=4) == secret
    for subset in itertools.combinations(xs, 5):  # more than t also works
        assert shamir.interpolate_at_zero({x: shares[x] for x in subset}) == secret


def test_fewer_than_t_shares_reveal_nothing():
    secret = secrets.randbits(256)
    xs = list(range(1, 8))
    shares = dict(zip(xs, shamir.split(secret, threshold=5, xs=xs), strict=True))
    known = {x: shares[x] for x in xs[:4]}  # t - 1 shares
    # Interpolating them (degree t - 2) gives a wrong secret ...
    assert shamir.interpolate_at_zero(known) != secret
    with pytest.raises(ValueError, match="fewer than the threshold"):
        shamir.combine(known, threshold=5)
    # ... and every candidate secret is consistent with them: a degree t - 1 polynomial passes
    # through the t - 1 shares and (0, candidate), so the shares cannot rule any value out.
    for candidate in (0, 1, secret ^ 1, secrets.randbits(256)):
        f = {0: candidate, **known}
        rebuilt = {x: _evaluate_through(f, x) for x in known}
        assert rebuilt == known and _evaluate_through(f, 0) == candidate


def _evaluate_through(points: dict[int, int], x: int) -> int:
    """Lagrange evaluation at ``x`` of the polynomial through ``points`` (slow reference)."""
    p, total = shamir.PRIME, 0
    for xi, yi in points.items():
        num = den = 1
        for xj in points:
            if xj != xi:
                num = num * (x - xj) % p
                den = den * (xi - xj) % p
        total += yi * num * pow(den, -1, p)
    return total % p


def test_a_tampered_share_gives_a_wrong_secret():
    secret = secrets.randbits(256)
    xs = [1, 2, 3]
    shares = dict(zip(xs, shamir.split(secret, threshold=3, xs=xs), strict=True))
    shares[2] = (shares[2] + 1) % shamir.PRIME
    assert shamir.combine(shares, threshold=3) != secret


def test_sharing_is_randomized():
    xs = [1, 2, 3]
    assert shamir.split(7, threshold=2, xs=xs) != shamir.split(7, threshold=2, xs=xs)


@settings(max_examples=30, deadline=None)
@given(
    secret=st.integers(0, 2**256 - 1),
    t=st.integers(1, 12),
    extra=st.integers(0, 6),
    data=st.data(),
)
def test_random_thresholds_reconstruct(secret, t, extra, data):
    xs = data.draw(
        st.lists(st.integers(1, 10**6), min_size=t + extra, max_size=t + extra, unique=True)
    )
    shares = dict(zip(xs, shamir.split(secret, threshold=t, xs=xs), strict=True))
    subset = data.draw(st.permutations(xs)).__getitem__(slice(t))
    assert shamir.combine({x: shares[x] for x in subset}, threshold=t) == secret


def test_wire_encoding_round_trips_and_rejects_out_of_field():
    v = shamir.PRIME - 1
    assert shamir.from_bytes(shamir.to_bytes(v)) == v
    with pytest.raises(ValueError, match="outside the field"):
        shamir.from_bytes(shamir.PRIME.to_bytes(shamir.SHARE_BYTES, "big"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secret": shamir.PRIME, "threshold": 2, "xs": [1, 2]}, "secret"),
        ({"secret": 1, "threshold": 3, "xs": [1, 2]}, "cannot reach"),
        ({"secret": 1, "threshold": 2, "xs": [1, 1]}, "distinct"),
        ({"secret": 1, "threshold": 2, "xs": [0, 1]}, "distinct"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        shamir.split(**kwargs)
