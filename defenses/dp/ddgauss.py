"""The distributed discrete Gaussian's pieces (Kairouz, Liu and Steinke, ICML 2021, "The
Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation",
arXiv 2102.06387), as pure functions on ``(clients, D)`` arrays.

Each client: randomized Hadamard rotation (:func:`rotate`), scale by ``1 / gamma``,
conditional randomized rounding (:func:`conditional_round`), discrete Gaussian noise
(:func:`sample_discrete_gaussian`), reduction modulo ``2^bits``. The server: the centred sum,
unscale, :func:`unrotate`. :func:`scale_for_bits` chooses ``1 / gamma``;
:mod:`privfl.defenses.dp.ddgauss_accounting` holds the privacy bound.

Followed: google-research/federated ``distributed_dp`` (``compression_utils.py``:
``randomized_hadamard_transform``, ``stochastic_rounding``; ``accounting_utils.py``:
``rounded_l2_norm_bound``, ``heuristic_scale_factor``) and TF-Privacy's vectorized
discrete Gaussian sampler (Canonne, Kamath and Steinke, NeurIPS 2020, Algorithm 3 of arXiv
2004.00010: discrete Laplace proposals, accepted with probability
``exp(-(|y| - sigma^2 / t)^2 / (2 sigma^2))``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

#: The reference code's default beta of conditional rounding, exp(-1/2)
#: (``compression_utils.DEFAULT_BETA``).
DEFAULT_BETA = math.exp(-0.5)

#: ``shape -> float64 uniforms in [0, 1)``: a seeded ``Generator.random`` or
#: :func:`privfl.seeding.secure_uniform`.
Uniform = Callable[[tuple[int, ...]], np.ndarray]

#: Conditional rounding gives up after this many tries of one row (the chance of a retry is
#: at most beta < 1 each time, so reaching it means a bug, not bad luck).
MAX_ROUNDING_TRIES = 1000


def padded_dim(dim: int) -> int:
    """``D``: the smallest power of two >= ``dim`` (the Hadamard transform's length)."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return 1 << (dim - 1).bit_length()


def fwht(x: np.ndarray) -> np.ndarray:
    """The normalized Walsh-Hadamard transform ``x H / sqrt(D)`` of every row, O(D log D).

    Written by hand: scipy has only the dense matrix (``scipy.linalg.hadamard``, O(D^2)), and
    neither numpy nor torch has the fast transform. The butterflies run on all rows at once:
    ``log2 D`` numpy passes over a ``(rows, D / 2h, 2, h)`` view. ``H / sqrt(D)`` is symmetric
    and orthogonal, so the transform is its own inverse.

    Args:
        x: float array ``(rows, D)`` or ``(D,)``, ``D`` a power of two.

    >>> from scipy.linalg import hadamard
    >>> x = np.arange(8.0)
    >>> bool(np.allclose(fwht(x), hadamard(8) @ x / np.sqrt(8)))
    True
    """
    y = np.array(x, dtype=np.float64, copy=True)
    one = y.ndim == 1
    y = y.reshape(1, -1) if one else y
    rows, d = y.shape
    if d & (d - 1):
        raise ValueError(f"the length must be a power of two, got {d}")
    h = 1
    while h < d:
        v = y.reshape(rows, d // (2 * h), 2, h)
        a = v[:, :, 0, :].copy()
        v[:, :, 0, :] += v[:, :, 1, :]
        v[:, :, 1, :] = a - v[:, :, 1, :]
        h *= 2
    y /= math.sqrt(d)
    return y[0] if one else y


def rotation_signs(dim: int, uniform: Uniform) -> np.ndarray:
    """Rademacher signs ``(D,)`` of the randomized Hadamard rotation (one per round, shared
    by the cohort and the server: the reference code's ``seed_pair``)."""
    return np.where(uniform((padded_dim(dim),)) < 0.5, -1.0, 1.0)


def rotate(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """``H diag(signs) [x, 0] / sqrt(D)`` of each row of ``x`` ``(n, d)``: zero-padded to
    ``D = len(signs)``, signs flipped, then :func:`fwht` (``randomized_hadamard_transform``
    with ``repeat = 1``). Norm-preserving; shape ``(n, D)``."""
    n, d = x.shape
    padded = np.zeros((n, len(signs)), dtype=np.float64)
    padded[:, :d] = x
    return fwht(padded * signs)


def unrotate(y: np.ndarray, signs: np.ndarray, dim: int) -> np.ndarray:
    """The inverse of :func:`rotate` for a vector ``(D,)`` or rows ``(n, D)``, cut to
    ``dim``."""
    return (fwht(y) * signs)[..., :dim]


def rounded_l2_bound(norm: float, beta: float, dim: int) -> float:
    """The L2 norm bound after conditional randomized rounding of a vector of norm <= ``norm``
    (already scaled) with ``dim`` coordinates: ``min(norm + sqrt(d), sqrt(norm^2 + d / 4 +
    sqrt(2 log(1 / beta)) (norm + sqrt(d) / 2)))`` (the paper's Theorem 1 / Proposition 22 as
    the reference code's ``rounded_l2_norm_bound`` writes it; beta = 0 keeps the first)."""
    if not 0 <= beta < 1:
        raise ValueError(f"beta must lie in [0, 1), got {beta}")
    first = norm + math.sqrt(dim)
    if beta == 0:
        return first
    second = (
        norm**2 + 0.25 * dim + math.sqrt(2 * math.log(1 / beta)) * (norm + 0.5 * math.sqrt(dim))
    )
    return min(first, math.sqrt(second))


def rounded_l1_bound(l2: float, dim: int) -> float:
    """An L1 bound of an integer vector of L2 norm <= ``l2``: ``l2 min(sqrt(d), l2)``
    (integers: ``|x|_1 <= |x|_2^2``; the reference's ``rounded_l1_norm_bound``)."""
    return l2 * min(math.sqrt(dim), l2)


def conditional_round(
    x: np.ndarray, bound: float, uniforms: list[Uniform]
) -> tuple[np.ndarray, int]:
    """Randomized rounding of each row, redrawn until its L2 norm is at most ``bound``.

    ``floor(x) + Bernoulli(x - floor(x))`` coordinate-wise (unbiased), repeated for a row
    while its norm exceeds ``bound`` (the paper's conditional randomized rounding, the
    reference code's ``stochastic_rounding(conditional=True)``). Every row has its own
    stream (``uniforms[i]``, the client's own), so a row's draws do not depend on the cohort.

    Returns:
        the rounded rows, int64 ``(n, D)``, and the number of redraws (all rows together).

    Raises:
        RuntimeError: a row still over ``bound`` after :data:`MAX_ROUNDING_TRIES` tries.
    """
    floor = np.floor(x)
    frac = x - floor
    out = np.empty(x.shape, dtype=np.int64)
    todo = np.arange(x.shape[0])
    retries = 0
    for tries in range(MAX_ROUNDING_TRIES):
        u = np.stack([uniforms[i]((x.shape[1],)) for i in todo]) if len(todo) else None
        if u is None:
            return out, retries
        r = floor[todo] + (u < frac[todo])
        ok = np.linalg.norm(r, axis=1) <= bound
        out[todo[ok]] = r[ok].astype(np.int64)
        todo = todo[~ok]
        if tries:
            retries += int(ok.size)
        if not len(todo):
            return out, retries
    raise RuntimeError(
        f"conditional rounding: {len(todo)} row(s) still above the norm bound {bound:.6g} after "
        f"{MAX_ROUNDING_TRIES} tries (their norm before rounding exceeds the bound's input?)"
    )


def sample_discrete_gaussian(sigma: float, shape: tuple[int, ...], uniform: Uniform) -> np.ndarray:
    """Draws from the discrete Gaussian ``N_Z(0, sigma^2)``, ``P[x] ∝ exp(-x^2 / (2 sigma^2))``
    on the integers, int64 of ``shape``.

    Canonne, Kamath and Steinke 2020 (arXiv 2004.00010, Algorithm 3): propose ``y`` from the
    discrete Laplace of scale ``t = floor(sigma) + 1`` and accept with probability
    ``exp(-(|y| - sigma^2 / t)^2 / (2 sigma^2))``. Vectorized as TF-Privacy's
    ``sample_discrete_gaussian``: all proposals of a batch at once, the discrete Laplace as
    the difference of two geometric variables (each ``floor(-t log U)``, ``P[G >= k] =
    exp(-k / t)``), the Bernoulli by comparing a uniform with the float64 probability, and
    the rejected positions proposed again. The paper's exact rational-arithmetic Bernoulli is
    replaced by float64 comparisons, as in the vectorized reference (a test compares the
    draws with the exact pmf). ``sigma = 0`` gives zeros.
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    size = int(np.prod(shape)) if shape else 1
    out = np.zeros(size, dtype=np.int64)
    if sigma == 0 or size == 0:
        return out.reshape(shape)
    t = math.floor(sigma) + 1
    ss = sigma * sigma
    todo = np.arange(size)
    while len(todo):
        m = len(todo)
        # Batches a little larger than needed: the acceptance rate is at least about 0.7.
        k = int(m * 1.5) + 16
        g = np.floor(-t * np.log1p(-uniform((2, k))))  # log1p(-U) avoids log(0)
        y = g[0] - g[1]
        accept = uniform((k,)) < np.exp(-((np.abs(y) - ss / t) ** 2) / (2 * ss))
        good = y[accept][:m].astype(np.int64)
        out[todo[: len(good)]] = good
        todo = todo[len(good) :]
    return out.reshape(shape)


def discrete_gaussian_pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    """The exact pmf of ``N_Z(0, sigma^2)`` at the integers ``support`` (the normalizing
    constant summed over ``|x| <= 50 sigma + 50``, beyond which the mass is below 1e-500)."""
    r = int(50 * sigma) + 50
    xs = np.arange(-r, r + 1, dtype=np.float64)
    z = np.exp(-(xs**2) / (2 * sigma * sigma)).sum()
    return np.exp(-(np.asarray(support, dtype=np.float64) ** 2) / (2 * sigma * sigma)) / z


def wrap_stddevs(probability: float) -> float:
    """``k`` such that a sub-Gaussian coordinate exceeds ``k`` standard deviations with
    probability at most ``probability``: ``2 exp(-k^2 / 2) = p``, ``k = sqrt(2 log(2 / p))``
    (the paper's ``k``; the reference code's default ``k = 4`` is ``p = 6.7e-4``)."""
    if not 0 < probability < 1:
        raise ValueError(f"the modular clipping probability must lie in (0, 1), got {probability}")
    return math.sqrt(2 * math.log(2 / probability))


def scale_for_bits(
    *, bits: int, clip: float, local_stddev: float, clients: int, dim: int, k: float
) -> float:
    """``1 / gamma`` so that ``k`` standard deviations of a coordinate of the aggregate fit in
    ``Z_{2^bits}`` (the reference code's ``heuristic_scale_factor`` with rho = 1 and the
    conservative ``|sum x_i| <= n c`` growth):

        2^b = 2 k sqrt(c^2 n^2 / D + (gamma^2 / 4 + sigma^2) n) / gamma

    ``sigma`` the local noise std and ``D`` the padded dimension; solved for ``1 / gamma``:
    ``sqrt(2^(2b) - n k^2) / (2 k sqrt(c^2 n^2 / D + n sigma^2))``.

    Raises:
        ValueError: ``2^(2b) <= n k^2`` (no scale fits: more bits or fewer clients).
    """
    n = clients
    room = 2.0 ** (2 * bits) - n * k * k
    if room <= 0:
        raise ValueError(
            f"{bits} bits are too few for {n} clients at k = {k:.3g} standard deviations"
        )
    spread = clip * clip * n * n / dim + n * local_stddev**2
    return math.sqrt(room) / (2 * k * math.sqrt(spread))


__all__ = [
    "DEFAULT_BETA",
    "conditional_round",
    "discrete_gaussian_pmf",
    "fwht",
    "padded_dim",
    "rotate",
    "rotation_signs",
    "rounded_l1_bound",
    "rounded_l2_bound",
    "sample_discrete_gaussian",
    "scale_for_bits",
    "unrotate",
    "wrap_stddevs",
]
