"""``[federation.heterogeneity]`` -> the stages of a round (called from
:func:`privfl.plan.build_stages`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl.client import LocalTraining
from privfl.heterogeneity.fednova import FedNova
from privfl.heterogeneity.trainer import DropStragglers, HeterogeneousTrainer
from privfl.pipeline import Contribution, Slot

if TYPE_CHECKING:
    from privfl.config import Config
    from privfl.pipeline import RunSetup


def heterogeneity_stages(config: Config, setup: RunSetup) -> Contribution:
    """The heterogeneous trainer (per-client steps and simulated time) in place of plain SGD,
    stragglers dropped in the ``STRAGGLERS`` slot (before any other client stage), and FedNova
    as the aggregator when asked."""
    het = config.federation.heterogeneity
    if het is None:
        return Contribution()
    trainer = HeterogeneousTrainer(LocalTraining.from_config(config), het, config.seed)
    drop = () if het.deadline is None else ((Slot.STRAGGLERS, DropStragglers(het.deadline)),)
    return Contribution(
        trainer=trainer,
        client_transforms=drop,
        aggregator=FedNova(config.federation.momentum) if het.fednova else None,
    )


__all__ = ["heterogeneity_stages"]
