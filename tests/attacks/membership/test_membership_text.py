"""Membership inference on token windows: the attack reads logits and labels, so int64
(n, seq_len) inputs go through the population, the candidates and the scores unchanged."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from privfl.attacks.membership.attack import Population, run_membership
from privfl.attacks.membership.config import MembershipConfig

VOCAB, SEQ = 30, 8


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 16)
        self.lstm = nn.LSTM(16, 64, batch_first=True)
        self.head = nn.Linear(64, VOCAB)

    def forward(self, x):
        out, _ = self.lstm(self.embedding(x))
        return self.head(out[:, -1])


def test_the_loss_attack_tells_memorized_windows_from_unseen_ones():
    """A model that memorized 64 random windows and their random next tokens: the loss
    attack (Yeom et al. 2018) separates them from 64 unseen windows; the record's AUC is
    scikit-learn's on the attack's own scores."""
    g = torch.Generator().manual_seed(0)
    train_x = torch.randint(0, VOCAB, (64, SEQ), generator=g)
    train_y = torch.randint(0, VOCAB, (64,), generator=g)
    test_x = torch.randint(0, VOCAB, (64, SEQ), generator=g)
    test_y = torch.randint(0, VOCAB, (64,), generator=g)
    torch.manual_seed(0)
    model = TinyLM()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(train_x), train_y).backward()
        opt.step()
    model.eval()
    pop = Population.of(train_x, train_y, test_x, test_y, np.arange(64))
    assert pop.x.dtype == torch.int64
    cfg = MembershipConfig(method="loss", candidates=64)
    with torch.no_grad():
        res = run_membership(cfg, model, pop, None, seed=0)
    r = res.record
    assert r["members"] == r["non_members"] == 32
    assert r["auc"] >= 0.95
    assert r["auc"] == np.round(roc_auc_score(res.candidates.is_member, res.scores), 4)
