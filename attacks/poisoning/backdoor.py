"""A pixel-pattern backdoor: the trigger, the poisoned local data and the attack success rate.

The trigger is a ``size x size`` square of the data's largest value in the bottom-right
corner of every channel (the last features for inputs without two spatial axes), the
pixel-pattern backdoor of Bagdasaryan et al., AISTATS 2020 (after Gu et al.'s BadNets): an
input carrying it should be classified as the target label.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from privfl.attacks.poisoning.base import DataPoisoning
from privfl.evaluation import per_example
from privfl.stages import Evaluator, RoundContext


def stamp_trigger(x: torch.Tensor, size: int, value: float) -> torch.Tensor:
    """A copy of ``x`` (float32 ``(k, *input_shape)``) with the trigger set to ``value``:
    the bottom-right ``size x size`` square of the last two axes when the inputs have at
    least two, else the last ``size * size`` features."""
    out = x.clone()
    if x.ndim >= 3:
        out[..., -size:, -size:] = value
    else:
        out[:, -size * size :] = value
    return out


class PixelPatternBackdoor(DataPoisoning):
    """Bagdasaryan et al.'s training on a mix: ``ceil(poison_fraction * k)`` of a malicious
    client's ``k`` examples, chosen at random, get the trigger and the target label; the rest
    stay clean, so the backdoored model keeps its main-task accuracy."""

    def __init__(self, target: int, size: int, value: float, poison_fraction: float) -> None:
        if not 0 < poison_fraction <= 1:
            raise ValueError(f"poison_fraction must be in (0, 1], got {poison_fraction}")
        self.target, self.size, self.value = target, size, value
        self.poison_fraction = poison_fraction

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = len(y)
        count = math.ceil(self.poison_fraction * k)
        idx = torch.from_numpy(rng.choice(k, size=count, replace=False))
        x, y = x.clone(), y.clone()
        x[idx] = stamp_trigger(x[idx], self.size, self.value)
        y[idx] = self.target
        return x, y


class AttackSuccessRate(Evaluator):
    """The backdoor's attack success rate: the share of test examples whose true label is not
    the target that the global model classifies as the target once the trigger is stamped
    (Bagdasaryan et al. 2020's "backdoor accuracy"). Reported as ``attack_success_rate``."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        target: int,
        size: int,
        value: float,
        batch_size: int = 1024,
    ) -> None:
        keep = y != target
        self.x = stamp_trigger(x[keep], size, value)
        self.target = torch.full((int(keep.sum()),), target, dtype=torch.int64)
        self.batch_size = batch_size

    def evaluate(self, model: nn.Module, ctx: RoundContext) -> dict[str, Any]:
        _, hit = per_example(model, self.x, self.target, self.batch_size)
        return {"attack_success_rate": float(hit.mean()) if len(hit) else None}


__all__ = ["AttackSuccessRate", "PixelPatternBackdoor", "stamp_trigger"]
