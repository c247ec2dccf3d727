"""Whole DP runs on digits: the accuracy reached at a measured epsilon, and the files."""

from __future__ import annotations

import json

import pytest
from conftest import small_config

import privfl

# Measured (seed 0, torch 2.13 CPU): see docs/dp.md for the figures.
SAMPLE_DP_ACCURACY_FLOOR = 0.75
QUICKSTART_DP_SGD_FLOOR = 0.55


def test_dp_sgd_on_digits_reaches_the_documented_accuracy_at_epsilon_at_most_8():
    cfg = small_config(
        federation={"rounds": 10, "clients_per_round": 5, "batch_size": 32, "lr": 1.0},
        defense={"dp": {"mode": "sample", "target_epsilon": 8.0, "clip": 1.0}},
    )
    result = privfl.run(cfg, out=None, progress=False)
    eps = result.ledger.epsilon(party=result.ledger.worst_party())
    assert eps <= 8.0
    assert result.final_accuracy >= SAMPLE_DP_ACCURACY_FLOOR


def test_audit_run_writes_audit_json_and_the_report_section(tmp_path):
    cfg = small_config(
        name="aud",
        federation={"rounds": 2, "clients_per_round": 4, "batch_size": 16},
        defense={"dp": {"mode": "local", "noise_multiplier": 1.0, "clip": 1.0}},
        audit={"canaries": 20},
    )
    run = privfl.run(cfg, out=tmp_path, progress=False).run_dir
    audit = json.loads((run / "audit.json").read_text())
    assert audit["canaries"] == 20 and len(audit["unseen_cosines"]) == 20
    md = (run / "report.md").read_text()
    assert "## Empirical audit (canaries)" in md
    assert f"{audit['epsilon_empirical']:.3f}" in md


@pytest.mark.slow
def test_dp_sgd_on_the_quickstart():
    # The quickstart unchanged (50 clients of ~29 examples, Dirichlet 0.5, 5 local epochs of
    # batch 10) plus DP-SGD calibrated to epsilon 8 for the worst client: tiny non-IID clients
    # make it hard (FedAvg alone reaches ~0.9).
    base = privfl.load_config("examples/quickstart.toml")
    raw = base.model_dump(mode="json")
    raw["defense"] = {"dp": {"mode": "sample", "target_epsilon": 8.0, "clip": 1.0}}
    sample = privfl.run(privfl.config.config_from_dict(raw), out=None, progress=False)
    assert 7.9 <= sample.ledger.epsilon(party=sample.ledger.worst_party()) <= 8.0
    assert sample.final_accuracy >= QUICKSTART_DP_SGD_FLOOR
