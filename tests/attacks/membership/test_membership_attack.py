"""The global membership attack's design (balanced candidates, paired shadows) and its result
on models whose leakage is known: one that memorises its training set and one that does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import auc as sk_auc

from privfl.attacks.membership.attack import (
    Population,
    draw_candidates,
    run_membership,
    shadow_inclusions,
)
from privfl.attacks.membership.config import MembershipConfig

CLASSES = 4


def _population(n_train=400, n_test=200, held=300):
    ids = torch.arange(n_train + n_test, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(n_train + n_test) % CLASSES
    return Population.of(ids[:n_train], y[:n_train], ids[n_train:], y[n_train:], np.arange(held))


def _memoriser(train_ids, seed, gain):
    """Logits: the true class gets ``gain`` more for a training example, plus per-model noise."""
    members = set(np.asarray(train_ids).tolist())
    rng = np.random.default_rng(seed)
    noise = torch.tensor(rng.normal(0, 0.5, (600, CLASSES)), dtype=torch.float32)

    def logits(x):
        idx = x[:, 0].long()
        out = noise[idx].clone()
        boost = torch.tensor([gain * (int(i) in members) + 1.0 for i in idx])
        out[torch.arange(len(idx)), idx % CLASSES] += boost
        return out

    return logits


def test_candidates_are_balanced_and_drawn_from_the_right_splits():
    pop = _population()
    cand = draw_candidates(pop, 100, np.random.default_rng(0))
    assert cand.is_member.sum() == 50 and len(set(cand.ids.tolist())) == 100
    assert (cand.ids[cand.is_member] < 300).all()  # held by a client
    assert (cand.ids[~cand.is_member] >= 400).all()  # the test split
    with pytest.raises(ValueError, match="lower candidates"):
        draw_candidates(pop, 500, np.random.default_rng(0))


def test_shadow_inclusions_are_complementary_pairs():
    inc = shadow_inclusions(6, 10, np.random.default_rng(0))
    assert (inc.sum(axis=0) == 3).all() and (inc.sum(axis=1) == 5).all()
    assert (inc[0] == ~inc[1]).all() and (inc[4] == ~inc[5]).all()


@pytest.mark.parametrize(
    "section",
    [
        {"method": "lira"},
        {"method": "lira", "online": False},
        {"method": "lira", "fixed_variance": True},
        {"method": "rmia", "population": 100},
        {"method": "loss"},
    ],
)
def test_attack_separates_a_memoriser_and_not_a_model_that_does_not_leak(section):
    pop = _population()
    cfg = MembershipConfig(candidates=100, **section)
    shadows = None if cfg.method == "loss" else (lambda ids, s: _memoriser(ids, s, 3.0))
    leaky = run_membership(cfg, _memoriser(np.arange(300), 99, 3.0), pop, shadows, seed=1).record
    assert leaky["auc"] > 0.9 and leaky["members"] == leaky["non_members"] == 50
    blind_shadows = None if cfg.method == "loss" else (lambda ids, s: _memoriser(ids, s, 0.0))
    blind = run_membership(cfg, _memoriser([], 98, 0.0), pop, blind_shadows, seed=1).record
    assert 0.3 < blind["auc"] < 0.7
    roc = leaky["roc"]
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert sk_auc(roc["fpr"], roc["tpr"]) == pytest.approx(leaky["auc"], abs=1e-5)
    assert set(leaky) >= {
        "attack",
        "target",
        "auc",
        "tpr_at_fpr_0.001",
        "tpr_at_fpr_0.01",
        "candidates",
        "seconds",
    }


def test_config_rules():
    with pytest.raises(ValueError, match="even"):
        MembershipConfig(candidates=11)
    with pytest.raises(ValueError, match="applies only when"):
        MembershipConfig(method="loss", shadow_models=4)
    with pytest.raises(ValueError, match=">= 4 shadow models"):
        MembershipConfig(method="lira", shadow_models=2)
    assert MembershipConfig(method="lira", shadow_models=2, fixed_variance=True).shadow_models == 2
