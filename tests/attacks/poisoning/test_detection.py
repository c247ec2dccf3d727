"""Detection precision and recall of a rule's exclusions against the true attackers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from privfl.attacks.poisoning import DetectionScorer, PoisoningThreat, detection_scores


@pytest.mark.parametrize(
    ("attackers", "excluded", "precision", "recall"),
    [
        ([1, 2], [1, 2], 1.0, 1.0),
        ([1, 2], [1, 3, 4, 5], 0.25, 0.5),
        ([1, 2], [], None, 0.0),
        ([], [3], 0.0, None),
        ([], [], None, None),
    ],
)
def test_scores_by_hand(attackers, excluded, precision, recall):
    assert detection_scores(np.array(attackers), np.array(excluded)) == (precision, recall)


def test_scorer_counts_only_arrived_attackers_from_the_start_round():
    threat = PoisoningThreat(np.array([1, 4, 7]), 10, start_round=2)
    record = {"clients": [1, 2, 4, 7], "dropped": [7], "excluded": [4, 2]}
    flags = DetectionScorer(threat, flags_clients=True)
    out = flags.score(record, SimpleNamespace(round=2))
    assert out == {"attackers": [1, 4], "detection_precision": 0.5, "detection_recall": 0.5}
    assert flags.score(record, SimpleNamespace(round=1))["attackers"] == []
    plain = DetectionScorer(threat, flags_clients=False).score(record, SimpleNamespace(round=2))
    assert plain == {"attackers": [1, 4]}
