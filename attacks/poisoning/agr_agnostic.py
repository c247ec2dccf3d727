"""What min-max and min-sum share (Shejwalkar and Houmansadr, NDSS 2021, "Manipulating the
Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated Learning",
Section IV-C, the aggregation-rule-agnostic attacks): the malicious update
``mu + gamma * p`` with ``mu`` the benign mean, ``p`` a perturbation direction and ``gamma``
as large as a distance condition allows.

The paper finds ``gamma`` by a bisection (its Algorithm 1, from ``gamma_init = 10`` down to a
``1e-5`` step). Both conditions are quadratic in ``gamma``, so here ``gamma`` is solved for in
closed form: the exact supremum the bisection converges to (when it lies below the
bisection's reach of ``2 gamma_init``). The tests check it against a bisection reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from privfl.attacks.poisoning.config import Perturbation
from privfl.defenses.robust.distances import pairwise_sq_distances


def perturbation_direction(reference: torch.Tensor, kind: Perturbation | str) -> torch.Tensor:
    """``p``: inverse unit vector ``-mu / ||mu||``, inverse standard deviation ``-sigma``
    (``ddof = 0``) or inverse sign ``-sign(mu)`` of the benign updates (paper, Section IV-B).

    Args:
        reference: float32 ``(r, d)``.
    Returns:
        float32 ``(d,)`` (zero when ``mu = 0`` for ``unit``).
    """
    kind = Perturbation(kind)
    sigma, mu = torch.std_mean(reference, dim=0, correction=0)
    if kind is Perturbation.STD:
        return -sigma
    if kind is Perturbation.SIGN:
        return -torch.sign(mu)
    norm = torch.linalg.vector_norm(mu)
    return -mu / norm if norm > 0 else torch.zeros_like(mu)


def _terms(reference: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``a_i = ||r_i - mu||^2``, ``b_i = <r_i - mu, p>`` (float64 ``(r,)``) and ``c = ||p||^2``,
    so that ``||mu + gamma p - r_i||^2 = a_i - 2 gamma b_i + gamma^2 c``."""
    centred = reference - reference.mean(dim=0)
    a = torch.linalg.vector_norm(centred, dim=1).double() ** 2
    b = (centred @ p).double()
    c = float(torch.linalg.vector_norm(p.double()) ** 2)
    return a, b, c


def min_max_gamma(reference: torch.Tensor, p: torch.Tensor) -> float:
    """The largest ``gamma >= 0`` with
    ``max_i ||mu + gamma p - r_i||^2 <= max_{i,j} ||r_i - r_j||^2`` (paper, Eq. (4)).

    Each constraint ``a_i - 2 gamma b_i + gamma^2 c <= D`` holds on an interval whose upper
    end is ``(b_i + sqrt(b_i^2 + c (D - a_i))) / c``; ``gamma = 0`` is feasible because
    ``a_i <= D`` (a point is no farther from the mean than from the farthest point). The
    answer is the smallest upper end; 0 when ``p = 0``.
    """
    a, b, c = _terms(reference, p)
    if c == 0.0:
        return 0.0
    big_d = float(pairwise_sq_distances(reference).max())
    disc = (b * b + c * (big_d - a)).clamp(min=0.0)
    return max(0.0, float(((b + disc.sqrt()) / c).min()))


def min_sum_gamma(reference: torch.Tensor, p: torch.Tensor) -> float:
    """The largest ``gamma >= 0`` with
    ``sum_i ||mu + gamma p - r_i||^2 <= max_i sum_j ||r_i - r_j||^2`` (paper, Eq. (5)).

    Since ``sum_i (r_i - mu) = 0`` the left side is ``sum_i a_i + r gamma^2 c``, so
    ``gamma = sqrt((D - sum_i a_i) / (r c))``; 0 when ``p = 0``.
    """
    a, _, c = _terms(reference, p)
    if c == 0.0:
        return 0.0
    big_d = float(pairwise_sq_distances(reference).sum(dim=1).max())
    r = reference.shape[0]
    return math.sqrt(max(big_d - float(a.sum()), 0.0) / (r * c))


def agr_agnostic_update(
    reference: torch.Tensor,
    kind: Perturbation | str,
    gamma_of: Callable[[torch.Tensor, torch.Tensor], float],
) -> torch.Tensor:
    """``mu + gamma p`` for the benign updates ``reference`` (float32 ``(r, d)``), with
    ``gamma = gamma_of(reference, p)``; float32 ``(d,)``."""
    p = perturbation_direction(reference, kind)
    return reference.mean(dim=0) + gamma_of(reference, p) * p


__all__ = ["agr_agnostic_update", "min_max_gamma", "min_sum_gamma", "perturbation_direction"]
