"""(epsilon, delta) of a history of sampled Gaussian mechanisms, through Opacus' accountants.

A *history* is a tuple of ``(noise_multiplier, sample_rate, steps)`` triples, the shape of an
Opacus accountant's ``history``: ``steps`` compositions of the Poisson-subsampled Gaussian
mechanism with noise ``noise_multiplier`` times the L2 sensitivity and sampling rate
``sample_rate``. Every epsilon here comes from Opacus:

- ``rdp``: Renyi DP (Mironov 2017; subsampled Gaussian of Mironov, Talwar and Zhang 2019,
  arXiv 1908.10530), converted to (epsilon, delta) with the tighter conversion of Balle et al.
  2020 (Theorem 21 of arXiv 1905.09982), as Opacus' ``RDPAccountant`` does.
- ``prv``: numerical composition of privacy loss random variables (Gopi et al. 2021, arXiv
  2106.02848); Opacus returns the upper end of its error interval.
- ``gdp``: Gaussian differential privacy through the central limit theorem (Dong et al. 2019,
  arXiv 1905.02383; Bu et al. 2020). An approximation, *not* an upper bound.

:func:`classic_rdp_epsilon` gives the conversion that the published tables of Abadi et al.
2016, Opacus' MNIST example and TF-Privacy's tutorial used (Mironov 2017, Proposition 3):
``min over orders a of RDP(a) + log(1/delta) / (a - 1)``, on the same Opacus RDP values.

Opacus is imported inside the functions: it takes seconds to import, and a config or a plain
FedAvg run must not pay for it.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import warnings
from enum import StrEnum

import numpy as np

from privfl.errors import PrivflError

History = tuple[tuple[float, float, int], ...]

#: Opacus' noise multiplier search stops above this value (``opacus.accountants.utils``).
MAX_NOISE_MULTIPLIER = 1e6
#: Calibration searches no lower: below it the search cannot converge on a target epsilon
#: (epsilon explodes as sigma -> 0) and the noise protects nothing anyway.
MIN_NOISE_MULTIPLIER = 0.05


class AccountantName(StrEnum):
    """The accountants a ledger can ask (the keys of Opacus' accountant registry)."""

    RDP = "rdp"
    PRV = "prv"
    GDP = "gdp"


ACCOUNTANT_NAMES: tuple[str, ...] = tuple(a.value for a in AccountantName)

#: What each accountant's number is, and how loose or approximate it is known to be.
ACCOUNTANT_NOTES: dict[str, str] = {
    AccountantName.RDP: (
        "Renyi DP of the subsampled Gaussian (Mironov et al. 2019) at Opacus' orders (extended "
        "to 1.001 ... 1024), converted "
        "with Balle et al. 2020 (Theorem 21, arXiv 1905.09982). An upper bound; looser than PRV "
        "by typically 5-15%, tighter than the classic conversion the older tables used."
    ),
    "rdp_classic": (
        "The same RDP values with the classic conversion min_a RDP(a) + log(1/delta)/(a-1) "
        "(Mironov 2017, Proposition 3), as in Abadi et al. 2016 and the Opacus/TF-Privacy "
        "tables. A valid but looser upper bound, shown to compare with published figures."
    ),
    AccountantName.PRV: (
        "Numerical composition of privacy loss random variables (Gopi et al. 2021); Opacus "
        "reports the upper end of an interval of width 0.01 in epsilon. The tightest bound here."
    ),
    AccountantName.GDP: (
        "Gaussian DP via the central limit theorem (Dong et al. 2019, Bu et al. 2020): an "
        "APPROXIMATION, NOT A BOUND. It can underestimate epsilon, most when q*sqrt(steps) is "
        "small (Gopi et al. 2021, Fig. 1). Never quote it as a guarantee."
    ),
}


def import_opacus() -> None:
    """Import Opacus, leaving the application's logging configuration as it was.

    Importing Opacus runs ``logging.basicConfig`` (in ``opacus.utils.module_utils``): it adds
    a handler to the root logger, after which the application's own ``basicConfig`` does
    nothing. privfl imports Opacus through this function first and removes that handler;
    logging belongs to the application (privfl's CLI configures it, the library never does).
    """
    if "opacus" in sys.modules:
        return
    root = logging.getLogger()
    before = list(root.handlers)
    import opacus  # noqa: F401  (deferred: opacus is slow to import)

    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)


