"""The empirical epsilon lower bound of a one-run audit (Steinke, Nasr and Jagielski,
"Privacy Auditing with One (1) Training Run", NeurIPS 2023, arXiv 2305.08846, Section 5).

``m`` canaries are each included in training independently with probability 1/2; an auditor
guesses membership for ``r`` of them (abstaining on the rest) and is right ``v`` times. Under
(eps, delta)-DP the number of correct guesses is dominated by Binomial(r, q) with
q = e^eps / (1 + e^eps), up to a delta term, so the p-value of ``v`` under the hypothesis
"the training was (eps, delta)-DP" is

    P[Binomial(r, q) >= v] + 2 m delta max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i,

and the lower bound at confidence 1 - beta is the largest eps whose p-value is below beta: any
smaller eps is rejected by the observed guesses. Written here because no maintained library
ships this bound (dp-accounting and Opacus compute upper bounds only).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _check(m: int, r: int, v: int, delta: float) -> None:
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    if not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta must lie in [0, 1], got {delta}")


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """The probability of ``v`` or more correct guesses out of ``r`` under (eps, delta)-DP.

    >>> round(p_value(100, 100, 50, 0.0, 0.0), 3)  # fair coin: P[Bin(100, 1/2) >= 50]
    0.54
    """
    _check(m, r, v, delta)
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Bin(r, q) >= v]
    if delta == 0.0 or v == 0:
        return min(tail, 1.0)
    # P[v - i <= Bin < v] for i = 1..v: a cumulative sum of pmf(v-1), pmf(v-2), ...
    window = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(window / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * alpha, 1.0)


def epsilon_lower_bound(
    m: int, r: int, v: int, *, delta: float, confidence: float = 0.95, eps_max: float = 100.0
) -> float:
    """The largest eps (to 1e-6) that ``v`` correct guesses of ``r`` reject at ``confidence``.

    Returns 0 when even eps = 0 is not rejected (the guesses are no better than chance), and
    ``eps_max`` when every eps up to it is rejected.

    >>> epsilon_lower_bound(1000, 100, 50, delta=1e-5)
    0.0
    >>> 2.0 < epsilon_lower_bound(1000, 100, 100, delta=0.0) < 4.0  # 100 of 100 right
    True
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    beta = 1.0 - confidence
    _check(m, r, v, delta)
    if p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    if p_value(m, r, v, eps_max, delta) < beta:
        return eps_max
    lo, hi = 0.0, eps_max  # p_value(lo) < beta <= p_value(hi); p_value increases with eps
    while hi - lo > 1e-6:
        mid = (lo + hi) / 2
        if p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo
