"""What the robust aggregators share: a registry key, whether they flag clients, the cohort
check at aggregation time, and how they are built from the config."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar, Self

import numpy as np

from privfl.defenses.robust.config import RobustConfig, RobustRule, min_cohort
from privfl.errors import AggregationError
from privfl.stages import Aggregator

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup


class RobustAggregator(Aggregator):
    """A thin adapter from a pure rule on the ``(n, d)`` update matrix to an
    :class:`~privfl.stages.Aggregator`.

    Class attributes:
        rule: the ``[defense.robust] rule`` name (the registry key lives only here).
        flags_clients: True when the rule leaves whole clients out (Krum, Multi-Krum, Bulyan,
            FLTrust); their ``AggregationResult.excluded`` is then scored against the true
            attackers (detection precision and recall). Coordinate-wise rules and clipping
            rules leave no client out.
    """

    rule: ClassVar[RobustRule]
    flags_clients: ClassVar[bool] = False
    is_weighted_mean = False

    @classmethod
    @abstractmethod
    def from_config(cls, config: RobustConfig, setup: RunSetup) -> Self:
        """The aggregator ``config`` describes, for the run ``setup``."""

    @staticmethod
    def check_cohort(n: int, f: int, rule: RobustRule) -> None:
        """Raise :class:`AggregationError` when ``n`` updates are too few for ``f``."""
        need = min_cohort(rule, f)
        if n < need:
            raise AggregationError(
                f"{rule.value} with f = {f} needs at least {need} updates, the round delivered "
                f"{n} (lower defense.robust.f or raise federation.clients_per_round)"
            )


def excluded_ids(client_ids: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Sorted int64 ids of the clients whose row index is not in ``kept``."""
    mask = np.ones(len(client_ids), dtype=bool)
    mask[np.asarray(kept, dtype=np.int64)] = False
    return np.sort(client_ids[mask]).astype(np.int64)


__all__ = ["RobustAggregator", "excluded_ids"]