#: Orders added below Opacus' default alphas (1.1 ... 63): a huge epsilon (little noise, many
#: steps) is smallest at an order near 1. Opacus' RDP at fractional orders near 1 is slow
#: (a series; ~0.2 s for these six at q = 0.34, as much as all the default alphas), so
#: :func:`epsilon_of` computes them only when the optimum over the others is at 1.1.
LOW_ORDERS: tuple[float, ...] = (1.001, 1.002, 1.005, 1.01, 1.02, 1.05)
#: Orders added above them: a tiny epsilon (much noise) is smallest at a large order, about
#: sigma * sqrt(2 log(1/delta)) without sampling. Up to 1024: epsilons down to about 0.02 at
#: delta = 1e-5 are not limited by the orders; Opacus' integer-order RDP costs O(order) per
#: (sigma, q), so the grid stays sparse (cached per (sigma, q) all the same).
HIGH_ORDERS: tuple[float, ...] = (80, 96, 128, 160, 192, 256, 384, 512, 768, 1024)


@functools.cache
def _orders() -> tuple[float, ...]:
    """The RDP orders every RDP figure here is computed at: Opacus' default alphas, extended
    below and above (:data:`LOW_ORDERS`, :data:`HIGH_ORDERS`), so that the optimal order lies
    inside the grid for epsilons from about 0.02 to many thousands (Opacus warns "Optimal
    order is the smallest/largest alpha" when it does not; a test checks it does)."""
    import_opacus()
    from opacus.accountants import RDPAccountant

    return (*LOW_ORDERS, *RDPAccountant.DEFAULT_ALPHAS, *HIGH_ORDERS)


def rdp_orders() -> tuple[float, ...]:
    """The RDP orders privfl's RDP figures are given at (:func:`rdp_of`'s entries, in order):
    Opacus' default alphas extended below and above, see :data:`LOW_ORDERS` and
    :data:`HIGH_ORDERS`."""
    return _orders()


# ---------------------------------------------------------------------------- validation


def check_noise_multiplier(value: float, *, name: str = "noise_multiplier") -> float:
    """``value`` if it is a finite sigma >= 0, else a PrivflError naming it and the fix."""
    if not math.isfinite(value) or value < 0:
        raise PrivflError(
            f"{name} must be a finite number >= 0 (noise std divided by the clip norm), got "
            f"{value}; use e.g. 1.0, or give a target epsilon to calibrate it"
        )
    return float(value)


def check_delta(value: float, *, name: str = "delta") -> float:
    """``value`` if it lies in (0, 1), else a PrivflError naming it and the fix.

    >>> check_delta(1e-5)
    1e-05
    >>> check_delta(1.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    privfl.errors.PrivflError: delta must lie in (0, 1), got 1.0; choose delta well below 1/N...
    """
    if not (math.isfinite(value) and 0 < value < 1):
        raise PrivflError(
            f"{name} must lie in (0, 1), got {value}; choose delta well below 1/N for N "
            "protected units, e.g. 1e-5"
        )
    return float(value)


def check_sample_rate(value: float, *, name: str = "sample_rate") -> float:
    """``value`` if it lies in (0, 1], else a PrivflError naming it and the fix."""
    if not (math.isfinite(value) and 0 < value <= 1):
        raise PrivflError(
            f"{name} must lie in (0, 1] (the Poisson sampling probability q), got {value}; "
            "e.g. batch_size / examples, or clients_per_round / clients"
        )
    return float(value)


def check_accountant(value: str) -> AccountantName:
    """The :class:`AccountantName` ``value`` names, else a PrivflError listing the choices."""
    try:
        return AccountantName(value)
    except ValueError:
        raise PrivflError(
            f"accountant must be one of {', '.join(ACCOUNTANT_NAMES)}, got {value!r}"
        ) from None


# ---------------------------------------------------------------------------- epsilon


@functools.lru_cache(maxsize=8192)
def _unit_rdp_at(noise_multiplier: float, sample_rate: float, low: bool) -> np.ndarray:
    """Opacus' RDP of ONE step at :data:`LOW_ORDERS` (``low``) or at the other orders of
    :func:`_orders` (composition is ``steps`` times it)."""
    import_opacus()
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = _orders()[: len(LOW_ORDERS)] if low else _orders()[len(LOW_ORDERS) :]
    rdp = compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=orders)
    rdp = np.asarray(rdp, dtype=np.float64)
    rdp.setflags(write=False)
    return rdp


