"""Privacy of one round of the distributed discrete Gaussian, and its entry in the ledger.

The bound (Kairouz, Liu and Steinke, ICML 2021, arXiv 2102.06387, Theorem 1 and the three
terms the reference code ``distributed_dp/accounting_utils.py::compute_rdp_dgaussian`` cites
as Proposition 14): the sum of ``n`` independent ``N_Z(0, sigma^2)`` vectors in ``Z^D``, with
``sigma`` the scaled local std, shifted by an integer vector of L2 norm ``Delta_2`` and L1 norm
``Delta_1``, satisfies Renyi DP of order ``alpha`` with

    eps(alpha) = min( alpha/2 s2^2 + tau D,
                      alpha/2 (s2^2 + 2 s1 tau + tau^2 D),
                      alpha/2 (s2 + sqrt(D) tau)^2 )
    s2 = Delta_2 / (sqrt(n) sigma),  s1 = Delta_1 / (sqrt(n) sigma),
    tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1)).

``Delta_2`` is the norm bound *after* conditional randomized rounding
(:func:`~privfl.defenses.dp.ddgauss.rounded_l2_bound` of the scaled clip ``c / gamma``), which
is how rounding enters the sensitivity. Poisson sampling of users at rate ``q`` is amplified
with the general upper bound of Zhu and Wang (ICML 2019, "Poisson subsampled Renyi
differential privacy", Theorem 5), valid for any mechanism given its RDP curve at integer
orders, exactly as the reference code does (``_compute_rdp_subsampled(upper_bound=True)``),
and the smaller of the amplified and unamplified values is kept at each order. The reference
code's TODO about exact accounting concerns this step: a tighter amplification would need
more than the RDP curve; the general bound is loose but sound.

Shares counted and the neighbouring relation. As in the paper and the reference code, a
round's sum of ``n`` survivors carries ``n`` shares of variance ``sigma^2 c^2 / E[m]`` each, and
neighbouring inputs differ in one survivor's clipped update (replaced by zero; the survivor
still adds its share: "zero-out" neighbours), composed with Poisson sampling of users by the
general bound above as the reference code does. Dropouts reduce ``n`` and epsilon grows. Not
proved here (nor in the reference code, whose ``get_noised_result`` notes it assumes no
dropouts): that the amplification bound holds when a user's absence also removes its share
(add/remove neighbours); the ledger states the relation it uses.

The ledger accounts subsampled Gaussian mechanisms (Opacus' RDP), so each round is entered as
the subsampled Gaussian of the *largest* noise multiplier ``z`` whose RDP is at least this
round's at every order the ledger converts at (:func:`dominating_noise_multiplier`; between
integer orders the bound follows from convexity, :func:`fractional_rdp`, and below order 2 it is
the smaller of the order-2 value and :func:`low_order_subsampled_rdp`, a second-order bound
derived here).
Composition and the (epsilon, delta) conversion then run on an upper bound of the round's RDP:
the ledger's epsilon is never below :func:`ddgauss_epsilon`'s direct one (tests check both
ways), and budget checks, per-round curves and reports work unchanged. Only the RDP figure is
a bound for this mechanism: PRV and GDP would compute the dominating Gaussian's privacy loss
distribution, which RDP dominance does not order, so distributed mode accepts
``accountant = "rdp"`` only.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special

from privfl.accounting import import_opacus, rdp_of, rdp_orders
from privfl.defenses.dp.ddgauss import rounded_l1_bound, rounded_l2_bound

#: Integer orders of the direct bound: the reference code's ``RDP_ORDERS`` (2..128, 256).
DIRECT_ORDERS: tuple[int, ...] = tuple(range(2, 129)) + (256,)


def tau(local_stddev: float, shares: int) -> float:
    """``10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1))`` for ``n`` shares of scaled
    std ``sigma`` (Theorem 1): how far the sum of discrete Gaussians is from one."""
    k = np.arange(1, max(shares, 1), dtype=np.float64)
    return float(10 * np.exp(-2 * math.pi**2 * local_stddev**2 * k / (k + 1)).sum())


def unsampled_rdp(
    orders: np.ndarray, *, l1_scale: float, l2_scale: float, tau: float, dim: int
) -> np.ndarray:
    """The three-term RDP bound of one round without sampling (module docstring), at
    ``orders``."""
    a = np.asarray(orders, dtype=np.float64)
    t1 = a / 2 * l2_scale**2 + tau * dim
    t2 = a / 2 * (l2_scale**2 + 2 * l1_scale * tau + tau**2 * dim)
    t3 = a / 2 * (l2_scale + math.sqrt(dim) * tau) ** 2
    return np.minimum(np.minimum(t1, t2), t3)


def subsampled_rdp(orders: np.ndarray, q: float, rdp: np.ndarray) -> np.ndarray:
    """Zhu and Wang 2019, Theorem 5: RDP at integer ``orders`` (>= 2) of the Poisson
    subsampled mechanism whose RDP at integer order ``l`` is ``rdp[l - 2]`` (``rdp`` covers
    2..max(orders)); the minimum with the unamplified value at each order.

        eps'(a) <= log( (1-q)^(a-1) (a q - q + 1) + C(a,2) q^2 (1-q)^(a-2) e^eps(2)
                        + 3 sum_{l=3}^a C(a,l) (1-q)^(a-l) q^l e^((l-1) eps(l)) ) / (a - 1)
    """
    orders = np.asarray(orders, dtype=np.int64)
    if q >= 1:
        return rdp[orders - 2]
    out = np.empty(len(orders))
    lq, l1q = math.log(q), math.log1p(-q)
    for i, a in enumerate(orders.tolist()):
        ls = np.arange(2, a + 1)
        log_comb = special.gammaln(a + 1) - special.gammaln(ls + 1) - special.gammaln(a - ls + 1)
        terms = (ls - 1) * rdp[ls - 2] + log_comb + (a - ls) * l1q + ls * lq
        weights = np.where(ls == 2, 1.0, 3.0)
        first = (a - 1) * l1q + math.log(a * q - q + 1)
        top = max(first, float(terms.max()))  # log-sum-exp by hand: scipy's costs 0.5 ms a call
        total = top + math.log(math.exp(first - top) + float((weights * np.exp(terms - top)).sum()))
        out[i] = min(total / (a - 1), rdp[a - 2])
    return out


def round_rdp(
    orders: tuple[int, ...],
    *,
    sample_rate: float,
    clip: float,
    scale: float,
    beta: float,
    dim: int,
    local_stddev: float,
    shares: int,
) -> np.ndarray:
    """RDP at integer ``orders`` of one round: ``shares`` noise shares of std
    ``local_stddev`` (unscaled), clip ``clip``, scale ``1 / gamma``, conditional rounding's
    ``beta``, padded dimension ``dim``, users Poisson-sampled at ``sample_rate``.
    ``inf`` everywhere when ``shares < 1`` or the noise is 0."""
    orders_arr = np.asarray(orders, dtype=np.int64)
    if shares < 1 or local_stddev <= 0:
        return np.full(len(orders_arr), math.inf)
    every = np.arange(2, int(orders_arr.max()) + 1)
    base = _unsampled(every, clip, scale, beta, dim, local_stddev, shares)
    return subsampled_rdp(orders_arr, sample_rate, base)


def _unsampled(
    orders: np.ndarray,
    clip: float,
    scale: float,
    beta: float,
    dim: int,
    local_stddev: float,
    shares: int,
) -> np.ndarray:
    """The unsampled bound at any real ``orders`` >= 1 (Theorem 1 holds for all of them)."""
    sigma = local_stddev * scale
    l2 = rounded_l2_bound(clip * scale, beta, dim)
    l1 = rounded_l1_bound(l2, dim)
    root = math.sqrt(shares) * sigma
    return unsampled_rdp(
        orders, l1_scale=l1 / root, l2_scale=l2 / root, tau=tau(sigma, shares), dim=dim
    )


def ddgauss_epsilon(rounds: list[dict[str, float]], *, delta: float) -> float:
    """Epsilon at ``delta`` of the composed rounds (each a dict of :func:`round_rdp`'s keyword
    arguments), computed directly at :data:`DIRECT_ORDERS` and converted with Opacus'
    ``get_privacy_spent`` (Balle et al. 2020, the ledger's conversion): the reference
    against which the ledger's entry is tested."""
    import_opacus()
    from opacus.accountants.analysis.rdp import get_privacy_spent

    total = np.zeros(len(DIRECT_ORDERS))
    for r in rounds:
        total = total + round_rdp(DIRECT_ORDERS, **r)
    if not np.isfinite(total).any():
        return math.inf
    eps, _ = get_privacy_spent(orders=list(DIRECT_ORDERS), rdp=total, delta=delta)
    return float(eps)


def low_order_subsampled_rdp(orders: np.ndarray, q: float, rdp2: float) -> np.ndarray:
    """An RDP bound at orders ``1 < alpha < 2`` of the Poisson subsampled mechanism (rate
    ``q < 1``) whose base mechanism has RDP ``rdp2`` at order 2 (in both directions):

        log(1 + alpha (alpha - 1) / 2 (1 - q)^-(alpha + 1) q^2 (e^rdp2 - 1)) / (alpha - 1)

    Derived here, not taken from a paper: with ``L = dP/dQ`` and ``Y = q (L - 1) >= -q``,
    ``E_Q[Y] = 0`` and ``E_Q[Y^2] = q^2 (e^D_2(P||Q) - 1)``; the second-order Taylor
    expansion with Lagrange remainder gives ``(1 + y)^a <= 1 + a y + a (a - 1) / 2 (1 -
    q)^(a - 2) y^2`` (removal direction, ``a = alpha``) and ``(1 + y)^(1 - alpha) <= 1 + (1 -
    alpha) y + alpha (alpha - 1) / 2 (1 - q)^-(alpha + 1) y^2`` (addition direction), for
    ``y >= -q``; the larger coefficient covers both, and joint convexity of ``exp((alpha - 1)
    D_alpha)`` extends it from one conditioning on the other users' sampling to the mixture, as
    in the integer-order proofs. It beats the flat order-2 value only close to order 1, which
    is where a Gaussian must otherwise be forced far down; a test checks it against Opacus'
    exact subsampled Gaussian RDP."""
    a = np.asarray(orders, dtype=np.float64)
    coef = a * (a - 1) / 2 * (1 - q) ** -(a + 1)
    return np.log1p(coef * q * q * math.expm1(rdp2)) / (a - 1)


def fractional_rdp(orders: np.ndarray, at_ints: np.ndarray) -> np.ndarray:
    """An RDP bound at any ``orders`` > 1 from bounds ``at_ints`` at the integers 2, 3, ...:
    ``(alpha - 1) D_alpha`` is convex in alpha (van Erven and Harremoes 2014, "Renyi
    divergence and Kullback-Leibler divergence"), so between integers ``a < alpha < a + 1``
    (``a >= 2``) it is at most the chord through ``a`` and ``a + 1``; below 2 the bound at 2
    (D_alpha is non-decreasing in alpha)."""
    a = np.asarray(orders, dtype=np.float64)
    lo = np.maximum(np.floor(a).astype(np.int64), 2)
    w = np.clip(a - lo, 0.0, 1.0)
    chord = (1 - w) * (lo - 1) * at_ints[lo - 2] + w * lo * at_ints[
        np.minimum(lo - 1, len(at_ints) - 1)
    ]
    return np.where(a < 2, at_ints[0], chord / np.maximum(a - 1, 1e-12))


@functools.lru_cache(maxsize=1024)
def dominating_noise_multiplier(
    *,
    sample_rate: float,
    clip: float,
    scale: float,
    beta: float,
    dim: int,
    local_stddev: float,
    shares: int,
) -> float:
    """The largest noise multiplier ``z`` (to 1e-3 relative, rounded down) such that the
    Poisson subsampled Gaussian's RDP at ``(z, sample_rate)`` (Opacus, as the ledger computes
    it) is at least :func:`round_rdp` at every order of the ledger (a fractional order
    compared with the next integer's value); 0 when the round has no guarantee."""
    orders = np.asarray(rdp_orders(), dtype=np.float64)
    ints = tuple(range(2, int(np.ceil(orders.max())) + 2))
    at_ints = round_rdp(
        ints,
        sample_rate=sample_rate,
        clip=clip,
        scale=scale,
        beta=beta,
        dim=dim,
        local_stddev=local_stddev,
        shares=shares,
    )
    if not np.isfinite(at_ints).all():
        return 0.0
    if sample_rate >= 1:  # no subsampling: the bound itself at every real order
        ddg = _unsampled(orders, clip, scale, beta, dim, local_stddev, shares)
    else:
        ddg = fractional_rdp(orders, at_ints)
        below = orders < 2
        if below.any():
            rdp2 = float(
                _unsampled(np.array([2.0]), clip, scale, beta, dim, local_stddev, shares)[0]
            )
            low = low_order_subsampled_rdp(orders[below], sample_rate, rdp2)
            ddg[below] = np.minimum(ddg[below], low)

    # Opacus' fractional orders are slow at large q (a second a call): bisect on the orders
    # that bind (where the Gaussian's RDP is closest to the bound), then check every order
    # with the ledger's own function and add any that fail.
    def gaussian(z: float, subset: np.ndarray) -> np.ndarray:
        from opacus.accountants.analysis.rdp import compute_rdp

        return np.asarray(
            compute_rdp(q=sample_rate, noise_multiplier=z, steps=1, orders=list(orders[subset]))
        )

    hi = math.sqrt(shares) * local_stddev / clip  # alpha / (2 z^2) at tau = 0 and no rounding
    # Start from the lowest orders (where the bound is flat at its order-2 value, so they
    # bind) and orders 2..4 (where the conversion usually lands); the check below adds the
    # rest as needed. The final full check is the ledger's own rdp_of, cached for it.
    low, mid = np.arange(min(3, len(orders))), np.flatnonzero(np.isin(orders, (2, 3, 4)))
    subset = np.union1d(low, mid)
    import_opacus()
    for _ in range(len(orders)):
        lo, top = hi / 2, hi
        while not np.all(gaussian(lo, subset) >= ddg[subset]):
            top, lo = lo, lo / 2
            if lo < 1e-6:
                return 0.0
        while top / lo > 1 + 1e-3:
            mid = math.sqrt(lo * top)
            if np.all(gaussian(mid, subset) >= ddg[subset]):
                lo = mid
            else:
                top = mid
        ratio = rdp_of(((lo, sample_rate, 1),)) / ddg
        if np.all(ratio >= 1):
            return lo
        subset = np.union1d(subset, [int(np.argmin(ratio))])  # the most violated order
    return 0.0


__all__ = [
    "DIRECT_ORDERS",
    "ddgauss_epsilon",
    "dominating_noise_multiplier",
    "fractional_rdp",
    "low_order_subsampled_rdp",
    "round_rdp",
    "subsampled_rdp",
    "tau",
    "unsampled_rdp",
]
