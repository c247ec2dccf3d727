"""Empirical epsilon from canary statistics (Andrew et al. 2023, "One-shot empirical privacy
estimation for federated learning", ICLR 2024, arXiv 2302.03098, Section 3).

The cosines of the final model delta with the *inserted* canaries and with *unseen* canaries
are each fitted with a Gaussian; the estimate is the epsilon at ``delta`` of the mechanism whose
two output distributions are these Gaussians (their Algorithm 2). For equal variances it is the
epsilon of the Gaussian mechanism with ``mu = |m1 - m0| / s`` (Balle and Wang 2018, Theorem 8);
with different variances the region where one density exceeds ``e^eps`` times the other is cut
out by the roots of a quadratic, and the hockey-stick divergence is a sum of normal CDFs. No
library computes this for unequal variances, so it is written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from privfl.errors import PrivflError

#: Epsilon estimates are searched in [0, EPS_MAX]; a larger one is reported as EPS_MAX.
EPS_MAX = 100.0


@dataclass(frozen=True)
class GaussianFit:
    """A normal distribution fitted to samples (mean and std, ``ddof = 1``)."""

    mean: float
    std: float

    @classmethod
    def of(cls, samples: np.ndarray) -> GaussianFit:
        x = np.asarray(samples, dtype=np.float64)
        if len(x) < 2:
            raise PrivflError(
                "an empirical privacy estimate needs at least 2 canaries of each kind"
            )
        return cls(float(x.mean()), max(float(x.std(ddof=1)), 1e-12))


def _hockey_stick(p: GaussianFit, q: GaussianFit, eps: float) -> float:
    """``sup_S P(S) - e^eps Q(S)`` for ``P = N(p)``, ``Q = N(q)``: the delta of the pair at eps.

    ``S = {x : log p(x) - log q(x) > eps}``; the log ratio is quadratic in x, so S is an
    interval, the complement of one, or a half-line.
    """
    # log p - log q - eps = a x^2 + b x + c
    a = 0.5 / q.std**2 - 0.5 / p.std**2
    b = p.mean / p.std**2 - q.mean / q.std**2
    c = q.mean**2 / (2 * q.std**2) - p.mean**2 / (2 * p.std**2) + math.log(q.std / p.std) - eps

    def log_mass(dist: GaussianFit, lo: float, hi: float) -> float:
        # Half-lines through logsf/logcdf: the tails matter at large eps.
        if hi == math.inf:
            return float(stats.norm.logsf(lo, dist.mean, dist.std))
        if lo == -math.inf:
            return float(stats.norm.logcdf(hi, dist.mean, dist.std))
        if lo > dist.mean:
            m = stats.norm.sf(lo, dist.mean, dist.std) - stats.norm.sf(hi, dist.mean, dist.std)
        else:
            m = stats.norm.cdf(hi, dist.mean, dist.std) - stats.norm.cdf(lo, dist.mean, dist.std)
        return math.log(m) if m > 0 else -math.inf

    if abs(a) < 1e-12 * max(abs(b), 1e-300):  # equal variances: a half-line
        if b == 0:
            return max(0.0, 0.0 if c <= 0 else 1.0 - math.exp(eps))
        t = -c / b
        lo, hi = (t, math.inf) if b > 0 else (-math.inf, t)
        intervals = [(lo, hi)]
    else:
        disc = b * b - 4 * a * c
        if disc <= 0:
            intervals = [(-math.inf, math.inf)] if a > 0 else []
        else:
            r1, r2 = sorted(((-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)))
            intervals = [(-math.inf, r1), (r2, math.inf)] if a > 0 else [(r1, r2)]
    d = sum(
        math.exp(log_mass(p, lo, hi)) - math.exp(eps + log_mass(q, lo, hi)) for lo, hi in intervals
    )
    return max(0.0, d)


def gaussian_pair_epsilon(p: GaussianFit, q: GaussianFit, *, delta: float) -> float:
    """The smallest eps with ``delta(eps) <= delta`` in both directions for ``N(p)`` vs
    ``N(q)``; ``EPS_MAX`` when even that is not enough."""
    if not 0 < delta < 1:
        raise PrivflError(f"delta must lie in (0, 1), got {delta}")
    worst = 0.0
    for x, y in ((p, q), (q, p)):
        if _hockey_stick(x, y, 0.0) <= delta:
            continue
        if _hockey_stick(x, y, EPS_MAX) > delta:
            return EPS_MAX
        eps = optimize.brentq(lambda e, x=x, y=y: _hockey_stick(x, y, e) - delta, 0.0, EPS_MAX)
        worst = max(worst, eps)
    return float(worst)


def empirical_epsilon(
    inserted: np.ndarray, unseen: np.ndarray, *, delta: float
) -> tuple[float, GaussianFit, GaussianFit]:
    """Andrew et al. 2023's one-shot estimate from the canary cosines.

    Args:
        inserted: cosines of the final model delta with the inserted canaries, shape ``(k,)``.
        unseen: cosines with canaries that were never inserted, shape ``(k',)``.
    Returns:
        ``(epsilon, fit_inserted, fit_unseen)``.
    """
    fi, fu = GaussianFit.of(inserted), GaussianFit.of(unseen)
    return gaussian_pair_epsilon(fi, fu, delta=delta), fi, fu


__all__ = ["EPS_MAX", "GaussianFit", "empirical_epsilon", "gaussian_pair_epsilon"]
