"""Shamir t-of-n secret sharing (Shamir, CACM 1979) of 32-byte secrets over the prime field
GF(p), ``p = 2^31 - 1``, vectorized with numpy.

A 256-bit secret is cut into nine 30-bit limbs (each an element of GF(p)); each limb gets its
own random polynomial ``f_j`` of degree ``t - 1`` with ``f_j(0) = limb_j``, and a share at
point ``x`` is the vector ``(f_1(x), ..., f_9(x))``. Any ``t`` shares determine every limb by
Lagrange interpolation; any ``t - 1`` shares are uniform and independent of each limb (perfect
secrecy per polynomial, and the polynomials are independent), hence of the secret.

Why limbs in a 31-bit field rather than one 257-bit field: every Horner step is then one numpy
operation on int64 (products stay below 2^62) over all share points and limbs at once, instead
of one Python big-integer operation per point, which made sharing cost grow as ``n^2 t`` Python
steps in the complete graph (about a second per round at n = 100).

Written by hand: no well-kept Python library does Shamir sharing over a prime field
(``cryptography`` has none; PyCryptodome's ``Crypto.Protocol.SecretSharing`` handles only
16-byte secrets over GF(2^128)). Coefficients come from the OS CSPRNG (``os.urandom``, by
rejection sampling, so they are exactly uniform in GF(p)).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

#: The field modulus, the Mersenne prime 2^31 - 1 (tests check its primality).
PRIME = 2**31 - 1
#: Bits per limb (limbs are below 2^30 < p) and limbs per 256-bit secret.
LIMB_BITS = 30
LIMBS = -(-256 // LIMB_BITS)
#: Bytes of a secret, and of one share of a secret on the wire (big-endian uint32 per limb).
SECRET_BYTES = 32
SHARE_BYTES = 4 * LIMBS

_P = np.int64(PRIME)
_SHARE = struct.Struct(f">{LIMBS}I")


def to_limbs(secret: bytes) -> np.ndarray:
    """The nine 30-bit limbs of a 32-byte secret (least significant first), int64 ``(9,)``."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret is {SECRET_BYTES} bytes, got {len(secret)}")
    v = int.from_bytes(secret, "big")
    mask = (1 << LIMB_BITS) - 1
    return np.array([(v >> (LIMB_BITS * j)) & mask for j in range(LIMBS)], dtype=np.int64)


def from_limbs(limbs: np.ndarray) -> bytes:
    """The 32-byte secret of :func:`to_limbs`; ValueError if the limbs cannot be one (a
    reconstruction from inconsistent shares)."""
    limbs = np.asarray(limbs, dtype=np.int64)
    if limbs.shape != (LIMBS,) or np.any(limbs < 0) or np.any(limbs >= 1 << LIMB_BITS):
        raise ValueError("limbs out of range: the shares are inconsistent")
    v = sum(int(limb) << (LIMB_BITS * j) for j, limb in enumerate(limbs))
    if v >= 1 << (8 * SECRET_BYTES):
        raise ValueError("value exceeds 256 bits: the shares are inconsistent")
    return v.to_bytes(SECRET_BYTES, "big")


def _uniform(shape: tuple[int, ...]) -> np.ndarray:
    """Exactly uniform elements of GF(p) from the OS CSPRNG (31-bit draws, p rejected)."""
    size = int(np.prod(shape))
    out = np.empty(0, dtype=np.int64)
    while out.size < size:
        draw = np.frombuffer(os.urandom(4 * (size - out.size)), dtype="<u4") & 0x7FFFFFFF
        out = np.concatenate([out, draw[draw < PRIME].astype(np.int64)])
    return out.reshape(shape)


def split(secrets: Sequence[bytes], *, threshold: int, xs: Sequence[int]) -> np.ndarray:
    """Shares of each 32-byte secret at the points ``xs``.

    Args:
        secrets: ``s`` secrets of 32 bytes (shared with independent polynomials).
        threshold: ``t >= 1``, the number of shares that reconstruct a secret.
        xs: distinct evaluation points in ``[1, p)`` (here: client id + 1), at least ``t``.
    Returns:
        int64 ``(len(xs), s, 9)``: ``out[i, k]`` is the share of secret ``k`` at ``xs[i]``.
    """
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    if len(xs) < threshold:
        raise ValueError(f"{len(xs)} shares cannot reach threshold {threshold}")
    points = np.asarray(xs, dtype=np.int64)
    if len(set(xs)) != len(xs) or np.any(points <= 0) or np.any(points >= PRIME):
        raise ValueError(f"share points must be distinct and in [1, {PRIME})")
    constant = np.stack([to_limbs(s) for s in secrets])  # (s, 9)
    coefficients = _uniform((threshold - 1, *constant.shape))  # a_1 .. a_{t-1}
    x = points[:, None, None]
    acc = np.zeros((len(points), *constant.shape), dtype=np.int64)
    for a in coefficients[::-1]:  # Horner: ((a_{t-1} x + a_{t-2}) x + ...) x + a_0
        acc = (acc + a) * x % _P
    return (acc + constant) % _P


@lru_cache(maxsize=1024)
def _lagrange_at_zero(xs: tuple[int, ...]) -> np.ndarray:
    """``lambda_i = prod_{j != i} x_j / (x_j - x_i) mod p``: ``f(0) = sum lambda_i f(x_i)``.

    The ``m x m`` products run in numpy (a product tree over the rows, every factor below
    2^31 so each product fits int64), the ``m`` inverses in Python: O(m^2) machine operations
    and O(m) big-integer ones.
    """
    x = np.asarray(xs, dtype=np.int64) % _P
    m = len(x)
    num = np.broadcast_to(x, (m, m)).copy()  # row i: x_j ...
    den = (x[None, :] - x[:, None]) % _P  # ... over (x_j - x_i)
    np.fill_diagonal(num, 1)  # j == i is left out of both products
    np.fill_diagonal(den, 1)
    num, den = _row_products(num), _row_products(den)
    return np.array(
        [int(a) * pow(int(b), -1, PRIME) % PRIME for a, b in zip(num, den, strict=True)],
        dtype=np.int64,
    )


def _row_products(a: np.ndarray) -> np.ndarray:
    """The product mod p of each row of ``a`` (entries in ``[0, p)``), by halving the columns."""
    while a.shape[1] > 1:
        if a.shape[1] % 2:
            a = np.concatenate([a, np.ones((len(a), 1), dtype=np.int64)], axis=1)
        a = a[:, 0::2] * a[:, 1::2] % _P
    return a[:, 0]


def interpolate_at_zero(points: Mapping[int, Sequence[int] | np.ndarray]) -> np.ndarray:
    """The limbs at 0 of the polynomials of degree ``len(points) - 1`` through ``points``
    (``{x: share}``, each share nine field elements); int64 ``(9,)``."""
    xs = tuple(sorted(points))
    if len({x % PRIME for x in xs}) != len(xs):
        raise ValueError("interpolation points must be distinct modulo p")
    lam = _lagrange_at_zero(xs)
    ys = np.array([points[x] for x in xs], dtype=np.int64)  # (m, 9)
    terms = lam[:, None] * ys % _P  # each < 2^31, so a sum of m < 2^32 terms fits int64
    return terms.sum(axis=0) % _P


class InconsistentShares(ValueError):
    """The shares do not lie on one polynomial of degree ``t - 1`` (per limb): at least one of
    them is wrong, and no secret is returned."""


