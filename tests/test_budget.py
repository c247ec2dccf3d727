"""Stopping at a budget (``defense.dp.max_epsilon``): the stop round, per-client retirement,
resume, target_epsilon with max_epsilon, zero noise, and each mode's plan against what its
rounds record. Every expected number is computed independently here, from
:func:`privfl.accounting.epsilon_of` on the (sigma, q, steps) the config implies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import small_config
from typer.testing import CliRunner

import privfl
from privfl.accounting import epsilon_of
from privfl.cli import app
from privfl.errors import ConfigError
from privfl.federation import Federation
from privfl.ledger import client_party
from privfl.plan import create_sampler
from privfl.runfolder import RunFile, RunFolder

DELTA = 1e-5


def _central(max_epsilon: float, rounds: int = 30, checkpoint_every: int = 10, **dp):
    dp = {"mode": "central", "noise_multiplier": 2.0, "max_epsilon": max_epsilon, **dp}
    return small_config(
        name="budget",
        checkpoint_every=checkpoint_every,
        defense={"dp": dp},
        federation={"rounds": rounds, "local_steps": 1, "sampling": "poisson"},
        evaluation={"every": 100},
    )


def _first_round_over(sigma: float, q: float, cap: float, steps: int = 1) -> int:
    """The first round r at which r rounds of (sigma, q, steps) exceed ``cap``."""
    r = 1
    while epsilon_of(((sigma, q, steps * r),), delta=DELTA) <= cap:
        r += 1
    return r


def test_central_run_stops_before_the_first_round_past_the_budget(tmp_path):
    stop = _first_round_over(2.0, 4 / 10, 2.5)
    assert stop == 5  # eps after 4 rounds 2.35, after 5 rounds 2.59 (RDP)
    res = privfl.run(_central(2.5), out=tmp_path, progress=False)
    assert len(res.metrics) == stop - 1 and res.budget_stop is not None
    assert res.budget_stop.round == stop
    eps = json.loads((tmp_path / "budget" / "ledger.json").read_text())
    assert eps["epsilon"] <= 2.5 and eps["stopped"]["round"] == stop
    assert eps["epsilon"] == pytest.approx(epsilon_of(((2.0, 0.4, stop - 1),), delta=DELTA))
    # The last round run is evaluated (evaluation.every = 100) and checkpointed.
    assert res.metrics[-1]["test_accuracy"] is not None
    assert RunFolder(tmp_path / "budget").load_checkpoint()["round"] == stop - 1
    report = (tmp_path / "budget" / "report.md").read_text()
    assert f"{stop - 1} of 30 rounds ran; the run stopped before round {stop}" in report


def test_cli_exits_0_and_says_where_the_run_stopped(tmp_path):
    args = ["run", "examples/quickstart.toml", "--out", str(tmp_path), "-q"]
    for s in (
        "defense.dp.mode=central",
        "defense.dp.noise_multiplier=1.0",
        "defense.dp.max_epsilon=3.2",
        "federation.rounds=200",
        "federation.local_epochs=1",
        "federation.sampling=poisson",
    ):
        args += ["--set", s]
    stop = _first_round_over(1.0, 10 / 50, 3.2)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert f"stopped before round {stop}" in " ".join(r.output.split())
    rows = (tmp_path / "quickstart" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == stop - 1 < 200


def test_zero_noise_stops_before_round_one_without_a_crash(tmp_path):
    cfg = _central(3.0, noise_multiplier=0.0)
    res = privfl.run(cfg, out=tmp_path, progress=False)
    assert res.metrics == [] and res.budget_stop is not None and res.budget_stop.round == 1
    assert "noise_multiplier 0" in res.budget_stop.reason
    led = json.loads((tmp_path / "budget" / "ledger.json").read_text())
    assert led["events"] == [] and led["stopped"]["round"] == 1
    report = (tmp_path / "budget" / "report.md").read_text()
    assert "0 of 30 rounds ran; the run stopped before round 1" in report
    with pytest.raises(privfl.PrivflError, match="no round ran"):
        _ = res.final_accuracy


def _simulate_retirement(cfg: privfl.Config, cost) -> tuple[list[list[int]], int | None]:
    """Independent count: the clients that train in each round, and the round the run stops
    at (None: all rounds ran). ``cost(c, k)``: client c's epsilon after k participations."""
    cap, sampler = cfg.defense.dp.max_epsilon, create_sampler(cfg)
    k = dict.fromkeys(range(cfg.data.clients), 0)
    cohorts = []
    for r in range(1, cfg.federation.rounds + 1):
        cohort = [c for c in sampler.sample(r).tolist() if cost(c, k[c] + 1) <= cap]
        if not cohort and all(cost(c, k[c] + 1) > cap for c in k):
            return cohorts, r
        for c in cohort:
            k[c] += 1
        cohorts.append(cohort)
    return cohorts, None


