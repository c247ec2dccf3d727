"""Label flipping: malicious clients train on their data with every label ``l`` replaced by
``L - 1 - l`` (Fang, Cao, Jia and Gong, USENIX Security 2020, Section 5.1, for ``L``
classes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from privfl.attacks.poisoning.base import DataPoisoning, PoisoningParts
from privfl.attacks.poisoning.config import PoisoningConfig, PoisoningMethod
from privfl.attacks.poisoning.threat import PoisoningThreat

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


def flip_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``L - 1 - y`` for labels ``y`` (int64 ``(k,)``) in ``[0, L)``; a new tensor."""
    return (num_classes - 1) - y


class LabelFlipping(DataPoisoning):
    """Data poisoning by :func:`flip_labels`; the examples are unchanged."""

    method = PoisoningMethod.LABEL_FLIP

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"label flipping needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes

    @classmethod
    def build(
        cls, config: PoisoningConfig, threat: PoisoningThreat, setup: RunSetup
    ) -> PoisoningParts:
        return PoisoningParts(data=cls(setup.data.bundle.num_classes))

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, flip_labels(y, self.num_classes)


__all__ = ["LabelFlipping", "flip_labels"]
