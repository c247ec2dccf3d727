"""Every combination of config sections either runs or is refused at config time (issue 16,
item 11): central DP with a robust rule used to fail at round 1 with an internal message."""

from __future__ import annotations

import copy
import itertools
import logging
import subprocess
import sys
from typing import Any

import pytest
import torch

import privfl
from privfl.combinations import RULES, combination_problems, combination_table
from privfl.config import Config, config_from_dict
from privfl.errors import ConfigError

BASE: dict[str, Any] = {
    "name": "pair",
    "seed": 0,
    "data": {"name": "digits", "partition": "iid", "clients": 12},
    "model": {"name": "mlp", "hidden": [16]},
    "federation": {
        "rounds": 1,
        "clients_per_round": 8,
        "local_epochs": 1,
        "batch_size": 16,
        "lr": 0.1,
    },
}

# One or two variants of every section; the part before "-" names the section, and two
# variants of one section are never paired.
VARIANTS: dict[str, dict[str, Any]] = {
    "dp-sample": {"defense": {"dp": {"mode": "sample", "noise_multiplier": 1.0}}},
    "dp-central": {"defense": {"dp": {"mode": "central", "noise_multiplier": 1.0}}},
    "dp-local": {"defense": {"dp": {"mode": "local", "noise_multiplier": 1.0}}},
    "dp-ftrl": {"defense": {"dp": {"mode": "ftrl", "noise_multiplier": 1.0}}},
    "dp-distributed": {
        "defense": {"dp": {"mode": "distributed", "noise_multiplier": 1.0}, "secagg": {}}
    },
    "secagg": {"defense": {"secagg": {"dropout": 0.1}}},
    "he": {"defense": {"he": {}}},
    "robust-median": {"defense": {"robust": {"rule": "median"}}},
    "robust-fltrust": {"defense": {"robust": {"rule": "fltrust"}}},
    "poisoning-signflip": {"attack": {"poisoning": {"method": "sign_flip", "fraction": 0.25}}},
    "poisoning-alie": {"attack": {"poisoning": {"method": "alie", "fraction": 0.25}}},
    "inversion": {"attack": {"inversion": {"method": "idlg", "max_targets": 1, "iterations": 5}}},
    "membership": {
        "attack": {
            "membership": {
                "method": "lira",
                "candidates": 20,
                "shadow_models": 2,
                "fixed_variance": True,
            }
        }
    },
    "audit": {"audit": {"canaries": 4}},
    "audit-onerun": {"audit": {"method": "one_run", "canaries": 20}},
    "compression-topk": {"compression": {"method": "topk"}},
    "compression-randk": {"compression": {"method": "randk", "shared_seed": True}},
    "compression-qsgd": {"compression": {"method": "qsgd"}},
    "compression-sign": {"compression": {"method": "sign"}},
    "heterogeneity-steps": {"federation": {"heterogeneity": {"local_steps": "uniform(1, 3)"}}},
    "heterogeneity-fednova": {
        "federation": {
            "heterogeneity": {"local_steps": "uniform(1, 3)", "normalization": "fednova"}
        }
    },
    "heterogeneity-deadline": {
        "federation": {"heterogeneity": {"speeds": [1.0, 2.0], "deadline": 1.5}}
    },
    "engine-vectorized": {"federation": {"engine": "vectorized"}},
    "optimizer-fedadam": {"federation": {"server_optimizer": "fedadam"}},
    "optimizer-qffl": {"federation": {"server_optimizer": "qffl"}},
    "sampling-poisson": {"federation": {"sampling": "poisson"}},
    "fedprox": {"federation": {"prox_mu": 0.01}},
    "incentives": {"incentives": {"method": "loo", "validation_size": 50}},
    "topology-ring": {"federation": {"topology": "ring", "clients_per_round": 12}},
}

PAIRS = [
    (a, b) for a, b in itertools.combinations(VARIANTS, 2) if a.split("-")[0] != b.split("-")[0]
]


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _raw(*names: str) -> dict[str, Any]:
    raw = BASE
    for n in names:
        raw = _merge(raw, VARIANTS[n])
    return raw