def _check_retirement(res, cohorts, stop, cfg):
    assert [m["clients"] for m in res.metrics] == cohorts
    assert (res.budget_stop and res.budget_stop.round) == stop
    retired, seen = [], set()
    sampler = create_sampler(cfg)
    for m, cohort in zip(res.metrics, cohorts, strict=True):
        out = sorted(set(sampler.sample(m["round"]).tolist()) - set(cohort))
        assert m["budget_excluded"] == out
        assert m["budget_retired"] == [c for c in out if c not in seen]
        seen |= set(out)
        retired.append(len(m["budget_retired"]))
    eps = res.ledger.epsilons()
    assert max(eps.values()) <= cfg.defense.dp.max_epsilon
    return retired


def test_local_dp_retires_each_client_at_its_own_budget(tmp_path):
    # sigma 4, sensitivity 2: each release is a Gaussian of effective sigma 2 at q = 1;
    # 3 releases give epsilon 4.01, 4 give 4.73 > 4.5.
    cfg = small_config(
        name="local",
        defense={"dp": {"mode": "local", "noise_multiplier": 4.0, "max_epsilon": 4.5}},
        federation={"rounds": 30, "local_steps": 1},
    )
    cohorts, stop = _simulate_retirement(
        cfg, lambda c, k: epsilon_of(((2.0, 1.0, k),), delta=DELTA)
    )
    assert stop is not None and stop < 30
    res = privfl.run(cfg, out=tmp_path, progress=False)
    retired = _check_retirement(res, cohorts, stop, cfg)
    # At the stop every client has spent 3 releases, its most (4.01 <= 4.5 < 4.73).
    assert {p: res.ledger.history(p) for p in res.ledger.parties()} == {
        client_party(c): ((2.0, 1.0, 3),) for c in range(10)
    }
    report = (tmp_path / "local" / "report.md").read_text()
    assert f"{sum(retired)} of 10 clients retired" in report


def test_dpsgd_retires_each_client_at_its_own_budget_by_its_own_schedule(tmp_path):
    # Clients of 144 examples (q = 16/144) reach 3.49 after 4 rounds of 2 steps; clients of
    # 143 reach 3.51 > 3.5: they retire one participation earlier.
    cfg = small_config(
        name="sample",
        defense={"dp": {"mode": "sample", "noise_multiplier": 1.0, "max_epsilon": 3.5}},
        federation={"rounds": 30, "local_steps": 2},
        evaluation={"every": 100},
    )
    fed = Federation(cfg)
    sizes = fed.data.partition.sizes()
    assert set(sizes.tolist()) == {143, 144}

    def cost(c, k):
        return epsilon_of(((1.0, 16 / int(sizes[c]), 2 * k),), delta=DELTA)

    cohorts, stop = _simulate_retirement(cfg, cost)
    res = privfl.run(cfg, out=None, progress=False)
    _check_retirement(res, cohorts, stop, cfg)
    steps = {p: res.ledger.history(p)[0][2] for p in res.ledger.parties()}
    assert steps == {client_party(c): 8 if sizes[c] == 144 else 6 for c in range(10)}
    assert res.metrics[-1]["test_accuracy"] is not None  # the last round run is evaluated


@pytest.mark.parametrize("mode", ["central", "local", "sample"])
def test_each_modes_plan_is_what_its_rounds_record(mode):
    dp = {"mode": mode, "noise_multiplier": 1.5, "max_epsilon": 1e6}
    cfg = small_config(defense={"dp": dp}, federation={"rounds": 3, "local_steps": 1})
    fed = Federation(cfg)
    for r in (1, 2, 3):
        cohort = fed.plan_round(r).cohort
        planned = fed.stages.budget.planned_events(r, cohort)
        fed.run_round()
        assert planned == [e for e in fed.ledger.events if e.round == r]
        assert len(planned) == (1 if mode == "central" else len(cohort))


