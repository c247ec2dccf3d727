"""``[federation.heterogeneity]`` -> the stages of a round (called from
:func:`privfl.plan.build_stages`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl.client import SGDTrainer
from privfl.errors import ConfigError
from privfl.heterogeneity.fednova import FedNova
from privfl.heterogeneity.trainer import DropStragglers, HeterogeneousTrainer

if TYPE_CHECKING:
    from privfl.config import Config
    from privfl.pipeline import RunSetup
    from privfl.plan import Stages


def add_heterogeneity(stages: Stages, config: Config, setup: RunSetup) -> None:
    """Wrap the trainer (per-client steps and simulated time), drop stragglers before any
    other client stage, and aggregate with FedNova when asked."""
    het = config.federation.heterogeneity
    if het is None:
        return
    if type(stages.trainer) is not SGDTrainer:
        raise ConfigError(
            "federation.heterogeneity needs the plain SGD client trainer; "
            f"{type(stages.trainer).__name__} is configured (e.g. by defense.dp.mode = 'sample')"
        )
    stages.trainer = HeterogeneousTrainer(stages.trainer.config, het, config.seed)
    if het.deadline is not None:
        stages.client_transforms.insert(0, DropStragglers(het.deadline))
    if het.fednova:
        stages.aggregator = FedNova(config.federation.momentum)


__all__ = ["add_heterogeneity"]