# Pairs that must be refused, with the words their message must hold (an independent list:
# a rule dropped from privfl/combinations.py, or one that starts refusing a working pair,
# fails here).
REFUSED = {
    ("dp-sample", "audit"): "canary-client audit",
    ("dp-sample", "heterogeneity-steps"): "local_steps",
    ("dp-sample", "heterogeneity-fednova"): "local_steps",
    ("dp-sample", "heterogeneity-deadline"): "plain SGD trainer",
    ("dp-central", "robust-median"): "robust",
    ("dp-central", "robust-fltrust"): "robust",
    ("dp-central", "compression-sign"): "majority vote",
    ("dp-central", "heterogeneity-fednova"): "fednova",
    ("dp-ftrl", "robust-median"): "robust",
    ("dp-ftrl", "robust-fltrust"): "robust",
    ("dp-ftrl", "compression-sign"): "majority vote",
    ("dp-ftrl", "heterogeneity-fednova"): "fednova",
    ("dp-ftrl", "optimizer-fedadam"): "server_optimizer",
    ("dp-distributed", "he"): "choose one",
    ("dp-distributed", "incentives"): "only learns their sum",
    ("dp-distributed", "robust-median"): "plaintext",
    ("dp-distributed", "robust-fltrust"): "plaintext",
    ("dp-distributed", "compression-topk"): "supports differ",
    ("dp-distributed", "compression-randk"): "integer vectors",
    ("dp-distributed", "compression-qsgd"): "integer vectors",
    ("dp-distributed", "compression-sign"): "majority vote",
    ("dp-distributed", "heterogeneity-fednova"): "fednova",
    ("secagg", "he"): "choose one",
    ("secagg", "incentives"): "only learns their sum",
    ("he", "incentives"): "only learns their sum",
    ("secagg", "robust-median"): "plaintext",
    ("secagg", "robust-fltrust"): "plaintext",
    ("secagg", "compression-topk"): "supports differ",
    ("secagg", "compression-sign"): "majority vote",
    ("secagg", "heterogeneity-fednova"): "fednova",
    ("he", "robust-median"): "plaintext",
    ("he", "robust-fltrust"): "plaintext",
    ("he", "compression-topk"): "supports differ",
    ("he", "compression-randk"): "encrypts all d coordinates",
    ("he", "compression-sign"): "majority vote",
    ("he", "heterogeneity-fednova"): "fednova",
    ("robust-median", "compression-sign"): "majority vote",
    ("robust-median", "heterogeneity-fednova"): "fednova",
    ("robust-fltrust", "compression-sign"): "majority vote",
    ("robust-fltrust", "heterogeneity-fednova"): "fednova",
    ("compression-sign", "heterogeneity-fednova"): "majority vote",
    ("heterogeneity-fednova", "fedprox"): "not FedProx",
    ("audit", "heterogeneity-fednova"): "no local step count",
    **{  # no server under a peer-to-peer topology (privfl/decentralized)
        (a, "topology-ring"): "topology = 'ring'"
        for a in (
            "dp-central",
            "dp-ftrl",
            "dp-distributed",
            "secagg",
            "he",
            "robust-median",
            "robust-fltrust",
            "membership",
            "audit",
            "audit-onerun",
            "compression-topk",
            "compression-randk",
            "compression-qsgd",
            "compression-sign",
            "heterogeneity-steps",
            "heterogeneity-fednova",
            "heterogeneity-deadline",
            "optimizer-fedadam",
            "optimizer-qffl",
            "incentives",
        )
        if a in VARIANTS
    },
    **{
        (a, "optimizer-qffl"): "qffl"
        for a in (
            "dp-sample",
            "dp-central",
            "dp-local",
            "dp-ftrl",
            "dp-distributed",
            "secagg",
            "he",
            "robust-median",
            "robust-fltrust",
            "audit",
            "compression-sign",
            "heterogeneity-fednova",
        )
        if a in VARIANTS
    },
}


def test_every_pair_is_refused_exactly_when_listed():
    for a, b in PAIRS:
        expected = REFUSED.get((a, b))
        if expected is None:
            config_from_dict(_raw(a, b))  # accepted
        else:
            with pytest.raises(ConfigError, match=expected):
                config_from_dict(_raw(a, b))
    assert set(REFUSED) <= set(PAIRS)


@pytest.mark.parametrize("dropout", [0.0, 0.1, 0.3])
def test_a_secaggplus_degree_below_the_safe_one_is_refused_unless_allow_insecure(dropout):
    from privfl.defenses.secagg.graph import secaggplus_parameters

    n = 40
    safe = secaggplus_parameters(n, dropout=dropout, corruption=0.1).k
    raw = _merge(BASE, {"data": {"clients": 60}, "federation": {"clients_per_round": n}})

    def with_k(k: int, **extra: Any) -> dict[str, Any]:
        return _merge(raw, {"defense": {"secagg": {"neighbours": k, "dropout": dropout, **extra}}})

    if safe >= 4:
        below = safe - 1 if safe % 2 else safe - 2
        with pytest.raises(ConfigError, match=rf"smallest safe degree k = {safe}\b"):
            config_from_dict(with_k(below))
        config_from_dict(with_k(below, allow_insecure=True))
    if safe < n - 1:
        config_from_dict(with_k(safe))


def test_an_he_cohort_below_min_clients_is_refused():
    raw = _merge(BASE, {"federation": {"clients_per_round": 2}, "defense": {"he": {}}})
    with pytest.raises(ConfigError, match="min_clients = 3 exceeds"):
        config_from_dict(raw)
    config_from_dict(_merge(raw, {"defense": {"he": {"min_clients": 2}}}))


