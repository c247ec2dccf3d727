"""Per-client local steps, device speeds and the deadline in a real run; config errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_config

import privfl
from privfl.errors import ConfigError
from privfl.heterogeneity import parse_steps


def test_uniform_steps_cover_the_range_uniformly():
    dist = parse_steps("uniform(1, 20)")
    rng = np.random.default_rng(0)
    draws = np.array([dist.draw(rng) for _ in range(20000)])
    assert draws.min() == 1 and draws.max() == 20
    counts = np.bincount(draws, minlength=21)[1:]
    assert np.abs(counts / 20000 - 0.05).max() < 0.01
    assert parse_steps(7).draw(rng) == 7


@pytest.mark.parametrize("bad", ["uniform(0, 3)", "uniform(5, 2)", "normal(1, 2)", "3.5"])
def test_bad_step_distributions_are_config_errors(bad):
    with pytest.raises(ConfigError, match="local_steps"):
        small_config(federation={"heterogeneity": {"local_steps": bad}})


@pytest.mark.parametrize(
    "defense,match",
    [
        ({"secagg": {}}, "defense.secagg"),
        ({"robust": {"rule": "median"}}, "defense.robust"),
        ({"dp": {"mode": "central", "noise_multiplier": 1.0}}, "central"),
    ],
)
def test_fednova_with_a_rule_it_replaces_is_rejected(defense, match):
    with pytest.raises(ConfigError, match=match):
        small_config(federation={"heterogeneity": {"normalization": "fednova"}}, defense=defense)


SPEEDS, DEADLINE = [1.0, 4.0], 6.0


def _deadline_config() -> privfl.Config:
    """Three rounds of six clients, 1 to 20 local steps, every other client four times slower,
    a deadline, FedNova (tests/test_device_workloads.py runs it on the GPU)."""
    return small_config(
        federation={
            "rounds": 3,
            "clients_per_round": 6,
            "heterogeneity": {
                "local_steps": "uniform(1, 20)",
                "speeds": SPEEDS,
                "deadline": DEADLINE,
                "normalization": "fednova",
            },
        },
    )


def test_deadline_drops_exactly_the_clients_slower_than_it():
    speeds, deadline = SPEEDS, DEADLINE
    fed = privfl.Federation(_deadline_config())
    trainer = fed.stages.trainer
    dropped_any = False
    for _ in range(3):
        rec = fed.run_round()
        r = rec["round"]
        late = [
            c for c in rec["clients"] if trainer.steps_of(c, r) / speeds[c % len(speeds)] > deadline
        ]
        assert rec["dropped"] == sorted(late)
        assert rec["stragglers"] == len(late)
        assert rec["aggregated"] == len(rec["clients"]) - len(late)
        dropped_any |= bool(late)
        assert "fednova_tau_eff" in rec
    assert dropped_any


def test_clients_take_their_drawn_number_of_steps():
    cfg = small_config(federation={"heterogeneity": {"local_steps": "uniform(1, 20)"}})
    fed = privfl.Federation(cfg)
    ids = [0, 3, 7]
    updates = fed.engine.train(fed.params, ids, 1)
    got = [int(u.metrics["steps"]) for u in updates]
    want = [fed.stages.trainer.steps_of(c, 1) for c in ids]
    assert got == want and len(set(want)) > 1
