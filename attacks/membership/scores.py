"""Membership scores from a model's logits on candidate examples: larger means "member".

- :func:`loss_score`: the loss attack of Yeom et al. 2018 ("Privacy Risk in Machine Learning:
  Analyzing the Connection to Overfitting", CSF 2018): a member has a lower loss.
- :func:`logit_confidence`: LiRA's statistic, phi = log(p / (1 - p)) of the true class
  (Carlini et al. 2022, Section IV.C, "logit scaling").
- :func:`lira_online`, :func:`lira_offline`: LiRA's Gaussian likelihood ratio from shadow
  models (Carlini et al. 2022, Algorithm 1 and Section IV.D-E).
- :func:`rmia_offline`: RMIA's pairwise likelihood ratio against population examples
  (Zarifzadeh, Liu and Shokri, ICML 2024, "Low-Cost High-Power Membership Inference Attacks",
  Section 3, with the offline approximation of Pr(x) from OUT reference models).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax
from scipy.stats import norm


def _logits_labels(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).ravel()
    if z.ndim != 2 or z.shape[0] != y.size:
        raise ValueError(f"logits of shape {z.shape} for {y.size} labels: expected (n, classes)")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels outside 0..{z.shape[1] - 1}")
    if not np.isfinite(z).all():
        raise ValueError("logits are not finite")
    return z, y


def loss_score(logits, labels) -> np.ndarray:
    """Minus the cross-entropy of each example, ``(n,)`` float64 (Yeom et al. 2018)."""
    z, y = _logits_labels(logits, labels)
    return z[np.arange(y.size), y] - logsumexp(z, axis=1)


def true_class_probability(logits, labels) -> np.ndarray:
    """Softmax probability of each example's true class, ``(n,)`` float64 (RMIA's signal)."""
    z, y = _logits_labels(logits, labels)
    return softmax(z, axis=1)[np.arange(y.size), y]


def logit_confidence(logits, labels) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)) of the true class, ``(n,)`` float64 (Carlini et al. 2022).

    Computed as ``z_y - logsumexp(z_j, j != y)``, which equals ``log p_y - log sum_{j != y}
    p_j`` exactly and stays finite where p_y rounds to 1 (the reference code,
    research/mi_lira_2021/score.py, adds 1e-45 inside the logarithms instead).

    >>> logit_confidence([[2.0, 0.0]], [0]).round(6)
    array([2.])
    """
    z, y = _logits_labels(logits, labels)
    rows = np.arange(y.size)
    others = z.copy()
    others[rows, y] = -np.inf
    return z[rows, y] - logsumexp(others, axis=1)


def _shadow_arrays(target, shadow, shadow_in) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(target, dtype=np.float64).ravel()
    s = np.asarray(shadow, dtype=np.float64)
    k = np.asarray(shadow_in, dtype=bool)
    if s.ndim != 2 or s.shape[1] != t.size or k.shape != s.shape:
        raise ValueError(
            f"shadow scores {s.shape} and inclusions {k.shape} must be (shadow models, {t.size})"
        )
    if not (np.isfinite(t).all() and np.isfinite(s).all()):
        raise ValueError("LiRA statistics are not finite")
    return t, s, k


def _median_std(s: np.ndarray, mask: np.ndarray, fixed: bool, what: str):
    count = mask.sum(axis=0)
    if (count < (1 if fixed else 2)).any():
        raise ValueError(
            f"every candidate needs at least {1 if fixed else 2} {what} shadow models "
            f"(fewest: {int(count.min())}); train more shadow models"
        )
    masked = np.where(mask, s, np.nan)
    mu = np.nanmedian(masked, axis=0)  # the reference code's location estimate
    sd = np.full(s.shape[1], np.nanstd(masked)) if fixed else np.nanstd(masked, axis=0)
    return mu, np.maximum(sd, 1e-30)