def test_central_dp_with_a_robust_rule_is_refused_before_any_round(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "privfl",
            "run",
            "examples/quickstart.toml",
            *("--set", "defense.dp.mode=central", "--set", "defense.dp.noise_multiplier=1.0"),
            *("--set", "defense.robust.rule=median", "--set", "name=cdr"),
            *("--out", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "defense.dp.mode = 'central'" in out.stderr and "defense.robust" in out.stderr
    assert not (tmp_path / "cdr").exists()


def test_every_rule_has_a_refused_pair_and_a_row_in_the_table():
    table = combination_table()
    # the degree rule needs a cohort larger than BASE's (see the test above)
    degree = _merge(
        BASE,
        {
            "data": {"clients": 60},
            "federation": {"clients_per_round": 40},
            "defense": {"secagg": {"neighbours": 2, "dropout": 0.3}},
        },
    )
    small_he = _merge(BASE, {"federation": {"clients_per_round": 2}, "defense": {"he": {}}})
    examples = [_unchecked(_raw(a, b)) for a, b in REFUSED]
    membership = _unchecked(_raw("membership"))
    natural = membership.model_copy(  # model_copy skips validation: digits has no writers
        update={"data": membership.data.model_copy(update={"partition": "natural"})}
    )
    examples += [_unchecked(degree), _unchecked(small_he), natural]
    examples.append(_unchecked(_merge(BASE, {"federation": {"topology": "ring"}})))  # 8 of 12
    for rule in RULES:
        assert any(rule.check(c) is not None for c in examples), rule.summary
        assert rule.summary in table


def test_problems_list_every_broken_rule():
    raw = _merge(_raw("he", "compression-sign"), VARIANTS["robust-median"])
    problems = combination_problems(_unchecked(raw))
    assert len(problems) == 2  # robust under HE; sign (one rule naming HE and robust)
    assert "defense.he, defense.robust" in problems[1]
    assert any("plaintext" in p for p in problems) and any("majority" in p for p in problems)


def _unchecked(raw: dict[str, Any]) -> Config:
    """``raw`` validated section by section, without the combination rules."""
    return Config.model_validate(raw, context={"combinations": False})


def _run_pair(a: str, b: str, tmp_path) -> None:
    cfg = config_from_dict({**_raw(a, b), "name": f"{a}__{b}"})
    logging.disable(logging.WARNING)
    try:
        res = privfl.run(cfg, out=tmp_path, progress=False)
    finally:
        logging.disable(logging.NOTSET)
    assert len(res.metrics) == 1 and res.metrics[0]["round"] == 1


# A few accepted pairs run in the default suite (the ones that once failed or cross the most
# code); every accepted pair runs in the slow suite.
QUICK_RUNS = [
    ("audit", "heterogeneity-steps"),
    ("dp-central", "secagg"),
    ("dp-local", "robust-median"),
    ("dp-central", "poisoning-alie"),
    ("secagg", "compression-randk"),
    ("robust-fltrust", "heterogeneity-deadline"),
    ("dp-sample", "membership"),
    ("dp-sample", "audit-onerun"),
]


@pytest.mark.parametrize("a, b", QUICK_RUNS)
def test_accepted_pairs_run(a, b, tmp_path):
    _run_pair(a, b, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("a, b", [p for p in PAIRS if p not in REFUSED and p not in QUICK_RUNS])
def test_every_accepted_pair_runs(a, b, tmp_path):
    _run_pair(a, b, tmp_path)


# Every section on both in-process engines: the vectorized engine must train the sequential
# engine's model under every defense, attack and option, not only under plain FedAvg (its
# factored updates once reached FedAvg's mean past DP-FedAvg's clipping unnoticed, because the
# engines were compared without defenses).
CNN = {"name": "cnn", "channels": [4], "hidden": [8], "norm": "none"}
ENGINE_VARIANTS = [
    (v, model)
    for model in ("mlp", "cnn")  # the batched MLP kernel (factored updates) and the CNN kernel
    for v in VARIANTS
    if v not in ("engine-vectorized", "topology-ring")
    and not (model == "cnn" and v in ("membership", "inversion"))  # observers only
]


@pytest.mark.parametrize(("variant", "model"), ENGINE_VARIANTS)
def test_every_section_trains_the_same_model_on_both_engines(variant, model):
    from privfl.federation import Federation

    raw = _merge(_raw(variant), {"federation": {"rounds": 2, "lr": 0.5}})
    if model == "cnn":
        raw = _merge(raw, {"model": CNN})
    if variant.startswith("poisoning") or variant.startswith("robust"):
        raw = _merge(raw, {"federation": {"clients_per_round": 12}})
    if variant == "heterogeneity-deadline":
        # VARIANTS' deadline drops every client (8 steps at 1 or 2 steps a second > 1.5 s):
        # here the faster clients make it, so the engines train under a working deadline
        raw = _merge(raw, {"federation": {"heterogeneity": {"deadline": 6.0}}})
    params = {}
    logging.disable(logging.WARNING)
    try:
        for engine in ("sequential", "vectorized"):
            fed = Federation(config_from_dict(_merge(raw, {"federation": {"engine": engine}})))
            start = fed.params.clone()
            for _ in range(2):
                fed.run_round()
            params[engine] = fed.params
    finally:
        logging.disable(logging.NOTSET)
    assert (params["sequential"] - start).abs().max() > 1e-3  # training moved the model
    # float rounding (and HE's approximate arithmetic) apart, the same model
    torch.testing.assert_close(params["vectorized"], params["sequential"], rtol=0, atol=2e-5)
