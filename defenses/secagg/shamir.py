"""Shamir t-of-n secret sharing (Shamir, CACM 1979) of 256-bit secrets over GF(p),
``p = 2**256 + 297``, the smallest prime above ``2**256`` (so every 32-byte secret is a field
element).

Written by hand: no well-kept Python library does Shamir sharing over a prime field
(``cryptography`` has none; PyCryptodome's ``Crypto.Protocol.SecretSharing`` is limited to
16-byte secrets over GF(2^128)). Coefficients come from the OS CSPRNG (:mod:`secrets`).

A share is ``(x, y)`` with ``y = f(x)`` for a random polynomial ``f`` of degree ``t - 1`` with
``f(0) = secret``. Any ``t`` shares determine ``f(0)`` by Lagrange interpolation; any ``t - 1``
shares are jointly uniform and independent of the secret (perfect secrecy), so interpolating
them gives an unrelated value.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from functools import lru_cache

#: The field modulus, 2**256 + 297 (smallest prime above 2**256; tests check its primality).
PRIME = 2**256 + 297
#: Bytes of a share value on the wire (big-endian; ``PRIME < 2**264``).
SHARE_BYTES = 33


def split(secret: int, *, threshold: int, xs: Sequence[int]) -> list[int]:
    """Shares of ``secret`` at the points ``xs``: ``[f(x) for x in xs]``.

    Args:
        secret: an integer in ``[0, PRIME)``.
        threshold: ``t >= 1``, the number of shares that reconstruct the secret.
        xs: distinct nonzero evaluation points in ``[1, PRIME)`` (here: client id + 1), at
            least ``t`` of them.
    Returns:
        one field element per point, in the order of ``xs``.
    """
    if not 0 <= secret < PRIME:
        raise ValueError("secret must be in [0, PRIME)")
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    if len(xs) < threshold:
        raise ValueError(f"{len(xs)} shares cannot reach threshold {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and in [1, PRIME)")
    # f(x) = secret + a_1 x + ... + a_{t-1} x^{t-1}; Horner from the highest coefficient.
    coefficients = [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        y = 0
        for a in reversed(coefficients):
            y = (y + a) * x % PRIME
        shares.append((y + secret) % PRIME)
    return shares


@lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """``lambda_i = prod_{j != i} x_j / (x_j - x_i) mod p``, so ``f(0) = sum lambda_i f(x_i)``."""
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def combine(shares: Mapping[int, int], *, threshold: int) -> int:
    """The secret ``f(0)`` interpolated from ``threshold`` of the shares ``{x: f(x)}``.

    Uses the ``threshold`` smallest points (any ``t`` give the same result for honest shares).
    With fewer than ``t`` shares there is nothing to reconstruct: that is an error, not a
    guess. (Interpolating ``t - 1`` shares of a degree ``t - 1`` polynomial gives a value
    independent of the secret; the tests show it.)
    """
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares are fewer than the threshold {threshold}")
    xs = tuple(sorted(shares)[:threshold])
    return interpolate_at_zero({x: shares[x] for x in xs})


def interpolate_at_zero(points: Mapping[int, int]) -> int:
    """The value at 0 of the polynomial of degree ``len(points) - 1`` through ``points``."""
    xs = tuple(sorted(points))
    if len(set(x % PRIME for x in xs)) != len(xs):
        raise ValueError("interpolation points must be distinct modulo PRIME")
    lam = _lagrange_at_zero(xs)
    return sum(li * points[x] for li, x in zip(lam, xs, strict=True)) % PRIME


def to_bytes(value: int) -> bytes:
    """A field element as :data:`SHARE_BYTES` big-endian bytes."""
    return value.to_bytes(SHARE_BYTES, "big")


def from_bytes(data: bytes) -> int:
    """The field element encoded by :func:`to_bytes`; rejects values outside the field."""
    if len(data) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise ValueError("share value outside the field")
    return value


__all__ = [
    "PRIME",
    "SHARE_BYTES",
    "combine",
    "from_bytes",
    "interpolate_at_zero",
    "split",
    "to_bytes",
]
