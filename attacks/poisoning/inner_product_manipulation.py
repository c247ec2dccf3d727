"""Inner product manipulation (Xie, Koyejo and Gupta, UAI 2019, "Fall of Empires")."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from privfl.attacks.poisoning.base import PoisoningParts, UpdatePoisoning
from privfl.attacks.poisoning.config import PoisoningConfig, PoisoningMethod
from privfl.attacks.poisoning.threat import PoisoningThreat
from privfl.stages import RoundContext

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def inner_product_manipulation(reference: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``-epsilon * mean(benign)`` (Xie et al. 2019, Section 4): with ``q`` attackers among
    ``n`` the mean's inner product with the true gradient turns negative once
    ``epsilon > (n - q) / q``; a small ``epsilon`` (the paper's 0.1) instead slips past
    Krum and the median, whose outputs it biases.

    Args:
        reference: float32 ``(r, d)``, the benign updates the attackers know.
        epsilon: > 0.
    Returns:
        float32 ``(d,)``, sent by every attacker.
    """
    return reference.mean(dim=0) * (-float(epsilon))


class InnerProductManipulation(UpdatePoisoning):
    """IPM: every attacker sends ``-epsilon`` times the mean benign update it knows."""

    method = PoisoningMethod.IPM

    def __init__(self, threat: PoisoningThreat, epsilon: float = 0.1) -> None:
        super().__init__(threat)
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.epsilon = epsilon

    @classmethod
    def build(
        cls, config: PoisoningConfig, threat: PoisoningThreat, setup: RunSetup
    ) -> PoisoningParts:
        return PoisoningParts(transform=cls(threat, config.epsilon))

    def craft(
        self, own: torch.Tensor, reference: torch.Tensor, *, n: int, ctx: RoundContext
    ) -> torch.Tensor:
        return inner_product_manipulation(reference, self.epsilon)


__all__ = ["InnerProductManipulation", "inner_product_manipulation"]
