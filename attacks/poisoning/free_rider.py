"""Free riders: clients that take the reward without training (Lin, Du and Liu, "Free-riders
in Federated Learning: Attacks and Defenses", arXiv 1911.12560, 2019).

The plain free rider sends back the global model it received, i.e. a zero update; the
disguised one adds Gaussian noise of standard deviation ``disguise`` per coordinate so the
update does not look empty. Either way it contributes nothing: the contribution measures of
``[incentives]`` should rank it last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from privfl.attacks.poisoning.base import PoisoningParts, UpdatePoisoning
from privfl.attacks.poisoning.config import PoisoningConfig, PoisoningMethod
from privfl.attacks.poisoning.threat import PoisoningThreat
from privfl.stages import RoundContext

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


class FreeRider(UpdatePoisoning):
    """Malicious clients send a zero update, plus ``N(0, disguise^2)`` noise per coordinate
    from the stream ``(seed, "poisoning", "free_rider", round)`` when ``disguise > 0``."""

    method = PoisoningMethod.FREE_RIDER

    def __init__(self, threat: PoisoningThreat, disguise: float = 0.0) -> None:
        super().__init__(threat)
        if not disguise >= 0:
            raise ValueError(f"disguise must be >= 0, got {disguise}")
        self.disguise = disguise

    @classmethod
    def build(
        cls, config: PoisoningConfig, threat: PoisoningThreat, setup: RunSetup
    ) -> PoisoningParts:
        return PoisoningParts(transform=cls(threat, config.disguise))

    def craft(
        self, own: torch.Tensor, reference: torch.Tensor, *, n: int, ctx: RoundContext
    ) -> torch.Tensor:
        if self.disguise == 0:
            return torch.zeros_like(own)
        g = ctx.torch_rng("poisoning", "free_rider")
        return torch.randn(own.shape, generator=g, dtype=torch.float32) * self.disguise


__all__ = ["FreeRider"]
