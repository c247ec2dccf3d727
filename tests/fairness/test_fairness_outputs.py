"""Where the fairness figures end up: plots/client_accuracy.png and the suites' columns."""

from __future__ import annotations

import pytest

import privfl
from privfl.plots import client_accuracy_figure
from privfl.suites.cell import Metric, summarize


def test_client_accuracy_plot_and_suite_columns_follow_federated_evaluation(make_config, tmp_path):
    with_fed = make_config(
        name="fed",
        data={"clients": 10},
        federation={"rounds": 2, "clients_per_round": 4},
        evaluation={"federated_every": 1},
    )
    result = privfl.run(with_fed, out=tmp_path, progress=False)
    assert (tmp_path / "fed" / "plots" / "client_accuracy.png").stat().st_size > 0
    row = result.metrics[-1]
    got = summarize(result)
    for m in (
        Metric.FED_ACCURACY_MEAN,
        Metric.FED_ACCURACY_STD,
        Metric.FED_ACCURACY_WORST10,
        Metric.FED_ACCURACY_JAIN,
    ):
        assert got[m.value] == pytest.approx(row[m.value])

    plain = privfl.run(
        make_config(name="plain", federation={"rounds": 1}), out=tmp_path, progress=False
    )
    assert not (tmp_path / "plain" / "plots" / "client_accuracy.png").exists()
    assert summarize(plain)[Metric.FED_ACCURACY_JAIN.value] is None
    assert client_accuracy_figure(plain.metrics) is None
