"""Membership scores and metrics against direct computations of the papers' equations."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from privfl.attacks.membership import metrics, scores


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_logit_confidence_is_the_reference_codes_statistic():
    z = _rng().normal(0, 3, (50, 10))
    y = _rng(1).integers(0, 10, 50)
    # research/mi_lira_2021/score.py: stable softmax in float64, then log p_y - log sum_{j!=y} p_j
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p_true = p[np.arange(50), y]
    p_wrong = p.sum(1) - p_true
    expected = np.log(p_true + 1e-45) - np.log(p_wrong + 1e-45)
    np.testing.assert_allclose(scores.logit_confidence(z, y), expected, rtol=1e-9, atol=1e-9)
    # and stays finite where p_y rounds to 1 in float64
    assert np.isfinite(scores.logit_confidence([[800.0, 0.0]], [0])).all()
    assert scores.logit_confidence([[800.0, 0.0]], [0])[0] == pytest.approx(800.0)


def test_loss_score_is_minus_cross_entropy():
    z = _rng(2).normal(0, 2, (30, 5))
    y = _rng(3).integers(0, 5, 30)
    ce = F.cross_entropy(torch.tensor(z), torch.tensor(y), reduction="none").numpy()
    np.testing.assert_allclose(scores.loss_score(z, y), -ce, rtol=1e-12)
    np.testing.assert_allclose(scores.true_class_probability(z, y), np.exp(-ce), rtol=1e-12)


def _lira_by_hand(target, shadow, shadow_in, fixed):
    """Carlini et al. 2022, Algorithm 1, one candidate at a time with the statistics module."""
    k, n = shadow.shape
    ins = [[shadow[j, i] for j in range(k) if shadow_in[j, i]] for i in range(n)]
    outs = [[shadow[j, i] for j in range(k) if not shadow_in[j, i]] for i in range(n)]
    if fixed:
        sd_in = statistics.pstdev([x for xs in ins for x in xs])
        sd_out = statistics.pstdev([x for xs in outs for x in xs])
    result = []
    for i in range(n):
        s_in = sd_in if fixed else statistics.pstdev(ins[i])
        s_out = sd_out if fixed else statistics.pstdev(outs[i])
        m_in, m_out = statistics.median(ins[i]), statistics.median(outs[i])

        def logpdf(x, mu, sd):
            return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi))

        result.append(logpdf(target[i], m_in, s_in) - logpdf(target[i], m_out, s_out))
    return np.array(result)


@pytest.mark.parametrize("fixed", [False, True])
def test_lira_online_matches_the_papers_equations(fixed):
    rng = _rng(4)
    shadow_in = rng.random((16, 12)) < 0.5
    shadow_in[0], shadow_in[1], shadow_in[2], shadow_in[3] = True, False, True, False
    shadow = rng.normal(0, 1, (16, 12)) + 2.0 * shadow_in
    target = rng.normal(1, 1, 12)
    got = scores.lira_online(target, shadow, shadow_in, fixed_variance=fixed)
    np.testing.assert_allclose(got, _lira_by_hand(target, shadow, shadow_in, fixed), rtol=1e-9)


def test_lira_offline_orders_as_the_one_sided_test():
    rng = _rng(5)
    shadow_in = np.zeros((8, 20), bool)
    shadow = rng.normal(0, 1, (8, 20))
    target = rng.normal(0, 2, 20)
    got = scores.lira_offline(target, shadow, shadow_in)
    mu, sd = np.median(shadow, 0), np.std(shadow, 0)
    one_sided = stats.norm.cdf(target, mu, sd)  # 1 - Pr[Z > phi], Z ~ N(mu_out, sd_out^2)
    assert (np.argsort(got) == np.argsort(one_sided)).all()


def test_lira_refuses_too_few_shadow_models():
    with pytest.raises(ValueError, match="at least 2 IN shadow models"):
        scores.lira_online([0.0], [[1.0], [2.0]], [[True], [False]])


def _rmia_by_hand(px, rx, kx, pz, rz, a, gamma):
    """Zarifzadeh et al. 2024, Eq. for Score_MIA, with the offline Pr(x), by explicit pairs."""
    n, m = px.size, pz.size
    out = []
    for i in range(n):
        outs = [rx[j, i] for j in range(rx.shape[0]) if not kx[j, i]]
        prior_x = (1 + a) / 2 * np.mean(outs) + (1 - a) / 2
        wins = 0
        for t in range(m):
            prior_z = (1 + a) / 2 * np.mean(rz[:, t]) + (1 - a) / 2
            wins += (px[i] / prior_x) / (pz[t] / prior_z) > gamma
        out.append(wins / m)
    return np.array(out)


@pytest.mark.parametrize("a,gamma", [(0.3, 1.0), (0.0, 1.0), (1.0, 2.0)])
def test_rmia_matches_pairwise_ratios(a, gamma):
    rng = _rng(6)
    kx = rng.random((4, 15)) < 0.5
    kx[0] = False
    rx, px = rng.random((4, 15)), rng.random(15)
    rz, pz = rng.random((4, 40)), rng.random(40)
    got = scores.rmia_offline(px, rx, kx, pz, rz, a=a, gamma=gamma)
    np.testing.assert_allclose(got, _rmia_by_hand(px, rx, kx, pz, rz, a, gamma))


def test_auc_of_perfect_and_random_scores():
    truth = np.arange(2000) % 2 == 0
    perfect = metrics.membership_metrics(truth.astype(float), truth)
    assert perfect["auc"] == 1.0 and perfect["tpr_at_fpr_0.001"] == 1.0
    assert perfect["members"] == perfect["non_members"] == 1000
    rng = _rng(7)
    truth = rng.random(40_000) < 0.5
    noise = metrics.membership_metrics(rng.random(40_000), truth)
    # AUC of an independent score: 0.5 with std sqrt((1/n1 + 1/n0) / 12) ~ 0.003 here
    assert abs(noise["auc"] - 0.5) < 0.015
    assert noise["tpr_at_fpr_0.01"] < 0.02


def test_metrics_refuse_bad_candidates():
    with pytest.raises(ValueError, match="both members and non-members"):
        metrics.roc_of([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="not finite"):
        metrics.roc_of([0.1, float("nan")], [True, False])
    with pytest.raises(ValueError, match="fpr must"):
        metrics.roc_of([0.1, 0.2], [True, False]).tpr_at_fpr(0.0)