def combine(
    shares: Mapping[int, Sequence[int] | np.ndarray], *, threshold: int, check: bool = True
) -> bytes:
    """The 32-byte secret of the shares ``{x: share}``.

    With ``check`` (the default) and more than ``t`` shares, every share must lie on the
    same degree ``t - 1`` polynomials (:func:`consistent`), else :class:`InconsistentShares`:
    the ``m - t`` extra shares detect any set of at most ``m - t`` wrong ones. With exactly
    ``t`` shares there is nothing to check: any ``t`` values interpolate to *some* secret.
    The secret is interpolated from the ``threshold`` smallest points (when the set is
    consistent, any ``t`` of them give the same secret). Fewer than ``t`` shares are an error,
    not a guess: interpolating ``t - 1`` shares gives limbs independent of the secret (the
    tests show it).

    Raises:
        ValueError: too few shares, or shares that do not interpolate to a 256-bit secret.
        InconsistentShares: ``check`` and the shares are not on one polynomial of degree
            ``t - 1``.
    """
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares are fewer than the threshold {threshold}")
    xs = sorted(shares)
    if check and len(xs) > threshold:
        ys = np.array([shares[x] for x in xs], dtype=np.int64)[None]
        if not consistent(np.array([xs], dtype=np.int64), ys, threshold=threshold)[0]:
            raise InconsistentShares(
                f"{len(xs)} shares do not lie on one polynomial of degree {threshold - 1}"
            )
    xs = xs[:threshold]
    return from_limbs(interpolate_at_zero({x: shares[x] for x in xs}))


def _inverse(a: np.ndarray) -> np.ndarray:
    """``a^-1 mod p`` element-wise (``a`` in ``[1, p)``), by Fermat: ``a^(p-2)``, square and
    multiply over int64 arrays (every product of two residues fits in 63 bits)."""
    result = np.ones_like(a)
    base = a % _P
    e = PRIME - 2
    while e:
        if e & 1:
            result = result * base % _P
        base = base * base % _P
        e >>= 1
    return result


