"""Contribution measurement in runs: the reconstruction utility against a direct evaluation,
free riders as null players, contributions.json, resume, and what secure channels refuse."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch

import privfl
from privfl.config import config_from_dict
from privfl.errors import ConfigError
from privfl.incentives.config import IncentivesConfig
from privfl.incentives.utility import ReconstructionUtility
from privfl.incentives.values import exact_shapley
from privfl.models import MLPConfig
from privfl.update import ParamSpec

RUN = {
    "name": "inc",
    "seed": 1,
    "data": {"name": "digits", "partition": "iid", "clients": 10},
    "model": {"name": "mlp", "hidden": [16]},
    "federation": {"rounds": 3, "clients_per_round": 5, "local_epochs": 1, "lr": 0.1},
    "evaluation": {"every": 3},
}


def _config(incentives: dict, **extra) -> privfl.Config:
    raw = json.loads(json.dumps(RUN))
    raw["incentives"] = incentives
    raw.update(extra)
    return privfl.Config.model_validate(raw)


def _free_riders(method: str) -> privfl.Config:
    """``RUN`` valued by ``method`` on 100 validation examples, a fifth of the clients free
    riders (tests/test_device_workloads.py runs it on the GPU)."""
    return _config(
        {"method": method, "validation_size": 100},
        attack={"poisoning": {"method": "free_rider", "fraction": 0.2, "clean_twin": False}},
    )


def _tiny():
    model = MLPConfig(hidden=[5]).build((4,), 3)
    spec = ParamSpec.of(model)
    g = torch.Generator().manual_seed(0)
    w = spec.flatten(model)
    deltas = torch.randn((4, spec.dim), generator=g)
    x = torch.randn((50, 4), generator=g)
    y = torch.randint(0, 3, (50,), generator=g)
    return model, spec, w, deltas, x, y


@pytest.mark.parametrize("reconstruction", ["share", "subset_mean"])
def test_the_utility_of_a_subset_is_the_accuracy_of_its_reconstructed_model(reconstruction):
    model, spec, w, deltas, x, y = _tiny()
    p = np.array([1.0, 2.0, 3.0, 4.0])
    u = ReconstructionUtility(model, spec, w, deltas, p, x, y, reconstruction=reconstruction)
    masks = np.array([[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=bool)
    got = u(masks)
    for mask, value in zip(masks, got, strict=True):
        coef = torch.tensor(p * mask, dtype=torch.float32)
        denom = p.sum() if reconstruction == "share" else max(float(coef.sum()), 1.0)
        params = w + (coef @ deltas) / denom if mask.any() else w
        spec.load_into(model, params)
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).double().mean().item()
        assert value == pytest.approx(acc)


def test_a_zero_update_is_a_null_player_under_the_share_reconstruction():
    model, spec, w, deltas, x, y = _tiny()
    deltas[2] = 0
    p = np.ones(4)
    share = exact_shapley(ReconstructionUtility(model, spec, w, deltas, p, x, y), 4)
    assert share[2] == 0.0
    mean = ReconstructionUtility(model, spec, w, deltas, p, x, y, reconstruction="subset_mean")
    assert exact_shapley(mean, 4)[2] != 0.0  # the subset mean credits its dilution


@pytest.mark.parametrize("method", ["loo", "gtg_shapley", "mr"])
def test_free_riders_score_nothing_and_below_the_honest_median(method, tmp_path):
    privfl.run(_free_riders(method), out=tmp_path, progress=False)
    out = json.loads((tmp_path / "inc" / "contributions.json").read_text())
    records = out["records"]
    assert [r["client"] for r in records] == list(range(10))
    bad = [r for r in records if r["malicious"]]
    good = [r["score"] for r in records if not r["malicious"]]
    assert len(bad) == 2 and all(r["score"] == 0.0 for r in bad)
    assert max(r["score"] for r in bad) < statistics.median(good)
    metrics = [json.loads(line) for line in (tmp_path / "inc" / "metrics.jsonl").open()]
    taken = {c: sum(c in m["clients"] for m in metrics) for c in range(10)}
    assert all(r["rounds"] == taken[r["client"]] for r in records)
    assert [b["round"] for b in out["by_round"]] == [1, 2, 3]
    assert (tmp_path / "inc" / "plots" / "contributions.png").exists()


def test_disguised_free_riders_send_noise_of_the_configured_scale():
    cfg = _config(
        {"method": "loo", "validation_size": 50},
        attack={
            "poisoning": {
                "method": "free_rider",
                "fraction": 0.2,
                "disguise": 0.01,
                "clean_twin": False,
            }
        },
    )
    fed = privfl.federation.Federation(cfg)
    seen = []
    fed.stages.observers.append(_Spy(seen))
    fed.run_round()
    view = seen[0]
    bad = np.isin(view.updates.client_ids, list(fed.stages.threats[0][1].malicious))
    noise = view.updates.deltas[torch.from_numpy(bad)]
    assert noise.std().item() == pytest.approx(0.01, rel=0.05)


class _Spy(privfl.stages.Observer):
    def __init__(self, seen):
        self.seen = seen

    def observe(self, view, ctx):
        self.seen.append(view)
        return []


def test_resume_restores_the_running_scores(tmp_path):
    cfg = _config({"method": "loo", "validation_size": 80})
    whole = privfl.run(cfg, out=tmp_path / "a", progress=False)
    assert whole is not None
    from privfl.federation import Federation

    first = Federation(cfg)
    for _ in range(2):
        first.run_round()
    state = first.state_dict()
    second = Federation(cfg)
    second.load_state_dict(state)
    second.run_round()
    (obs,) = [o for o in second.stages.observers if hasattr(o, "records")]
    expected = json.loads((tmp_path / "a" / "inc" / "contributions.json").read_text())["records"]
    assert obs.records() == expected


def test_secure_channels_are_refused_and_bad_input_is_clear():
    raw = {**RUN, "incentives": {"method": "loo"}, "defense": {"secagg": {"neighbours": "all"}}}
    with pytest.raises(ConfigError, match="only learns their sum"):
        config_from_dict(raw)
    with pytest.raises(ValueError, match="eps applies only when method = 'gtg_shapley'"):
        IncentivesConfig(method="mr", eps=0.1)
    with pytest.raises(ConfigError, match="exceeds the test split"):
        privfl.run(_config({"method": "loo", "validation_size": 10**6}), out=None)


def test_audit_canary_clients_are_valued_and_marked(tmp_path):
    """The canary-client audit adds clients past the registered ones; the server sees them
    in the cohort like any client, so they are valued too, and marked."""
    cfg = _config({"method": "loo", "validation_size": 50}, audit={"canaries": 4})
    privfl.run(cfg, out=tmp_path, progress=False)
    records = json.loads((tmp_path / "inc" / "contributions.json").read_text())["records"]
    assert [r["client"] for r in records[:10]] == list(range(10))
    assert all("audit_canary" not in r for r in records[:10])
    canaries = records[10:]
    assert canaries and all(r["audit_canary"] and r["client"] >= 10 for r in canaries)
    assert sum(r["rounds"] for r in canaries) > 0
