"""How well a rule's exclusions find the true attackers of each round."""

from __future__ import annotations

from typing import Any

import numpy as np

from privfl.attacks.poisoning.threat import PoisoningThreat
from privfl.stages import RoundContext, Scorer


def detection_scores(
    attackers: np.ndarray, excluded: np.ndarray
) -> tuple[float | None, float | None]:
    """Precision ``|A & E| / |E|`` and recall ``|A & E| / |A|`` of the excluded clients ``E``
    against the attackers ``A`` of a round; None where the denominator is 0."""
    a, e = set(np.asarray(attackers).tolist()), set(np.asarray(excluded).tolist())
    hits = len(a & e)
    return (hits / len(e) if e else None, hits / len(a) if a else None)


class DetectionScorer(Scorer):
    """Adds ``attackers`` (the malicious clients among the round's aggregated updates that
    attacked this round) and, when the aggregator flags whole clients,
    ``detection_precision`` and ``detection_recall`` of its ``excluded`` list."""

    def __init__(self, threat: PoisoningThreat, flags_clients: bool) -> None:
        self.threat, self.flags_clients = threat, flags_clients

    def score(self, record: dict[str, Any], ctx: RoundContext) -> dict[str, Any]:
        arrived = np.setdiff1d(
            np.asarray(record["clients"], dtype=np.int64),
            np.asarray(record["dropped"], dtype=np.int64),
        )
        attackers = self.threat.attackers(arrived, ctx.round)
        out: dict[str, Any] = {"attackers": attackers.tolist()}
        if self.flags_clients:
            precision, recall = detection_scores(attackers, np.asarray(record.get("excluded", [])))
            out["detection_precision"], out["detection_recall"] = precision, recall
        return out


__all__ = ["DetectionScorer", "detection_scores"]
