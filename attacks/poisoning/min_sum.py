"""Min-sum (Shejwalkar and Houmansadr, NDSS 2021, Section IV-C)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from privfl.attacks.poisoning.agr_agnostic import agr_agnostic_update, min_sum_gamma
from privfl.attacks.poisoning.base import PoisoningParts, UpdatePoisoning
from privfl.attacks.poisoning.config import Perturbation, PoisoningConfig, PoisoningMethod
from privfl.attacks.poisoning.threat import PoisoningThreat
from privfl.stages import RoundContext

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def min_sum(reference: torch.Tensor, perturbation: Perturbation | str = "std") -> torch.Tensor:
    """The min-sum update ``mu + gamma p``, with ``gamma`` the largest value for which the
    sum of squared distances from the malicious update to the benign ones stays within the
    largest such sum of a benign update (Eq. (5)).

    Args:
        reference: float32 ``(r, d)``, the benign updates the attackers know.
        perturbation: ``unit``, ``std`` or ``sign`` (see
            :func:`~privfl.attacks.poisoning.agr_agnostic.perturbation_direction`).
    Returns:
        float32 ``(d,)``, sent by every attacker.
    """
    return agr_agnostic_update(reference, perturbation, min_sum_gamma)


class MinSum(UpdatePoisoning):
    """Min-sum: every attacker sends :func:`min_sum` of the benign updates it knows."""

    method = PoisoningMethod.MIN_SUM

    def __init__(self, threat: PoisoningThreat, perturbation: Perturbation | str = "std") -> None:
        super().__init__(threat)
        self.perturbation = Perturbation(perturbation)

    @classmethod
    def build(
        cls, config: PoisoningConfig, threat: PoisoningThreat, setup: RunSetup
    ) -> PoisoningParts:
        return PoisoningParts(transform=cls(threat, config.perturbation))

    def craft(
        self, own: torch.Tensor, reference: torch.Tensor, *, n: int, ctx: RoundContext
    ) -> torch.Tensor:
        return min_sum(reference, self.perturbation)


__all__ = ["MinSum", "min_sum"]
