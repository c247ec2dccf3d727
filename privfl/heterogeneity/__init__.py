"""Heterogeneous clients: unequal local steps and device speeds, a round deadline that drops
stragglers, and FedNova's normalized averaging (Wang et al. 2020)."""

from privfl.heterogeneity.builder import heterogeneity_stages
from privfl.heterogeneity.config import HeterogeneityConfig, StepsDistribution, parse_steps
from privfl.heterogeneity.fednova import FedNova, a_norm, fednova
from privfl.heterogeneity.trainer import DropStragglers, HeterogeneousTrainer

__all__ = [
    "DropStragglers",
    "FedNova",
    "HeterogeneityConfig",
    "HeterogeneousTrainer",
    "StepsDistribution",
    "a_norm",
    "heterogeneity_stages",
    "fednova",
    "parse_steps",
]