def dual_weights(xs: np.ndarray) -> np.ndarray:
    """``v_i = 1 / prod_{l != i} (x_i - x_l) mod p`` for each row of distinct points
    ``xs`` (int64 ``(b, m)``); int64 ``(b, m)``.

    For any polynomial ``h`` of degree at most ``m - 2``, ``sum_i v_i h(x_i) = 0`` (it is the
    leading coefficient of the interpolant of ``h`` through the ``m`` points): the vectors
    ``(v_i g(x_i))_i`` for ``deg g < m - t`` span the dual of the Reed-Solomon code of the
    degree ``t - 1`` polynomials at these points (MacWilliams and Sloane, ch. 10.8).
    Vectorized: one ``m x m`` difference table per row, reduced by product trees, in chunks.
    """
    xs = np.asarray(xs, dtype=np.int64) % _P
    b, m = xs.shape
    out = np.empty((b, m), dtype=np.int64)
    chunk = max(1, (1 << 21) // max(1, m * m))
    for lo in range(0, b, chunk):
        x = xs[lo : lo + chunk]
        diff = (x[:, :, None] - x[:, None, :]) % _P  # (c, m, m): x_i - x_l
        diff.reshape(len(x), m * m)[:, :: m + 1] = 1  # l == i is left out of the product
        prod = _row_products(diff.reshape(-1, m)).reshape(len(x), m)
        if np.any(prod == 0):
            raise ValueError("share points must be distinct modulo p")
        out[lo : lo + chunk] = _inverse(prod)
    return out


def consistent(xs: np.ndarray, ys: np.ndarray, *, threshold: int, checks: int = 2) -> np.ndarray:
    """Whether each set of shares lies on polynomials of degree ``t - 1`` (one per limb).

    Args:
        xs: int64 ``(b, m)``, each row ``m`` distinct share points.
        ys: int64 ``(b, m, 9)``, the shares at those points.
        threshold: ``t``; with ``m <= t`` every set is consistent (nothing to check).
        checks: independent random parity checks per set.
    Returns:
        bool ``(b,)``.

    A set is consistent exactly when it is orthogonal to the dual code (see
    :func:`dual_weights`): ``sum_i v_i g(x_i) y_i = 0`` for every ``g`` of degree below
    ``r = m - t``. Rather than all ``r`` basis polynomials, ``checks`` polynomials with
    coefficients drawn uniformly from GF(p) (OS CSPRNG, after the shares are fixed) are
    tested: for an inconsistent limb each passes with probability exactly ``1/p`` (a nonzero
    linear form in the random coefficients), so a wrong set goes unnoticed with probability
    at most ``p^-checks`` = 2^-62 for two. Cost: ``O(m^2)`` products and ``r`` Horner steps
    per distinct row of points, all as numpy operations over the rows.
    """
    return reconstruct(xs, ys, threshold=min(threshold, np.shape(xs)[1]), checks=checks)[1]


def reconstruct(
    xs: np.ndarray, ys: np.ndarray, *, threshold: int, checks: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Check and interpolate ``b`` share sets at once: the server's unmasking in one pass.

    Args:
        xs: int64 ``(b, m)``, each row ``m >= t`` distinct share points.
        ys: int64 ``(b, m, 9)``, the shares.
        threshold: ``t``.
        checks: random parity checks per set (:func:`consistent`) when ``m > t``.
    Returns:
        ``(limbs, ok)``: int64 ``(b, 9)``, the limbs at 0 of the polynomial through all ``m``
        shares, and bool ``(b,)``, whether the set is consistent (always true for ``m = t``:
        nothing to check). Where ``ok``, the limbs are the secret's (any ``t`` of the shares
        give the same); elsewhere they are meaningless.

    One set of dual weights serves both: the Lagrange coefficient of point ``i`` at 0 over all
    ``m`` points is ``(-1)^(m-1) (prod_l x_l / x_i) v_i``. Everything that depends only on the
    points (weights, coefficients, the random dual codewords) is computed once per distinct
    row of ``xs`` (one row in the complete graph, one per client under SecAgg+), and every
    step is a numpy operation over the rows.
    """
    xs = np.asarray(xs, dtype=np.int64) % _P
    ys = np.asarray(ys, dtype=np.int64) % _P
    b, m = xs.shape
    if m < threshold:
        raise ValueError(f"{m} shares are fewer than the threshold {threshold}")
    if b == 0:
        return np.zeros((0, LIMBS), dtype=np.int64), np.ones(0, dtype=bool)
    rows, inverse = np.unique(xs, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    v = dual_weights(rows)  # (u, m)
    lam = v * _inverse(rows) % _P * _row_products(rows)[:, None] % _P
    if (m - 1) % 2:
        lam = (_P - lam) % _P
    limbs = (lam[inverse][:, :, None] * ys % _P).sum(axis=1) % _P
    r = m - threshold
    if r == 0:
        return limbs, np.ones(b, dtype=bool)
    coefficients = _uniform((r, checks))
    g = np.zeros((*rows.shape, checks), dtype=np.int64)
    for c in coefficients[::-1]:  # Horner over the r coefficients, every row at once
        g = (g * rows[:, :, None] + c) % _P
    w = (v[:, :, None] * g % _P)[inverse]  # (b, m, checks): random dual codewords
    # sum_i w_i y_i per check and limb; each term < 2^31, so m < 2^32 terms fit int64
    syndrome = (w[:, :, :, None] * ys[:, :, None, :] % _P).sum(axis=1) % _P
    return limbs, ~syndrome.reshape(b, -1).any(axis=1)


def to_bytes(share: Sequence[int] | np.ndarray) -> bytes:
    """A share (nine field elements) as :data:`SHARE_BYTES` big-endian bytes."""
    if isinstance(share, np.ndarray):
        return share.astype(">u4").tobytes()
    return _SHARE.pack(*share)


def from_bytes(data: bytes) -> tuple[int, ...]:
    """The share encoded by :func:`to_bytes` (nine ints); rejects values outside GF(p).

    A tuple rather than an array: clients decode thousands of shares a round and keep them
    until Unmasking; ``struct`` is several times faster than numpy on nine values.
    """
    if len(data) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    share = _SHARE.unpack(data)
    if max(share) >= PRIME:
        raise ValueError("share value outside the field")
    return share


__all__ = [
    "InconsistentShares",
    "LIMBS",
    "LIMB_BITS",
    "PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "combine",
    "consistent",
    "dual_weights",
    "from_bytes",
    "from_limbs",
    "interpolate_at_zero",
    "reconstruct",
    "split",
    "to_bytes",
    "to_limbs",
]
