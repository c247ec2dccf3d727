"""The client target: the server attacks one client's update; members are that client's
examples; shadows replay the honest clients' training; secure channels make it not observable.
Also the loss baseline on the same candidates, and ROC curves read back from records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_membership_attack import _memoriser, _population

import privfl
from privfl.attacks.membership.attack import run_membership
from privfl.attacks.membership.config import MembershipConfig
from privfl.attacks.membership.metrics import Roc
from privfl.client import SGDTrainer
from privfl.defenses.dp.dpsgd import DPSGDTrainer
from privfl.errors import ConfigError
from privfl.plan import honest_trainer

SMALL = {
    "name": "m",
    "seed": 0,
    "data": {"name": "digits", "partition": "iid", "clients": 4, "test_fraction": 0.9},
    "model": {"name": "mlp", "hidden": [128]},
    "federation": {
        "rounds": 3,
        "clients_per_round": 4,
        "local_epochs": 25,
        "batch_size": 10,
        "lr": 0.1,
    },
    "evaluation": {"every": 3},
}


def _config(membership: dict, defense: dict | None = None, **federation) -> privfl.Config:
    raw = json.loads(json.dumps(SMALL))
    raw["federation"].update(federation)
    raw["attack"] = {"membership": {"target": "client", **membership}}
    if defense:
        raw["defense"] = defense
    return privfl.Config.model_validate(raw)


def test_baseline_loss_scores_the_same_candidates_on_the_same_model():
    pop = _population()
    cfg = MembershipConfig(method="lira", candidates=100, fixed_variance=True, baseline_loss=True)
    shadows = lambda ids, s: _memoriser(ids, s, 3.0)  # noqa: E731
    target = _memoriser(np.arange(300), 99, 3.0)
    result = run_membership(cfg, target, pop, shadows, seed=4)
    lira, loss = result.records
    assert (lira["attack"], loss["attack"], loss["baseline_of"]) == (
        "membership-lira",
        "membership-loss",
        "membership-lira",
    )
    alone = run_membership(MembershipConfig(method="loss", candidates=100), target, pop, None, 4)
    assert (alone.candidates.ids == result.candidates.ids).all()  # same seed, same draw
    assert loss["auc"] == pytest.approx(alone.record["auc"])
    assert "shadow_models" not in loss and "variant" not in loss


def test_roc_from_record_round_trips():
    pop = _population()
    result = run_membership(
        MembershipConfig(method="loss", candidates=60), _memoriser(range(300), 1, 2.0), pop, None, 0
    )
    back = Roc.from_record(json.loads(json.dumps(result.record)))
    assert back.auc == pytest.approx(result.roc.auc, abs=1e-5)
    assert (back.members, back.non_members) == (30, 30)
    with pytest.raises(ValueError, match="missing"):
        Roc.from_record({"auc": 0.5})


def test_a_capped_candidate_count_keeps_the_shadow_design_consistent():
    """A client with fewer examples than candidates / 2: the count shrinks and every candidate
    is still IN exactly half of the shadows."""
    pop = _population(held=20)
    cfg = MembershipConfig(method="lira", candidates=100, shadow_models=4)
    seen = []

    def shadows(ids, s):
        seen.append(set(ids.tolist()))
        return _memoriser(ids, s, 3.0)

    result = run_membership(cfg, _memoriser(np.arange(20), 9, 3.0), pop, shadows, 2, count=40)
    assert result.record["candidates"] == 40 and result.record["members"] == 20
    ins = np.array([[c in s for c in result.candidates.ids.tolist()] for s in seen])
    assert (ins.sum(axis=0) == 2).all()
    assert set(result.candidates.ids[result.candidates.is_member].tolist()) == set(range(20))


def test_client_target_config_rules():
    with pytest.raises(ValueError, match="rounds applies only when target = 'client'"):
        MembershipConfig(rounds=[1])
    with pytest.raises(ValueError, match="rounds is empty"):
        MembershipConfig(target="client", rounds=[])
    with pytest.raises(ConfigError, match=r"rounds \[9\] lie after the last round \(3\)"):
        privfl.run(_config({"method": "loss", "rounds": [9]}), out=None, progress=False)


def test_the_server_learns_membership_in_one_clients_data_from_its_update():
    """An overfit client (25 local epochs on ~45 examples): the loss of the model it trained
    separates its own examples from test examples; every member is that client's."""
    cfg = _config({"method": "loss", "rounds": [1, 3], "candidates": 60})
    result = privfl.run(cfg, out=None, progress=False)
    records = [r for r in result.attacks if r["attack"] == "membership-loss"]
    assert [r["round"] for r in records] == [1, 3]
    for r in records:
        assert r["status"] == "ok" and r["target"] == "client" and r["client"] in range(4)
        assert r["members"] == r["non_members"] == 30
        assert r["auc"] > 0.65  # chance: 0.5 with standard deviation 0.075 at 30 + 30


@pytest.mark.parametrize(
    ("defense", "channel", "seen"),
    [
        ({"secagg": {"neighbours": "all"}}, "secagg", "their sum"),
        ({"he": {"scheme": "ckks"}}, "he", "ciphertexts"),
    ],
)
def test_under_a_secure_channel_the_client_target_is_not_observable(defense, channel, seen):
    cfg = _config({"method": "lira", "shadow_models": 4, "rounds": [2]}, defense, rounds=2)
    (record,) = privfl.run(cfg, out=None, progress=False).attacks
    assert (record["status"], record["channel"], record["round"]) == ("not observable", channel, 2)
    assert record["auc"] is None and record["client"] is None and seen in record["note"]


