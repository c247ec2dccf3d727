"""Data-level attacks: the poisoned trainer, label flipping, the backdoor and its success
rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from privfl.attacks.poisoning import (
    AttackSuccessRate,
    LabelFlipping,
    PixelPatternBackdoor,
    PoisonedTrainer,
    PoisoningThreat,
    flip_labels,
)
from privfl.attacks.poisoning.backdoor import stamp_trigger
from privfl.client import LocalTrainer


class Recorder(LocalTrainer):
    """Records the data each client trains on."""

    def __init__(self):
        self.seen = {}

    def train(self, model, spec, global_params, x, y, generator, *, client_id, round):
        self.seen[(client_id, round)] = (x.clone(), y.clone())
        return torch.zeros(1), {}


def test_poisoned_trainer_poisons_only_malicious_clients_from_the_start_round():
    inner = Recorder()
    threat = PoisoningThreat(np.array([3]), 10, start_round=2)
    trainer = PoisonedTrainer(inner, threat, LabelFlipping(10), seed=0)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 9])
    for cid in (2, 3):
        for r in (1, 2):
            trainer.train(None, None, None, x, y, None, client_id=cid, round=r)
    assert torch.equal(inner.seen[(3, 2)][1], torch.tensor([9, 8, 7, 6, 5, 0]))
    for key in ((2, 1), (2, 2), (3, 1)):
        assert torch.equal(inner.seen[key][1], y) and torch.equal(inner.seen[key][0], x)
    assert torch.equal(y, torch.tensor([0, 1, 2, 3, 4, 9]))  # input untouched


def test_flip_labels_is_an_involution():
    y = torch.arange(10)
    assert flip_labels(y, 10).tolist() == list(range(9, -1, -1))
    assert torch.equal(flip_labels(flip_labels(y, 10), 10), y)


def test_trigger_square_and_flat_inputs():
    x = torch.zeros(2, 1, 8, 8)
    out = stamp_trigger(x, 2, 1.0)
    assert out.sum() == 2 * 4 and out[:, :, 6:, 6:].eq(1).all() and x.sum() == 0
    flat = stamp_trigger(torch.zeros(3, 20), 2, 5.0)
    assert flat[:, -4:].eq(5).all() and flat[:, :-4].eq(0).all()


def test_backdoor_poisons_the_requested_share():
    x, y = torch.zeros(25, 1, 8, 8), torch.full((25,), 3)
    px, py = PixelPatternBackdoor(7, 2, 1.0, 0.3).poison(x, y, np.random.default_rng(0))
    k = math.ceil(0.3 * 25)
    triggered = px[:, 0, 6:, 6:].eq(1).all(dim=(1, 2))
    assert int(triggered.sum()) == k and torch.equal(triggered, py == 7)
    assert int((py == 3).sum()) == 25 - k and y.eq(3).all()


class CornerDetector(nn.Module):
    """Predicts class 7 when the bottom-right pixel is lit, else class 1."""

    def forward(self, x):
        lit = x[:, 0, -1, -1] > 0.5
        logits = torch.zeros(len(x), 10)
        logits[lit, 7] = 1.0
        logits[~lit, 1] = 1.0
        return logits


def test_attack_success_rate_counts_non_target_examples_sent_to_the_target():
    x, y = torch.zeros(6, 1, 8, 8), torch.tensor([7, 7, 0, 1, 2, 3])
    asr = AttackSuccessRate(x, y, target=7, size=2, value=1.0)
    assert asr.evaluate(CornerDetector(), None)["attack_success_rate"] == 1.0
    blind = AttackSuccessRate(x, y, target=7, size=1, value=0.2)  # too faint to trigger
    assert blind.evaluate(CornerDetector(), None)["attack_success_rate"] == 0.0
    assert len(asr.x) == 4  # the two examples already labelled 7 do not count


def test_bad_fraction_rejected():
    with pytest.raises(ValueError, match="poison_fraction"):
        PixelPatternBackdoor(0, 2, 1.0, 0.0)
