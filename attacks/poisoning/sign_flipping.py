"""Sign flipping: a malicious client sends its update negated and scaled."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from privfl.attacks.poisoning.base import PoisoningParts, UpdatePoisoning
from privfl.attacks.poisoning.config import PoisoningConfig, PoisoningMethod
from privfl.attacks.poisoning.threat import PoisoningThreat
from privfl.stages import RoundContext

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def sign_flipping(own: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``-s * x``: each attacker's honest update ``x`` reversed and scaled by ``s`` (the
    sign-flipping attack of Li et al., AAAI 2019 "RSA", and Allen-Zhu et al., ICLR 2021;
    ``s = 1`` is plain negation).

    Args:
        own: float32 ``(m, d)``, the attackers' honest updates.
        scale: ``s > 0``.
    Returns:
        float32 ``(m, d)``.
    """
    return own * (-float(scale))


class SignFlipping(UpdatePoisoning):
    """Malicious clients send ``-scale`` times their honest update (needs no knowledge of
    the benign updates)."""

    method = PoisoningMethod.SIGN_FLIP

    def __init__(self, threat: PoisoningThreat, scale: float = 1.0) -> None:
        super().__init__(threat)
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = scale

    @classmethod
    def build(
        cls, config: PoisoningConfig, threat: PoisoningThreat, setup: RunSetup
    ) -> PoisoningParts:
        return PoisoningParts(transform=cls(threat, 1.0 if config.scale is None else config.scale))

    def craft(
        self, own: torch.Tensor, reference: torch.Tensor, *, n: int, ctx: RoundContext
    ) -> torch.Tensor:
        return sign_flipping(own, self.scale)


__all__ = ["SignFlipping", "sign_flipping"]
