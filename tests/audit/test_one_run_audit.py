"""The one-run audit in a run: canaries inserted with probability 1/2, the final model's
guesses, a lower bound that stays below the accountant's epsilon and that catches a model
trained without noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import privfl
from privfl.audit.config import AuditConfig
from privfl.audit.one_run import guess_and_bound, insert_canaries
from privfl.config import DataConfig
from privfl.data.federated import build_federated_data


def test_canaries_leave_the_test_split_and_join_clients_with_probability_half():
    data = build_federated_data(DataConfig(name="digits", clients=10), seed=0)
    cfg = AuditConfig(method="one_run", canaries=200)
    new, canaries = insert_canaries(data, cfg, seed=3)
    inserted = int(canaries.included.sum())
    assert 70 < inserted < 130  # Binomial(200, 1/2): 4 std
    assert len(new.bundle.train.y) == len(data.bundle.train.y) + inserted
    assert len(new.bundle.test.y) == len(data.bundle.test.y) - 200
    held = np.concatenate(new.partition.indices)
    assert len(held) == len(np.concatenate(data.partition.indices)) + inserted
    extra = np.setdiff1d(held, np.concatenate(data.partition.indices))
    torch.testing.assert_close(new.bundle.train.y[extra], canaries.y[canaries.included])
    # mislabelled: never the true label of the test example they copy
    true = data.bundle.test.y
    x_rows = {
        tuple(r.tolist()): int(y) for r, y in zip(data.bundle.test.x.flatten(1), true, strict=True)
    }
    assert all(
        x_rows[tuple(r.tolist())] != int(y)
        for r, y in zip(canaries.x.flatten(1), canaries.y, strict=True)
    )


def test_guesses_count_what_they_should():
    included = np.array([True] * 5 + [False] * 5)
    perfect = guess_and_bound(
        included.astype(float), included, guesses=10, delta=0.0, confidence=0.95
    )
    assert perfect["correct"] == 10 and perfect["guesses"] == 10
    wrong = guess_and_bound(
        -included.astype(float), included, guesses=4, delta=0.0, confidence=0.95
    )
    assert wrong["correct"] == 0 and wrong["epsilon_lower_bound"] == 0.0


def _config(name: str, **dp) -> privfl.Config:
    """Two clients, ten local epochs a round for six rounds, 400 canaries; ``dp`` (if any) the
    defense.dp section with mode sample (tests/test_device_workloads.py runs it on the GPU)."""
    defense = {"dp": {"mode": "sample", **dp}} if dp else {}
    return privfl.Config(
        name=name,
        data={"name": "digits", "partition": "iid", "clients": 2, "test_fraction": 0.8},
        model={"name": "mlp", "hidden": [256]},
        federation={
            "rounds": 6,
            "clients_per_round": 2,
            "local_epochs": 10,
            "batch_size": 8,
            "lr": 0.1,
        },
        defense=defense,
        audit={"method": "one_run", "canaries": 400, "guesses": 100},
    )


def _run(tmp_path, name, **dp):
    privfl.run(_config(name, **dp), out=tmp_path, progress=False)
    return json.loads((tmp_path / name / "audit.json").read_text())


def test_no_noise_is_caught_and_noise_keeps_the_bound_below_the_accountant(tmp_path):
    open_ = _run(tmp_path, "open")
    # Mislabelled canaries are memorised without noise: most guesses right, a bound well above 0
    assert open_["correct"] >= 80 and open_["epsilon_lower_bound"] > 1.0
    assert open_["epsilon_bound"] is None
    noisy = _run(tmp_path, "noisy", noise_multiplier=4.0)
    assert noisy["epsilon_lower_bound"] <= noisy["epsilon_bound"]
    assert noisy["epsilon_lower_bound"] < open_["epsilon_lower_bound"] / 2
    report = (tmp_path / "noisy" / "report.md").read_text()
    assert "Empirical audit (one run)" in report and "empirical lower bound" in report


def test_one_run_is_refused_with_too_few_test_examples():
    cfg = privfl.Config(name="x", audit={"method": "one_run", "canaries": 1000})
    with pytest.raises(privfl.errors.ConfigError, match="audit.canaries = 1000"):
        privfl.run(cfg, out=None, progress=False)