def lira_online(target, shadow, shadow_in, *, fixed_variance: bool = False) -> np.ndarray:
    """LiRA online: log N(phi; mu_in, sd_in^2) - log N(phi; mu_out, sd_out^2) per candidate.

    Args:
        target: phi of each candidate under the attacked model, ``(n,)``.
        shadow: phi under each shadow model, ``(shadows, n)``.
        shadow_in: whether each shadow model trained on each candidate, ``(shadows, n)``.
        fixed_variance: one variance for all candidates (per IN and per OUT), the paper's
            choice with few shadow models (Section VI.B); otherwise one per candidate.

    Means are medians and deviations the population std (``ddof = 0``), as in the reference
    code. With ``fixed_variance`` the reference code uses the IN deviation for both
    distributions; this follows the paper, which estimates a global variance for each.
    """
    t, s, k = _shadow_arrays(target, shadow, shadow_in)
    mu_in, sd_in = _median_std(s, k, fixed_variance, "IN")
    mu_out, sd_out = _median_std(s, ~k, fixed_variance, "OUT")
    return norm.logpdf(t, mu_in, sd_in) - norm.logpdf(t, mu_out, sd_out)


def lira_offline(target, shadow, shadow_in, *, fixed_variance: bool = False) -> np.ndarray:
    """LiRA offline: how far phi lies above the OUT distribution, ``(phi - mu_out) / sd_out``.

    The paper's one-sided test (Carlini et al. 2022, Section IV.E) scores 1 - Pr[Z > phi] for
    Z ~ N(mu_out, sd_out^2), which is increasing in this standardised value; it is returned
    instead because it keeps its order where the probability rounds to 1. IN shadow models,
    if any, are ignored. (The reference code scores the two-sided OUT density instead.)
    """
    t, s, k = _shadow_arrays(target, shadow, shadow_in)
    mu_out, sd_out = _median_std(s, ~k, fixed_variance, "OUT")
    return (t - mu_out) / sd_out


def rmia_offline(
    target_px, ref_px, ref_in, target_pz, ref_pz, *, a: float = 0.3, gamma: float = 1.0
) -> np.ndarray:
    """RMIA with OUT reference models: the share of population examples z that x dominates,
    Pr_z[(p(x|theta) / p(x)) / (p(z|theta) / p(z)) > gamma].

    Args:
        target_px: p(x|theta), the attacked model's true-class probability of each candidate,
            ``(n,)``.
        ref_px: the reference models' probabilities of the candidates, ``(refs, n)``.
        ref_in: whether each reference model trained on each candidate, ``(refs, n)``; only
            OUT entries are used.
        target_pz, ref_pz: the same for the population examples, ``(m,)`` and ``(refs, m)``;
            no reference model trained on them.
        a: the offline coefficient, p(x) = ((1 + a) * mean_out p(x) + (1 - a)) / 2 (the
            reference code's default 0.3, which it tunes on a paired model).
        gamma: the likelihood-ratio threshold (1 in the paper's experiments).
    """
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"a must lie in [0, 1], got {a}")
    px, rx, kx = _shadow_arrays(target_px, ref_px, ref_in)
    pz = np.asarray(target_pz, dtype=np.float64).ravel()
    rz = np.asarray(ref_pz, dtype=np.float64)
    if rz.shape != (rx.shape[0], pz.size) or pz.size == 0:
        raise ValueError(f"population probabilities {rz.shape}: expected ({rx.shape[0]}, m > 0)")
    out = ~kx
    if (out.sum(axis=0) < 1).any():
        raise ValueError("every candidate needs at least one OUT reference model")
    mean_out_x = np.where(out, rx, 0.0).sum(axis=0) / out.sum(axis=0)
    prior_x = (1 + a) / 2 * mean_out_x + (1 - a) / 2
    prior_z = (1 + a) / 2 * rz.mean(axis=0) + (1 - a) / 2
    ratio_x = px / prior_x
    ratio_z = pz / prior_z
    # Sorted population ratios: the share above ratio_x / gamma, in O((n + m) log m).
    sorted_z = np.sort(ratio_z)
    below = np.searchsorted(sorted_z, ratio_x / gamma, side="left")
    return below / sorted_z.size
