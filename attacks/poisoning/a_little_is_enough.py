"""A Little Is Enough (Baruch, Baruch and Goldberg, NeurIPS 2019)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from scipy.stats import norm

from privfl.attacks.poisoning.base import PoisoningParts, UpdatePoisoning
from privfl.attacks.poisoning.config import PoisoningConfig, PoisoningMethod
from privfl.attacks.poisoning.threat import PoisoningThreat
from privfl.stages import RoundContext

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def alie_z_max(n: int, m: int) -> float:
    """Baruch et al. 2019, Algorithm 3, lines 1-2: the attackers need
    ``s = floor(n/2 + 1) - m`` benign "supporters", and
    ``z_max = max z such that Phi(z) < (n - s) / n``, i.e. ``Phi^{-1}((n - s) / n)`` (the
    standard normal quantile, from scipy).

    Args:
        n: clients, m: attackers among them; ``1 <= m <= n // 2``.
    """
    if not 1 <= m <= n // 2:
        raise ValueError(f"z_max needs 1 <= m <= n // 2, got n={n}, m={m}")
    s = math.floor(n / 2 + 1) - m
    return float(norm.ppf((n - s) / n))


def a_little_is_enough(reference: torch.Tensor, z: float) -> torch.Tensor:
    """``mu + z * sigma`` of the benign *updates*, coordinate by coordinate, with ``mu`` and
    ``sigma`` their mean and (population, ``ddof = 0``) standard deviation.

    Baruch et al. 2019 (Algorithm 3, line 5) shift each coordinate of the benign mean by ``z``
    standard deviations; the authors' code (github.com/moranant/attacking_distributed_learning,
    ``malicious.py``, ``DriftAttack``) sends the *gradient* ``mean_g - z * std_g``, which the
    server applies as ``-lr * g``. In update space (``u = -lr * g``) that is
    ``mean_u + z * std_u``: the sign matters, since the shifted update keeps moving the
    weights the benign clients move them, past where the mean would, which is what makes
    Krum and Bulyan prefer it (the opposite shift slows training instead of derailing it).

    Args:
        reference: float32 ``(r, d)``, ``r >= 1``.
    Returns:
        float32 ``(d,)``, sent by every attacker.
    """
    sigma, mu = torch.std_mean(reference, dim=0, correction=0)
    return mu + float(z) * sigma


class ALittleIsEnough(UpdatePoisoning):
    """ALIE: every attacker sends ``mu + z sigma`` of the benign updates it knows (the
    authors' ``mean - z std`` of gradients).

    ``z`` defaults to :func:`alie_z_max` of the registered clients ``n`` and the malicious
    clients ``m`` (the population the adversary controls a share of; a round's cohort holds
    ``m/n`` of attackers in expectation), so it is fixed for the run.
    """

    method = PoisoningMethod.ALIE

    def __init__(self, threat: PoisoningThreat, z: float) -> None:
        super().__init__(threat)
        self.z = z

    @classmethod
    def build(
        cls, config: PoisoningConfig, threat: PoisoningThreat, setup: RunSetup
    ) -> PoisoningParts:
        z = config.z
        if z is None:
            z = alie_z_max(threat.num_clients, len(threat.malicious))
        return PoisoningParts(transform=cls(threat, z))

    def craft(
        self, own: torch.Tensor, reference: torch.Tensor, *, n: int, ctx: RoundContext
    ) -> torch.Tensor:
        return a_little_is_enough(reference, self.z)


__all__ = ["ALittleIsEnough", "a_little_is_enough", "alie_z_max"]