def test_resume_never_spends_past_the_budget_and_matches_the_uninterrupted_run(tmp_path):
    cfg = _central(2.5, checkpoint_every=2)
    full = privfl.run(cfg, out=tmp_path / "a", progress=False)
    stop = full.budget_stop.round
    fed = Federation(cfg, folder=RunFolder.create(tmp_path / "b", cfg.name))
    fed.folder.write_toml(RunFile.CONFIG, cfg.to_toml_dict())
    for _ in range(stop - 2):  # killed after round stop - 2, checkpointed at an even round
        fed.run_round()
    res = privfl.resume(tmp_path / "b" / "budget", progress=False)
    assert len(res.metrics) == stop - 1 and res.budget_stop.round == stop
    assert res.ledger.events == full.ledger.events
    assert res.ledger.epsilon() <= 2.5
    assert [m["test_accuracy"] for m in res.metrics] == [m["test_accuracy"] for m in full.metrics]
    again = privfl.resume(tmp_path / "b" / "budget", progress=False)  # a stopped run stays put
    assert len(again.metrics) == stop - 1 and again.ledger.events == full.ledger.events


@pytest.mark.slow
def test_target_epsilon_with_max_epsilon_calibrates_then_guards():
    # Within the budget the target's calibration runs every round; past it the guard stops.
    within = privfl.run(
        _central(3.0, rounds=6, noise_multiplier=None, target_epsilon=2.0), out=None, progress=False
    )
    assert within.budget_stop is None and len(within.metrics) == 6
    assert within.ledger.epsilon() <= 2.0
    over = privfl.run(
        _central(2.0, rounds=6, noise_multiplier=None, target_epsilon=4.0), out=None, progress=False
    )
    sigma = over.ledger.events[0].noise_multiplier
    stop = _first_round_over(sigma, 0.4, 2.0)
    assert stop <= 6 and over.budget_stop.round == stop and len(over.metrics) == stop - 1


def test_max_epsilon_without_a_plan_is_refused(monkeypatch):
    from dataclasses import replace

    from privfl.defenses.dp import builder
    from privfl.defenses.dp.config import DPMode

    central = builder._BUILDERS[DPMode.CENTRAL]
    monkeypatch.setitem(
        builder._BUILDERS, DPMode.CENTRAL, lambda *a: replace(central(*a), budget=None)
    )
    with pytest.raises(ConfigError, match="max_epsilon"):
        Federation(_central(2.0))


def test_plan_leaves_no_trace_on_a_run_without_budget():
    cfg = small_config(defense={"dp": {"mode": "central", "noise_multiplier": 1.0}})
    res = privfl.run(cfg, out=None, progress=False)
    assert len(res.metrics) == 3 and "budget_retired" not in res.metrics[-1]
    assert "max_epsilon" not in res.ledger.to_json()


def test_sampler_streams_are_untouched_by_planning():
    cfg = _central(1e6, rounds=4)
    res = privfl.run(cfg, out=None, progress=False)
    plain = privfl.run(_central(1e6, rounds=4).model_copy(), out=None, progress=False)
    assert [m["clients"] for m in res.metrics] == [m["clients"] for m in plain.metrics]
    assert np.array_equal(res.params.numpy(), plain.params.numpy())


def test_a_spawned_runner_says_it_is_done_at_its_budget_and_refuses_to_go_on():
    # What the membership attack's shadow federations loop on (RoundRunner.done).
    fed = Federation(_central(2.5))
    runner = fed._spawn(_central(2.5))
    while not runner.done:
        runner.run_round()
    assert runner.round == _first_round_over(2.0, 0.4, 2.5) - 1
    with pytest.raises(privfl.PrivflError, match="stopped before round"):
        runner.run_round()


@pytest.mark.slow
def test_membership_shadows_stop_at_their_budget_like_the_target(tmp_path):
    cfg = _central(2.5).model_copy(update={"name": "mia"})
    cfg = privfl.config.config_from_dict(
        {
            **cfg.to_toml_dict(),
            "attack": {
                "membership": {
                    "method": "lira",
                    "shadow_models": 2,
                    "candidates": 40,
                    "fixed_variance": True,
                }
            },
        }
    )
    res = privfl.run(cfg, out=tmp_path, progress=False)
    assert len(res.metrics) == _first_round_over(2.0, 0.4, 2.5) - 1
    lira = [a for a in res.attacks if str(a.get("attack", "")).startswith("membership-")]
    assert lira and all(a.get("auc") is not None for a in lira)


def test_a_failing_headline_accountant_falls_back_to_rdp_instead_of_crashing(monkeypatch):
    from privfl.ledger import Ledger

    real = Ledger.epsilons_with

    def gdp_fails(self, events, *, delta=None, accountant=None):
        if accountant is None:
            raise privfl.PrivflError("Opacus' gdp accountant cannot compute epsilon")
        return real(self, events, delta=delta, accountant=accountant)

    monkeypatch.setattr(Ledger, "epsilons_with", gdp_fails)
    res = privfl.run(_central(2.5, rounds=8), out=None, progress=False)
    assert res.budget_stop.round == _first_round_over(2.0, 0.4, 2.5)  # RDP's stop round
