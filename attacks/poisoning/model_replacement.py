"""Model replacement (Bagdasaryan, Veit, Hua, Estrin and Shmatikov, AISTATS 2020, "How To
Backdoor Federated Learning"): attackers train on backdoored data and scale their update so
that it replaces the global model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from privfl.attacks.poisoning.backdoor import AttackSuccessRate, PixelPatternBackdoor
from privfl.attacks.poisoning.base import PoisoningParts, UpdatePoisoning
from privfl.attacks.poisoning.config import PoisoningConfig, PoisoningMethod
from privfl.attacks.poisoning.text_backdoor import text_backdoor_parts
from privfl.attacks.poisoning.threat import PoisoningThreat
from privfl.errors import ConfigError
from privfl.stages import RoundContext

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def replacement_boost(n: int, attackers: int, server_lr: float) -> float:
    """``gamma = n / (eta * m)``: with ``m`` attackers among ``n`` equally weighted updates and
    server learning rate ``eta``, each attacker's ``gamma (X_i - G)`` makes
    ``G' = G + eta/n sum_j (L_j - G)`` approximately the attackers' mean model ``X`` (the
    paper's Eq. (3), ``gamma = n / eta``, shared among ``m`` colluding attackers)."""
    if n < 1 or attackers < 1 or server_lr <= 0:
        raise ValueError(f"need n, attackers >= 1 and server_lr > 0, got {n}, {attackers}")
    return n / (server_lr * attackers)


class ModelReplacement(UpdatePoisoning):
    """Scales each attacker's (backdoor-trained) update by ``gamma``: a fixed ``scale``, or
    :func:`replacement_boost` of the round (the attackers know ``n``, ``eta`` and how many of
    them take part)."""

    method = PoisoningMethod.MODEL_REPLACEMENT

    def __init__(
        self, threat: PoisoningThreat, *, server_lr: float, scale: float | None = None
    ) -> None:
        super().__init__(threat)
        self.server_lr, self.scale = server_lr, scale

    @classmethod
    def build(
        cls, config: PoisoningConfig, threat: PoisoningThreat, setup: RunSetup
    ) -> PoisoningParts:
        bundle = setup.data.bundle
        transform = cls(threat, server_lr=setup.config.federation.server_lr, scale=config.scale)
        if bundle.train.x.dtype == torch.int64:  # text: the word-prediction backdoor
            return text_backdoor_parts(config, setup, transform)
        for key in ("trigger", "target"):
            if getattr(config, key) is not None:
                raise ConfigError(
                    f"attack.poisoning.{key} is the text backdoor's; {bundle.name} is not text "
                    "(use target_label and trigger_size for the pixel pattern)"
                )
        if config.target_label >= bundle.num_classes:
            raise ConfigError(
                f"attack.poisoning.target_label = {config.target_label} is not a label of "
                f"{bundle.name} (0 .. {bundle.num_classes - 1})"
            )
        shape = bundle.input_shape
        side = min(shape[-2:]) if len(shape) >= 2 else int(shape[-1] ** 0.5)
        if config.trigger_size > side:
            raise ConfigError(
                f"attack.poisoning.trigger_size = {config.trigger_size} exceeds the input "
                f"({'x'.join(map(str, shape))})"
            )
        value = float(bundle.train.x.max())
        trigger = dict(target=config.target_label, size=config.trigger_size, value=value)
        return PoisoningParts(
            transform=transform,
            data=PixelPatternBackdoor(**trigger, poison_fraction=config.poison_fraction),
            evaluators=(
                AttackSuccessRate(
                    bundle.test.x,
                    bundle.test.y,
                    **trigger,
                    batch_size=setup.config.evaluation.batch_size,
                ),
            ),
        )

    def craft(
        self, own: torch.Tensor, reference: torch.Tensor, *, n: int, ctx: RoundContext
    ) -> torch.Tensor:
        gamma = self.scale
        if gamma is None:
            gamma = replacement_boost(n, own.shape[0], self.server_lr)
        return own * float(gamma)


__all__ = ["ModelReplacement", "replacement_boost"]