def test_central_dp_does_not_hide_the_update_and_says_so():
    dp = {"dp": {"mode": "central", "noise_multiplier": 0.5}}
    cfg = _config({"method": "loss", "candidates": 40}, dp, rounds=2)
    (record,) = privfl.run(cfg, out=None, progress=False).attacks
    assert record["status"] == "ok" and record["round"] == 2  # the default: the last round
    assert "central DP adds its noise on the server" in record["note"]


def test_shadows_replay_the_honest_clients_trainer():
    """DP-SGD's trainer under mode = 'sample', plain SGD otherwise, never a poisoner's."""
    from privfl.federation import Federation

    plain = Federation(_config({"method": "loss"}))
    assert type(honest_trainer(plain.config, _setup(plain))) is SGDTrainer
    dp = {"dp": {"mode": "sample", "noise_multiplier": 1.0}}
    private = Federation(_config({"method": "loss"}, dp))
    trainer = honest_trainer(private.config, _setup(private))
    assert isinstance(trainer, DPSGDTrainer) and trainer.noise_multiplier == 1.0
    assert private.ledger.events == []  # building the replayed trainer spent nothing
    raw = _config({"method": "loss"}).model_dump()
    raw["attack"]["poisoning"] = {"method": "label_flip", "fraction": 0.5}
    poisoned = Federation(privfl.Config.model_validate(raw))
    assert type(honest_trainer(poisoned.config, _setup(poisoned))) is SGDTrainer


def _setup(fed):
    from privfl.pipeline import RunSetup

    return RunSetup(fed.config, fed.data, fed.spec, fed.make_model, fed.ledger)


def test_lira_shadow_updates_start_from_the_global_model_the_client_received():
    """The client-target LiRA on a run: its shadows are local trainings, so the attack costs
    a fraction of a global-target LiRA's shadow federations; it beats chance."""
    cfg = _config(
        {"method": "lira", "shadow_models": 8, "fixed_variance": True, "candidates": 60},
        rounds=2,
    )
    torch.manual_seed(0)
    (record,) = privfl.run(cfg, out=None, progress=False).attacks
    assert record["status"] == "ok" and record["shadow_models"] == 8
    assert record["auc"] > 0.7


def test_shadow_federations_train_on_the_vectorized_engine_and_fall_back_once(caplog, monkeypatch):
    """The global target's shadows use the vectorized engine; a run it cannot batch (a CNN,
    the batched CNN kernel switched off) makes the first shadow say why, and the others go to
    the sequential loop without a word."""
    from privfl.attacks.membership.build import shadow_config
    from privfl.engine import VectorizedEngine

    monkeypatch.setattr(VectorizedEngine, "use_batched_cnn", False)

    raw = json.loads(json.dumps(SMALL))
    raw["federation"].update(rounds=1, local_epochs=1)
    raw["model"] = {"name": "cnn", "channels": [2], "hidden": [8]}
    raw["attack"] = {
        "membership": {
            "method": "lira",
            "shadow_models": 4,
            "candidates": 20,
            "fixed_variance": True,
        }
    }
    cfg = privfl.Config.model_validate(raw)
    assert shadow_config(cfg).federation.engine == "vectorized"
    with caplog.at_level("WARNING"):
        (record,) = privfl.run(cfg, out=None, progress=False).attacks
    said = [r for r in caplog.records if "engine = 'vectorized'" in r.getMessage()]
    assert len(said) == 1 and "convolutions" in said[0].getMessage()
    assert record["shadow_models"] == 4 and record["auc"] is not None


def test_shadows_keep_secure_aggregation_where_distributed_dp_lives_in_it():
    from privfl.attacks.membership.build import shadow_config

    raw = json.loads(json.dumps(SMALL))
    raw["federation"].update(rounds=1, local_epochs=1, sampling="poisson")
    raw["defense"] = {
        "secagg": {"neighbours": "all"},
        "dp": {"mode": "distributed", "noise_multiplier": 0.5},
    }
    raw["attack"] = {
        "membership": {
            "method": "lira",
            "shadow_models": 2,
            "candidates": 20,
            "fixed_variance": True,
        }
    }
    cfg = privfl.Config.model_validate(raw)
    assert shadow_config(cfg).defense.secagg is not None
    (record,) = privfl.run(cfg, out=None, progress=False).attacks
    assert record["auc"] is not None and record["shadow_models"] == 2
    plain = cfg.model_copy(update={"defense": cfg.defense.model_copy(update={"dp": None})})
    assert shadow_config(plain).defense.secagg is None


def test_a_round_the_run_never_reaches_is_reported_as_such():
    dp = {"dp": {"mode": "central", "noise_multiplier": 1.0, "max_epsilon": 8.0}}
    cfg = _config({"method": "loss", "candidates": 20, "rounds": [1, 3]}, dp, rounds=3)
    result = privfl.run(cfg, out=None, progress=False)
    ran = len(result.metrics)
    assert 1 <= ran < 3  # the budget stops the run early
    late = [r for r in result.attacks if r["round"] == 3]
    assert len(late) == 1 and late[0]["status"] == "not reached" and late[0]["auc"] is None
    assert f"ended after round {ran}, before round 3" in late[0]["note"]
    assert [r["status"] for r in result.attacks if r["round"] == 1] == ["ok"]
