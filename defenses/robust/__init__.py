"""Robust aggregation: rules over the ``(n, d)`` matrix of a round's updates.

Each rule is a pure function on the matrix; its class is a thin
:class:`~privfl.stages.Aggregator` adapter built from ``[defense.robust]``.
"""

from privfl.defenses.robust.base import RobustAggregator
from privfl.defenses.robust.bulyan import Bulyan, bulyan
from privfl.defenses.robust.centered_clip import CenteredClip, centered_clip
from privfl.defenses.robust.config import RobustConfig, RobustRule
from privfl.defenses.robust.distances import pairwise_sq_distances
from privfl.defenses.robust.fltrust import FLTrust, fltrust
from privfl.defenses.robust.krum import Krum, MultiKrum, krum, krum_scores, multi_krum
from privfl.defenses.robust.median import Median, coordinate_median
from privfl.defenses.robust.norm_bound import NormBound, norm_bound
from privfl.defenses.robust.registry import ROBUST_AGGREGATORS, create_robust_aggregator
from privfl.defenses.robust.trimmed_mean import TrimmedMean, trimmed_mean

__all__ = [
    "ROBUST_AGGREGATORS",
    "Bulyan",
    "CenteredClip",
    "FLTrust",
    "Krum",
    "Median",
    "MultiKrum",
    "NormBound",
    "RobustAggregator",
    "RobustConfig",
    "RobustRule",
    "TrimmedMean",
    "bulyan",
    "centered_clip",
    "coordinate_median",
    "create_robust_aggregator",
    "fltrust",
    "krum",
    "krum_scores",
    "multi_krum",
    "norm_bound",
    "pairwise_sq_distances",
    "trimmed_mean",
]