def _unit_rdp(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """Opacus' RDP of ONE step at every order of :func:`_orders`."""
    return np.concatenate(
        [_unit_rdp_at(noise_multiplier, sample_rate, low) for low in (True, False)]
    )


def _rdp_part(history: History, *, low: bool) -> np.ndarray:
    n = len(LOW_ORDERS) if low else len(_orders()) - len(LOW_ORDERS)
    total = np.zeros(n)
    for sigma, q, steps in history:
        if steps:
            total = total + steps * _unit_rdp_at(float(sigma), float(q), low)
    return total


def rdp_of(history: History) -> np.ndarray:
    """RDP of the whole history at the orders of :func:`_orders`, shape ``(len(orders),)``.

    RDP composes additively (Mironov 2017, Proposition 1) and Opacus' ``compute_rdp`` is
    ``steps`` times the one-step value, so each distinct ``(sigma, q)`` is computed once and
    cached: a ledger with many parties sharing parameters costs one Opacus call per pair.
    """
    return np.concatenate([_rdp_part(history, low=True), _rdp_part(history, low=False)])


def _rdp_epsilon(history: History, delta: float) -> float:
    """Opacus' RDP-to-(epsilon, delta) conversion (Balle et al. 2020) minimised over the
    orders of :func:`_orders`. The orders near 1 are costly, so the minimum is first taken
    over the others; only when it falls on their smallest (1.1), or on the largest, is it
    taken over every order (any set of orders gives a valid bound; with the conversion
    unimodal in the order, as it is for the subsampled Gaussian, both give the same)."""
    from opacus.accountants.analysis.rdp import get_privacy_spent

    main = list(_orders()[len(LOW_ORDERS) :])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an order at the edge: see below
        eps, best = get_privacy_spent(orders=main, rdp=_rdp_part(history, low=False), delta=delta)
    if best not in (main[0], main[-1]):
        return float(eps)
    eps, _ = get_privacy_spent(orders=list(_orders()), rdp=rdp_of(history), delta=delta)
    return float(eps)


def epsilon_of(history: History, *, delta: float, accountant: str = "rdp") -> float:
    """Epsilon at ``delta`` after ``history``, from the Opacus accountant ``accountant``.

    ``rdp`` uses Opacus' RDP analysis (the values ``RDPAccountant`` computes, cached per
    ``(sigma, q)``; a test checks they are equal); ``prv`` and ``gdp`` load the history into
    Opacus' ``PRVAccountant`` / ``GaussianAccountant`` through their ``load_state_dict``.

    Returns:
        0.0 for an empty history; ``inf`` when some step has ``noise_multiplier == 0``.

    Raises:
        PrivflError: bad ``delta``; ``gdp`` asked for a history whose sigma or q changes
            (Opacus' GDP accountant composes identical steps only); or PRV/GDP failing
            numerically (GDP's root search fails for very large epsilon).

    Opacus' MNIST example (Abadi et al. 2016's setting: q = 0.004, sigma = 1.1, 15000 steps)
    spends 2.91 with the classic conversion (:func:`classic_rdp_epsilon`); the tighter
    conversion used here gives 2.50, and PRV tighter still:

    >>> mnist = ((1.1, 0.004, 15000),)
    >>> round(epsilon_of(mnist, delta=1e-5), 2)
    2.5
    >>> round(epsilon_of(mnist, delta=1e-5, accountant="prv"), 2)
    2.31

    Histories compose: two phases with different sigma are one history. No steps spend
    nothing; a step without noise has no guarantee.

    >>> round(epsilon_of(((1.0, 0.01, 10), (2.0, 0.01, 10)), delta=1e-5), 3)
    1.037
    >>> epsilon_of((), delta=1e-5), epsilon_of(((0.0, 0.1, 5),), delta=1e-5)
    (0.0, inf)
    """
    check_delta(delta)
    name = check_accountant(accountant)
    history = tuple((float(s), float(q), int(t)) for s, q, t in history if t > 0)
    if not history:
        return 0.0
    if any(s == 0 for s, _, _ in history):
        return math.inf
    if name is AccountantName.RDP:
        import_opacus()
        return _rdp_epsilon(history, delta)
    merged = _merge(history)
    if name is AccountantName.GDP and len(merged) > 1:
        raise PrivflError(
            "the gdp accountant needs one noise multiplier and sample rate for every step; this "
            f"history has {len(merged)} different ones: use accountant = 'rdp' or 'prv'"
        )
    import_opacus()
    from opacus.accountants import create_accountant

    with warnings.catch_warnings():
        # GDP warns that it is experimental (the report states its approximation instead);
        # PRV's discretization warns about log(0) at q = 1, which it handles.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        acc = create_accountant(mechanism=name.value)
        acc.load_state_dict({"history": list(merged), "mechanism": name.value})
        try:
            return float(acc.get_epsilon(delta=delta))
        except (ValueError, ArithmeticError, MemoryError) as e:
            raise PrivflError(
                f"Opacus' {name.value} accountant cannot compute epsilon for {merged} at delta "
                f"{delta} ({type(e).__name__}: {e}); use accountant = 'rdp'"
            ) from None


def classic_rdp_epsilon(history: History, *, delta: float) -> float:
    """Epsilon with the classic RDP-to-(epsilon, delta) conversion, on Opacus' RDP values.

    ``epsilon = min_a RDP(a) + log(1/delta) / (a - 1)`` (Mironov 2017, Proposition 3), the
    conversion of Abadi et al. 2016's moments accountant, TF-Privacy's tutorial and Opacus'
    MNIST table (q=0.004, sigma=1.1, 15000 steps -> 2.91 at delta=1e-5). Opacus now converts
    with Balle et al. 2020, which is never larger. This one line is written here because Opacus
    no longer exposes it; the RDP values themselves are Opacus'.

    >>> round(classic_rdp_epsilon(((1.1, 0.004, 15000),), delta=1e-5), 2)  # Opacus' table
    2.91
    """
    check_delta(delta)
    history = tuple((float(s), float(q), int(t)) for s, q, t in history if t > 0)
    if not history:
        return 0.0
    if any(s == 0 for s, _, _ in history):
        return math.inf
    orders = np.asarray(_orders())
    eps = rdp_of(history) + math.log(1 / delta) / (orders - 1)
    return float(np.nanmin(eps))


def _merge(history: History) -> History:
    """Identical ``(sigma, q)`` pairs merged, in first-seen order (composition commutes)."""
    steps: dict[tuple[float, float], int] = {}
    for sigma, q, t in history:
        steps[(sigma, q)] = steps.get((sigma, q), 0) + t
    return tuple((s, q, t) for (s, q), t in steps.items())


# ---------------------------------------------------------------------------- calibration


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    tolerance: float = 0.005,
) -> float:
    """The smallest noise multiplier (to within the search tolerance) whose epsilon after
    ``steps`` steps at rate ``sample_rate`` is at most ``target_epsilon`` at ``delta``.

    Opacus' ``get_noise_multiplier`` does the search (doubling, then bisection); its absolute
    tolerance is set to ``tolerance * target_epsilon``, so the calibrated sigma gives an epsilon
    in ``[(1 - tolerance) * target, target]``.

    Raises:
        PrivflError: a bad argument, or a target no sigma in [0.05, 1e6] reaches.

    >>> sigma = calibrate_noise(target_epsilon=8.0, delta=1e-5, sample_rate=0.01, steps=1000)
    >>> round(sigma, 3)
    0.616
    >>> 8.0 * (1 - 0.005) <= epsilon_of(((sigma, 0.01, 1000),), delta=1e-5) <= 8.0
    True
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise PrivflError(f"target epsilon must be a finite number > 0, got {target_epsilon}")
    check_delta(delta)
    check_sample_rate(sample_rate)
    name = check_accountant(accountant)
    if steps < 1:
        raise PrivflError(f"steps must be >= 1, got {steps}")
    import_opacus()
    from opacus.accountants.utils import get_noise_multiplier

    # The floor uses RDP (an upper bound on PRV's figure; PRV's discretization blows up in
    # memory at tiny sigma): if even RDP is under the target there, every accountant is.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        floor = epsilon_of(((MIN_NOISE_MULTIPLIER, sample_rate, int(steps)),), delta=delta)
    if floor <= target_epsilon:
        raise PrivflError(
            f"target epsilon {target_epsilon} is above the epsilon {floor:.4g} of the smallest "
            f"noise multiplier allowed ({MIN_NOISE_MULTIPLIER}) at delta {delta}, sample rate "
            f"{sample_rate}, {steps} steps: no calibration needed; set the noise multiplier "
            "directly, or lower the target"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            sigma = get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=int(steps),
                accountant=name.value,
                epsilon_tolerance=tolerance * target_epsilon,
            )
        except ValueError as e:
            if "budget is too low" not in str(e):
                raise
            raise PrivflError(
                f"no noise multiplier up to {MAX_NOISE_MULTIPLIER:g} reaches epsilon "
                f"{target_epsilon} at delta {delta} with sample rate {sample_rate} over {steps} "
                "steps; raise the target epsilon or delta, or take fewer steps or a lower rate"
            ) from None
    return float(sigma)


__all__ = [
    "ACCOUNTANT_NAMES",
    "ACCOUNTANT_NOTES",
    "AccountantName",
    "History",
    "MAX_NOISE_MULTIPLIER",
    "MIN_NOISE_MULTIPLIER",
    "calibrate_noise",
    "check_accountant",
    "check_delta",
    "check_noise_multiplier",
    "check_sample_rate",
    "classic_rdp_epsilon",
    "epsilon_of",
    "import_opacus",
    "rdp_of",
    "rdp_orders",
]
