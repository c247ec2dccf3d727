"""Gaussian noise: a malicious client sends an isotropic Gaussian vector."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from privfl.attacks.poisoning.base import PoisoningParts, UpdatePoisoning
from privfl.attacks.poisoning.config import PoisoningConfig, PoisoningMethod
from privfl.attacks.poisoning.threat import PoisoningThreat
from privfl.stages import RoundContext

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def gaussian_noise(m: int, d: int, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """``m`` independent draws of ``N(0, sigma^2 I_d)``, the "Gaussian Byzantine workers" of
    Blanchard et al., NeurIPS 2017, Section 6 (they use ``sigma = 200``).

    Returns:
        float32 ``(m, d)``.
    """
    return torch.randn((m, d), generator=generator, dtype=torch.float32) * float(sigma)


class GaussianNoise(UpdatePoisoning):
    """Malicious clients replace their update by Gaussian noise; the draws come from the
    stream ``(seed, "poisoning", "gaussian", round)``."""

    method = PoisoningMethod.GAUSSIAN

    def __init__(self, threat: PoisoningThreat, sigma: float = 1.0) -> None:
        super().__init__(threat)
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = sigma

    @classmethod
    def build(
        cls, config: PoisoningConfig, threat: PoisoningThreat, setup: RunSetup
    ) -> PoisoningParts:
        return PoisoningParts(transform=cls(threat, config.sigma))

    def craft(
        self, own: torch.Tensor, reference: torch.Tensor, *, n: int, ctx: RoundContext
    ) -> torch.Tensor:
        g = ctx.torch_rng("poisoning", "gaussian")
        return gaussian_noise(own.shape[0], own.shape[1], self.sigma, g)


__all__ = ["GaussianNoise", "gaussian_noise"]
