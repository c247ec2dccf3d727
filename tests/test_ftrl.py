"""DP-FTRL (Kairouz et al. 2021) in runs: the ledger's epsilon against the tree's RDP
computed by hand from the run's cohorts, the model as theta_0 + lr x prefix sum / m, resume,
target-epsilon calibration, the budget plan, min_separation, and the combination rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import small_config

import privfl
from privfl.defenses.dp.central import ClipBound
from privfl.defenses.dp.ftrl import (
    FTRLPlan,
    MinSeparationSampler,
    TreeNoise,
    participation_matrix,
)
from privfl.errors import ConfigError
from privfl.federation import Federation
from privfl.ledger import SERVER, Ledger
from privfl.sampling import UniformSampler
from privfl.stages import AggregationResult, RoundContext
from privfl.update import ParamSpec


def _ftrl(**dp):
    return {"dp": {"mode": "ftrl", "noise_multiplier": 1.0, **dp}}


def _hand_squared_sensitivity(cohorts: list[list[int]], restart_every: int | None) -> float:
    """Max over users of sum over released nodes of (user's rounds under the node)^2, the
    nodes listed one by one: level h, index k covers leaves k 2^h + 1 .. (k + 1) 2^h of a tree,
    released when complete (Kairouz et al. 2021, Appendix D)."""
    rounds = len(cohorts)
    size = restart_every or rounds
    users = {c for cohort in cohorts for c in cohort}
    worst = 0.0
    for u in users:
        total = 0.0
        for start in range(0, rounds, size):
            leaves = min(size, rounds - start)
            h = 0
            while 2**h <= leaves:
                for k in range(leaves // 2**h):
                    lo, hi = start + k * 2**h + 1, start + (k + 1) * 2**h
                    n = sum(1 for r in range(lo, hi + 1) if u in cohorts[r - 1])
                    total += n * n
                h += 1
        worst = max(worst, total)
    return worst


def _direct_epsilon(sigma: float, d2: float, delta: float) -> float:
    # Gaussian RDP alpha D / (2 sigma^2) at Opacus' orders, Balle et al. 2020's conversion
    # (Opacus' get_privacy_spent), independent of the ledger's event bookkeeping.
    from opacus.accountants.analysis.rdp import get_privacy_spent

    from privfl.accounting import _orders

    orders = np.asarray(_orders(), dtype=float)
    eps, _ = get_privacy_spent(orders=orders, rdp=orders * d2 / (2 * sigma**2), delta=delta)
    return float(eps)


@pytest.mark.parametrize("restart_every", [None, 3])
def test_ledger_epsilon_is_the_trees_rdp_for_the_runs_cohorts(restart_every, tmp_path):
    extra = {} if restart_every is None else {"restart_every": restart_every}
    cfg = small_config(
        name="f", federation={"rounds": 7, "clients_per_round": 4}, defense=_ftrl(**extra)
    )
    res = privfl.run(cfg, out=tmp_path, progress=False)
    cohorts = [m["clients"] for m in res.metrics]
    d2 = _hand_squared_sensitivity(cohorts, restart_every)
    assert d2 > 7  # someone took part twice, so the tree costs more than one round each
    assert res.ledger.epsilon() == pytest.approx(_direct_epsilon(1.0, d2, 1e-5), rel=1e-9)
    # per round too: the events so far compose to the tree of the nodes released so far
    for r in (1, 4, 7):
        partial = _hand_squared_sensitivity(cohorts[:r], restart_every)
        want = _direct_epsilon(1.0, partial, 1e-5)
        assert res.ledger.epsilon(up_to_round=r) == pytest.approx(want, rel=1e-9)
    assert {e.sample_rate for e in res.ledger.events} == {1.0}
    assert res.ledger.units() == ["user"] and res.ledger.parties() == [SERVER]


def _ctx(r: int, dim: int, ledger: Ledger, sampled) -> RoundContext:
    spec = ParamSpec(("w",), ((dim,),), (0,), dim)
    return RoundContext(r, 0, torch.zeros(dim), spec, 10, np.asarray(sampled), ledger)


def _plan(rounds: int, sigma: float, users_per_round: int = 2) -> FTRLPlan:
    from privfl.defenses.dp.tree import worst_squared_sensitivity

    p = participation_matrix(UniformSampler(10, users_per_round, 0), rounds)
    return FTRLPlan(worst_squared_sensitivity(p), sigma, int(p.sum(0).max()), None)


@pytest.mark.parametrize("restart_every", [None, 2, 3])
def test_deltas_add_up_to_lr_times_prefix_sum_over_m_without_noise(restart_every):
    # sigma = 0: the round's delta is leaf_t / m, so FedAvg's x += delta gives
    # theta_0 + sum_{s <= t} leaf_s / m; the tree does not change the numbers.
    dim, m, rounds = 6, 4.0, 7
    ledger = Ledger(delta=1e-5)
    noise = TreeNoise(
        ClipBound(1.0),
        plan=_plan(rounds, 0.0),
        denominator=m,
        restart_every=restart_every,
        rounds=rounds,
        dim=dim,
    )
    gen = torch.Generator().manual_seed(0)
    for r in range(1, rounds + 1):
        mean = torch.randn(dim, generator=gen)
        out = noise.apply(AggregationResult(mean, weight_sum=3.0), _ctx(r, dim, ledger, [0, 1]))
        assert torch.allclose(out.delta, mean * 3.0 / m, atol=1e-6)


def test_restart_starts_the_prefix_from_the_current_model():
    # With noise, within a tree the sum of the deltas is the noisy prefix sum; after a
    # restart at round 3 the deltas of rounds 3..4 add up to the new tree's prefix alone.
    dim, rounds = 20_000, 4
    ledger = Ledger(delta=1e-5)
    noise = TreeNoise(
        ClipBound(1.0),
        plan=_plan(rounds, 1.0),
        denominator=1.0,
        restart_every=2,
        rounds=rounds,
        dim=dim,
    )
    deltas = [
        noise.apply(
            AggregationResult(torch.zeros(dim), weight_sum=0.0), _ctx(r, dim, ledger, [0, 1])
        ).delta.double()
        for r in range(1, rounds + 1)
    ]
    # round 3 is leaf 1 of tree 2: one node, variance 1; rounds 3 + 4 = node [3,4]: variance 1
    assert deltas[2].var().item() == pytest.approx(1.0, rel=0.05)
    assert (deltas[2] + deltas[3]).var().item() == pytest.approx(1.0, rel=0.05)
    # round 2's delta = [1,2] - [1]: two independent nodes, variance 2
    assert deltas[1].var().item() == pytest.approx(2.0, rel=0.05)


def test_budget_plan_equals_what_each_round_records(tmp_path):
    cfg = small_config(
        name="b", federation={"rounds": 6, "clients_per_round": 4}, defense=_ftrl(clip=0.5)
    )
    fed = Federation(cfg)
    plan = fed.stages.budget
    assert plan is not None
    for _ in range(6):
        r = fed.round + 1
        cohort = fed.sampler.sample(r)
        planned = plan.planned_events(r, cohort)
        assert plan.planned_events(r, cohort[:1]) == planned  # spent whoever takes part
        fed.run_round()
        assert planned == [e for e in fed.ledger.events if e.round == r]


def test_a_resumed_run_gives_the_uninterrupted_numbers(tmp_path):
    cfg = small_config(
        name="c",
        federation={"rounds": 5, "clients_per_round": 4},
        defense=_ftrl(noise_multiplier=0.8, clip=0.5, restart_every=4),
    )
    full = privfl.run(cfg, out=tmp_path / "a", progress=False)
    fed = Federation(cfg, folder=privfl.runfolder.RunFolder.create(tmp_path / "b", "c"))
    fed.folder.write_toml(privfl.runfolder.RunFile.CONFIG, cfg.to_toml_dict())
    for _ in range(3):  # stop inside the first tree, with nodes [1,2] and [3] in its state
        fed.run_round()
    resumed = privfl.resume(tmp_path / "b" / "c", progress=False)
    assert torch.equal(resumed.params, full.params)
    assert resumed.ledger.events == full.ledger.events


@pytest.mark.parametrize("target", [2.0, 8.0])
def test_target_epsilon_is_hit(target, tmp_path):
    dp = {"mode": "ftrl", "target_epsilon": target, "clip": 0.5}
    cfg = small_config(
        name="t", federation={"rounds": 6, "clients_per_round": 4}, defense={"dp": dp}
    )
    res = privfl.run(cfg, out=tmp_path, progress=False)
    eps = res.ledger.epsilon()
    assert target * 0.99 <= eps <= target
    # and it is the tree's epsilon for the run's cohorts at the calibrated sigma
    (sigma,) = {e.noise_multiplier for e in res.ledger.events}
    d2 = _hand_squared_sensitivity([m["clients"] for m in res.metrics], None)
    assert eps == pytest.approx(_direct_epsilon(sigma, d2, 1e-5), rel=1e-9)


def test_min_separation_sampler_keeps_cohort_size_and_spacing():
    inner = UniformSampler(20, 5, seed=3)
    s = MinSeparationSampler(inner, 3)
    p = participation_matrix(s, 30)
    assert (p.sum(axis=1) == 5).all()
    for col in p.T:
        rounds = np.flatnonzero(col)
        assert (np.diff(rounds) >= 3).all()
    # deterministic: a fresh sampler gives the same cohorts, and in any order of asking
    again = MinSeparationSampler(inner, 3)
    assert np.array_equal(again.sample(17), s.sample(17))
    # the inner cohorts are kept where allowed
    assert np.array_equal(s.sample(1), inner.sample(1))


def test_min_separation_in_a_run_is_kept_and_accounted(tmp_path):
    cfg = small_config(
        name="s4",
        data={"name": "digits", "partition": "iid", "clients": 12},
        federation={"rounds": 8, "clients_per_round": 3},
        defense=_ftrl(min_separation=4),
    )
    res = privfl.run(cfg, out=tmp_path, progress=False)
    cohorts = [m["clients"] for m in res.metrics]
    last: dict[int, int] = {}
    for r, cohort in enumerate(cohorts, 1):
        assert len(cohort) == 3
        for c in cohort:
            assert r - last.get(c, -100) >= 4
            last[c] = r
    d2 = _hand_squared_sensitivity(cohorts, None)
    assert res.ledger.epsilon() == pytest.approx(_direct_epsilon(1.0, d2, 1e-5), rel=1e-9)


def test_min_separation_needs_enough_clients():
    cfg = small_config(
        federation={"rounds": 2, "clients_per_round": 4}, defense=_ftrl(min_separation=3)
    )
    with pytest.raises(ConfigError, match="min_separation x clients_per_round = 12"):
        Federation(cfg)


@pytest.mark.parametrize(
    "section, words",
    [
        ({"federation": {"server_optimizer": "fedadam", "server_lr": 0.01}}, "server_optimizer"),
        ({"federation": {"server_optimizer": "fedavgm"}}, "server_optimizer"),
        ({"defense": {**_ftrl(), "robust": {"rule": "median"}}}, "robust"),
        ({"compression": {"method": "sign"}}, "majority vote"),
    ],
)
def test_combinations_refused(section, words):
    raw = {"defense": _ftrl(), **section}
    fed = raw.pop("federation", None)
    kwargs = {"federation": {"rounds": 1, **(fed or {})}, **raw}
    with pytest.raises(ConfigError, match=words):
        small_config(**kwargs)


def test_the_gdp_accountant_is_refused():
    cfg = small_config(federation={"rounds": 2}, defense=_ftrl(accountant="gdp"))
    with pytest.raises(ConfigError, match="accountant = 'gdp'"):
        Federation(cfg)


@pytest.mark.slow
def test_prv_calibration_hits_the_target_on_the_ledgers_events(tmp_path):
    dp = {"mode": "ftrl", "target_epsilon": 6.0, "accountant": "prv"}
    cfg = small_config(name="p", federation={"rounds": 5}, defense={"dp": dp})
    res = privfl.run(cfg, out=tmp_path, progress=False)
    assert 6.0 * 0.98 <= res.ledger.epsilon() <= 6.0


def test_ftrl_only_fields_are_refused_in_other_modes():
    with pytest.raises(ConfigError, match="applies only when mode = 'ftrl'"):
        small_config(defense={"dp": {"mode": "central", "noise_multiplier": 1, "restart_every": 2}})
    with pytest.raises(ConfigError, match="applies only when mode = 'ftrl'"):
        small_config(defense={"dp": {"mode": "local", "noise_multiplier": 1, "min_separation": 2}})


def test_ftrl_over_secure_aggregation_runs(tmp_path):
    cfg = small_config(
        name="sa",
        federation={"rounds": 2, "clients_per_round": 4},
        defense={**_ftrl(), "secagg": {}},
    )
    res = privfl.run(cfg, out=tmp_path, progress=False)
    assert len(res.metrics) == 2 and math.isfinite(res.ledger.epsilon())


def test_max_epsilon_stops_before_the_round_whose_nodes_would_pass_it(tmp_path):
    # The tree's epsilon after round r is that of one Gaussian of sensitivity sqrt(D_r) (D_r
    # the worst user's sum over the nodes released by round r, by hand from the config's
    # seeded cohorts): the run must stop before the first r past the cap.
    from privfl.plan import create_sampler

    base = {"name": "m", "federation": {"rounds": 10, "clients_per_round": 4}}
    sampler = create_sampler(small_config(**base, defense=_ftrl()))
    cohorts = [sampler.sample(r).tolist() for r in range(1, 11)]
    eps = [
        _direct_epsilon(3.0, _hand_squared_sensitivity(cohorts[:r], None), 1e-5)
        for r in range(1, 11)
    ]
    stop = next(r for r in range(5, 11) if eps[r - 1] > eps[r - 2])
    cap = (eps[stop - 2] + eps[stop - 1]) / 2
    cfg = small_config(**base, defense=_ftrl(noise_multiplier=3.0, max_epsilon=cap))
    res = privfl.run(cfg, out=tmp_path, progress=False)
    assert [m["clients"] for m in res.metrics] == cohorts[: stop - 1]
    assert res.budget_stop is not None and res.budget_stop.round == stop
    assert len(res.metrics) == stop - 1
    assert res.ledger.epsilon() <= cap
    assert res.ledger.epsilon() == pytest.approx(eps[stop - 2], rel=1e-9)


def test_secure_rng_draws_fresh_node_noise_and_seeded_noise_repeats():
    dim, rounds = 1000, 2

    def deltas(secure: bool) -> list[torch.Tensor]:
        noise = TreeNoise(
            ClipBound(1.0),
            plan=_plan(rounds, 1.0),
            denominator=1.0,
            restart_every=None,
            rounds=rounds,
            dim=dim,
            secure_rng=secure,
        )
        ledger = Ledger(delta=1e-5)
        zero = AggregationResult(torch.zeros(dim), weight_sum=0.0)
        return [noise.apply(zero, _ctx(r, dim, ledger, [0, 1])).delta for r in (1, 2)]

    assert all(torch.equal(a, b) for a, b in zip(deltas(False), deltas(False), strict=True))
    secure_a, secure_b = deltas(True), deltas(True)
    assert not torch.equal(secure_a[0], secure_b[0])
    # still one node of std sigma x clip at round 1, two at round 2 minus one shared
    assert secure_a[0].double().std().item() == pytest.approx(1.0, rel=0.1)
    assert secure_a[1].double().std().item() == pytest.approx(math.sqrt(2.0), rel=0.1)
