"""The issue's qualitative results on digits, with the figures measured here (seed 0) as floors
and ceilings. Setting: examples/quickstart.toml (digits, Dirichlet 0.5, 50 clients, 10 a
round, E = 5, B = 10, lr 0.1), 15 rounds, 20% of the clients malicious unless stated.

Measured (test accuracy at round 15 unless stated):
  sign flip, scale 4:  FedAvg 0.100, median 0.780 (issue's hand-written loop: 0.20 / 0.81)
  sign flip, scale 1:  FedAvg 0.763, median 0.769, FedAvg without attack 0.900
                       (issue: 0.86 / 0.79: negation only slows FedAvg)
  model replacement, 4% malicious: attack success rate FedAvg 0.954, norm bound (M = 1) 0.031
  ALIE (z_max = 0.468 for 10 of 50, the authors' direction), Baruch et al.'s setting (every
  client every round, one SGD step a round, IID, 150 rounds): the attacked accuracy
  oscillates late in the run, so one round's reading moves with float rounding (Bulyan's
  drop at round 150, seed 0: 0.156 with the products on oneDNN, 0.064 on MKL). Over rounds
  110-150 (evaluated every 10), seeds 0-2, both libraries: the mean drop against the clean
  twin is 0.049-0.089 for Krum and 0.016-0.055 for Bulyan (f = 10), with single rounds down
  by 0.07-0.16; the trimmed mean (beta 0.2) holds (-0.021 to -0.006), as does FedAvg
  (-0.009 to 0.004).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import privfl
from privfl.config import load_config

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart.toml"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(*sets: str) -> dict:
    cfg = load_config(QUICKSTART, ["federation.rounds=15", *sets])
    return privfl.run(cfg, out=None, progress=False).metrics[-1]


SIGN_FLIP_4 = ("attack.poisoning.method=sign_flip", "attack.poisoning.scale=4")


def test_sign_flipping_scale_4_breaks_fedavg_not_the_median():
    fedavg = _run(*SIGN_FLIP_4, "attack.poisoning.clean_twin=false")
    median = _run(*SIGN_FLIP_4, "attack.poisoning.clean_twin=false", "defense.robust.rule=median")
    assert fedavg["test_accuracy"] <= 0.30  # measured 0.100
    assert median["test_accuracy"] >= 0.70  # measured 0.780


@pytest.mark.slow
def test_plain_negation_only_slows_fedavg():
    fedavg = _run("attack.poisoning.method=sign_flip")
    median = _run("attack.poisoning.method=sign_flip", "defense.robust.rule=median")
    assert fedavg["clean_test_accuracy"] >= 0.85  # measured 0.900
    assert fedavg["test_accuracy"] >= 0.65  # measured 0.763
    assert fedavg["accuracy_drop"] <= 0.25  # measured 0.136
    assert median["test_accuracy"] >= 0.65  # measured 0.769


@pytest.mark.slow
def test_model_replacement_succeeds_against_fedavg_and_norm_bounding_cuts_it():
    attack = ("attack.poisoning.method=model_replacement", "attack.poisoning.fraction=0.04")
    fedavg = _run(*attack)
    bounded = _run(*attack, "defense.robust.rule=norm_bound", "defense.robust.norm=1.0")
    assert fedavg["attack_success_rate"] >= 0.80  # measured 0.954
    assert bounded["attack_success_rate"] <= 0.20  # measured 0.031
    assert bounded["test_accuracy"] >= 0.80  # measured 0.880


FEDSGD_ALL = (
    "federation.rounds=150",
    "federation.local_steps=1",
    "federation.local_epochs=1",
    "federation.clients_per_round=50",
    "data.partition=iid",
    "evaluation.every=10",
    "attack.poisoning.method=alie",
)


def _late_drops(*sets: str, seeds: tuple[int, ...] = (0, 1)) -> list[list[float]]:
    """Per seed, the clean twin's test accuracy minus the attacked model's at every evaluated
    round past 100 of 150 (one reading of an oscillating curve moves with float rounding)."""
    drops = []
    for seed in seeds:
        cfg = load_config(QUICKSTART, ["federation.rounds=15", *FEDSGD_ALL, *sets, f"seed={seed}"])
        metrics = privfl.run(cfg, out=None, progress=False).metrics
        late = [m for m in metrics if m["round"] > 100 and m.get("test_accuracy") is not None]
        drops.append([m["clean_test_accuracy"] - m["test_accuracy"] for m in late])
    return drops


def _mean(drops: list[list[float]]) -> float:
    return sum(map(sum, drops)) / sum(map(len, drops))


@pytest.mark.slow
def test_alie_degrades_krum_and_bulyan_but_not_the_trimmed_mean():
    krum = _late_drops("defense.robust.rule=krum")
    bulyan = _late_drops("defense.robust.rule=bulyan", "defense.robust.f=10")
    trimmed = _late_drops("defense.robust.rule=trimmed_mean")
    assert all(len(d) == 5 for d in krum + bulyan + trimmed)  # rounds 110, 120, ..., 150
    assert _mean(krum) >= 0.04  # measured 0.076 (seeds 0, 1; either GEMM library)
    assert _mean(bulyan) >= 0.03  # measured 0.048
    assert min(max(d) for d in krum + bulyan) >= 0.06  # each run dips: measured 0.09-0.16
    assert _mean(trimmed) <= 0.01  # measured -0.014: the trimmed mean holds
