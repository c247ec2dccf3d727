"""The robust rules by name, and the factory the plan calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl.defenses.robust.base import RobustAggregator
from privfl.defenses.robust.bulyan import Bulyan
from privfl.defenses.robust.centered_clip import CenteredClip
from privfl.defenses.robust.config import RobustConfig, RobustRule
from privfl.defenses.robust.fltrust import FLTrust
from privfl.defenses.robust.krum import Krum, MultiKrum
from privfl.defenses.robust.median import Median
from privfl.defenses.robust.norm_bound import NormBound
from privfl.defenses.robust.trimmed_mean import TrimmedMean
from privfl.registry import Registry

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


#: Every rule of ``[defense.robust] rule``; the key is each class's ``rule`` attribute.
ROBUST_AGGREGATORS: Registry[RobustRule, type[RobustAggregator]] = Registry.by_attribute(
    "defense.robust rule",
    "rule",
    (Krum, MultiKrum, Median, TrimmedMean, Bulyan, NormBound, CenteredClip, FLTrust),
)


def create_robust_aggregator(config: RobustConfig, setup: RunSetup) -> RobustAggregator:
    """The aggregator of ``[defense.robust]`` for the run ``setup``."""
    return ROBUST_AGGREGATORS[RobustRule(config.rule)].from_config(config, setup)


__all__ = ["ROBUST_AGGREGATORS", "create_robust_aggregator"]
