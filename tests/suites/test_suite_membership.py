"""A cell's membership figures: the AUC and TPR at 0.1% FPR of its best membership record."""

from __future__ import annotations

from types import SimpleNamespace

from privfl.ledger import Ledger
from privfl.suites.cell import Metric, summarize


def _result(attacks):
    return SimpleNamespace(
        metrics=[{"round": 1, "test_accuracy": 0.5}],
        attacks=attacks,
        timings=[{"seconds": 0.1}],
        ledger=Ledger(),
        run_dir=None,
    )


def test_the_best_membership_record_is_the_cells():
    records = [
        {"attack": "dlg", "psnr": 30.0},  # not a membership record
        {"attack": "membership-loss", "auc": 0.6, "tpr_at_fpr_0.001": 0.01},
        {"attack": "membership-lira", "auc": 0.8, "tpr_at_fpr_0.001": 0.2},
    ]
    out = summarize(_result(records))
    assert out[Metric.MEMBERSHIP_AUC.value] == 0.8
    assert out[Metric.MEMBERSHIP_TPR.value] == 0.2
    assert out[Metric.PSNR.value] == 30.0


def test_no_membership_record_no_figure():
    out = summarize(_result([{"attack": "dlg", "psnr": 30.0}]))
    assert out[Metric.MEMBERSHIP_AUC.value] is None
    assert out[Metric.MEMBERSHIP_TPR.value] is None
