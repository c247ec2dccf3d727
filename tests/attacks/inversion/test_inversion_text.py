"""The embedding-gradient token attack on hand-built rounds: each client trains a tiny
Embedding -> LSTM -> Linear next-token model with privfl's own SGD client; the true token set
is computed independently, from the client's schedule replayed here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import privfl
from privfl.attacks.inversion import (
    InversionConfig,
    InversionThreat,
    Status,
    create_inversion_observer,
)
from privfl.attacks.inversion.text import (
    TokenAttackSettings,
    TokenLeakObserver,
    find_embedding,
    idle_row_scale,
    noise_threshold,
    token_scores,
)
from privfl.client import LocalTraining, SGDTrainer
from privfl.errors import ConfigError, PrivflError
from privfl.seeding import torch_generator
from privfl.stages import ObserverContext
from privfl.update import GroundTruth, ParamSpec, ServerView, Update, UpdateBatch

VOCAB, SEQ, SEED = 40, 6, 5
QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart.toml"


class TinyLM(nn.Module):
    """Embedding -> LSTM -> linear head on the last step (the text contract's shape)."""

    def __init__(self, vocab: int = VOCAB, dim: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(x))
        return self.head(out[:, -1])


def _data(cid: int, n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Client ``cid``'s sequences: tokens from its own window of 30 ids (clients overlap)."""
    g = torch.Generator().manual_seed(cid)
    x = 3 * cid + torch.randint(0, 30, (n, SEQ), generator=g)
    return x % VOCAB, torch.randint(0, VOCAB, (n,), generator=g)


def _round(training: LocalTraining, clients=(1, 4, 7), round_: int = 1):
    torch.manual_seed(0)
    model = TinyLM()
    spec = ParamSpec.of(model)
    w0 = spec.flatten(model).detach().clone()
    updates = []
    for cid in clients:
        x, y = _data(cid)
        g = torch_generator(SEED, "client", round_, cid)  # the engines' stream
        delta, _ = SGDTrainer(training).train(model, spec, w0, x, y, g, client_id=cid, round=round_)
        updates.append(Update(cid, delta, len(y)))
    spec.load_into(model, w0)
    batch = UpdateBatch.stack(updates, spec.dim)
    ctx = ObserverContext(
        make_model=lambda: model,
        spec=spec,
        input_shape=(SEQ,),
        num_classes=VOCAB,
        ground_truth=lambda c: GroundTruth(c, *_data(c)),
    )
    return ServerView(round_, w0, np.array(clients), updates=batch), ctx


def _observer(training, **kw):
    threat = InversionThreat(training=training, input_shape=(SEQ,), num_classes=VOCAB)
    token = kw.pop("token", TokenAttackSettings())
    return TokenLeakObserver(
        rounds=frozenset({1}), max_targets=8, threat=threat, seed=SEED, token=token, **kw
    )


def _true_tokens(training: LocalTraining, cid: int) -> set[int]:
    """The distinct input tokens of the examples client ``cid`` trained on, by replaying its
    mini-batches by hand (torch.randperm on its stream, as batch_schedule draws them)."""
    x, _ = _data(cid)
    g = torch_generator(SEED, "client", 1, cid)
    used: set[int] = set()
    steps, b = training.steps, training.batch_size
    done = 0
    while done < steps:
        for idx in torch.randperm(len(x), generator=g).split(b):
            used |= set(x[idx].flatten().tolist())
            done += 1
            if done == steps:
                break
    return used


PLAIN = LocalTraining(lr=0.5, steps=2, batch_size=3)  # 6 of 10 examples touched


def test_plain_sgd_recovers_exactly_the_tokens_used():
    view, ctx = _round(PLAIN)
    recs = _observer(PLAIN).observe(view, ctx)
    assert len(recs) == 3
    for r in recs:
        true = _true_tokens(PLAIN, r["client"])
        all_tokens = set(_data(r["client"])[0].flatten().tolist())
        assert true < all_tokens  # the schedule matters: not every example was used
        assert r["status"] == Status.OK and r["threshold_rule"] == "exact"
        assert r["token_recall"] == 1.0 and r["token_precision"] == 1.0
        assert r["tokens_true"] == r["tokens_recovered"] == r["tokens_correct"] == len(true)
        # the bag of next tokens from the head's bias (Geng et al.'s counts) on 6 examples
        assert r["label_accuracy"] == pytest.approx(1.0, abs=1e-12) and r["examples"] == 6


def test_weight_decay_and_momentum_are_subtracted():
    training = LocalTraining(lr=0.5, steps=2, batch_size=3, momentum=0.9, weight_decay=0.01)
    view, ctx = _round(training)
    recs = _observer(training).observe(view, ctx)
    for r in recs:
        assert r["token_recall"] == 1.0 and r["token_precision"] == 1.0
        assert r["tokens_true"] == len(_true_tokens(training, r["client"]))


def test_idle_row_scale_matches_torch_sgd():
    training = LocalTraining(lr=0.3, momentum=0.9, weight_decay=0.05)
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.3, momentum=0.9, weight_decay=0.05)
    for _ in range(4):
        opt.zero_grad()
        w.grad = torch.zeros(3)
        opt.step()
    assert idle_row_scale(training, 4) == pytest.approx(float(w.detach()[0]), rel=1e-6)


def test_noise_lowers_recall():
    """The noise what-if (Zhu et al. 2019 §5.1) on G: the threshold follows the estimated
    noise floor, so recall falls as the noise grows while precision stays high. (This tiny
    model's embedding-gradient rows have norms 1e-3 to 3e-2.)"""
    view, ctx = _round(PLAIN)
    noisy = TokenAttackSettings(noisy=True)

    def run(variance):
        obs = _observer(PLAIN, token=noisy, noise="gaussian", noise_variance=variance)
        return obs.observe(view, ctx)

    faint, some, loud = run(1e-10), run(1e-6), run(1e-2)
    assert np.median([r["token_recall"] for r in faint]) >= 0.9
    assert all(r["token_precision"] == 1.0 for r in faint + some)
    assert np.median([r["token_recall"] for r in some]) < 0.6
    assert np.median([r["token_recall"] for r in loud]) == 0.0
    # the floor is estimated from the update: close to the true std once noise dominates
    assert np.median([r["noise_floor"] for r in loud]) == pytest.approx(0.1, rel=0.1)


def test_aggregate_recovers_the_union():
    view, ctx = _round(PLAIN)
    agg = (view.updates.deltas * torch.from_numpy(view.updates.weights).float()[:, None]).sum(0)
    agg = agg / float(view.updates.weights.sum())
    sa = ServerView(1, view.global_params, view.client_ids, aggregate=agg, channel="secagg")
    (r,) = _observer(PLAIN).observe(sa, ctx)
    assert r["target"] == "aggregate" and r["clients"] == [1, 4, 7]
    # the union of the tokens the three clients' batches used, nothing else
    union = set().union(*(_true_tokens(PLAIN, c) for c in (1, 4, 7)))
    assert r["tokens_true"] == r["tokens_recovered"] == len(union)
    assert r["token_recall"] == r["token_precision"] == 1.0


def test_no_plaintext_record():
    view, ctx = _round(PLAIN)
    he = ServerView(1, view.global_params, view.client_ids, channel="he")
    (r,) = _observer(PLAIN).observe(he, ctx)
    assert r["status"] == Status.NO_PLAINTEXT and r["attack"] == "tokens"


def test_token_scores_and_threshold():
    assert token_scores(np.array([1, 2, 3]), np.array([2, 3, 4, 5])) == (0.5, 2 / 3, 2)
    # pure noise rows exceed the threshold with probability ~ fpr / rows each
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(20_000, 8, generator=g)
    t = noise_threshold(1.0, 8, 100, fpr=0.05)
    assert float((rows.norm(dim=1) > t).float().mean()) == pytest.approx(0.05 / 100, abs=4e-4)


def test_find_embedding_refuses_models_without_one():
    assert find_embedding(TinyLM())[0] == "embedding.weight"
    with pytest.raises(PrivflError, match="no nn.Embedding"):
        find_embedding(nn.Linear(3, 2))


# ------------------------------------------------------------------ dispatch from the config


def _setup(text: bool):
    x = torch.zeros((4, SEQ), dtype=torch.int64) if text else torch.zeros((4, 1, 8, 8))
    shape = (SEQ,) if text else (1, 8, 8)
    bundle = SimpleNamespace(
        train=SimpleNamespace(x=x), input_shape=shape, num_classes=VOCAB if text else 10
    )
    return SimpleNamespace(data=SimpleNamespace(bundle=bundle), make_model=TinyLM)


def _create(text: bool, **section):
    config = privfl.load_config(QUICKSTART)
    return create_inversion_observer(
        InversionConfig(**section), config, _setup(text), LocalTraining(lr=0.1)
    )


def test_the_default_method_is_the_token_attack_on_text():
    assert InversionConfig().method == "auto"
    obs = _create(True)
    assert isinstance(obs, TokenLeakObserver) and obs.method == "tokens"
    assert not obs.token.noisy and obs.token.schedule_known


@pytest.mark.parametrize(
    ("text", "section", "message"),
    [
        (True, {"method": "idlg"}, "is text .int64 tokens.: use method = 'tokens'"),
        (True, {"method": "ig"}, "reconstructs images"),
        (True, {"iterations": 50}, "iterations applies only to the image attacks"),
        (True, {"images": True}, "images applies only to the image attacks"),
        (False, {"method": "tokens"}, "is not text"),
        (False, {"token_fpr": 0.01}, "token_fpr applies only to the token attack"),
    ],
)
def test_attacks_and_options_of_the_other_modality_are_refused(text, section, message):
    with pytest.raises(ConfigError, match=message):
        _create(text, **section)


def test_token_fpr_needs_the_token_attack():
    with pytest.raises(ValueError, match="token_fpr applies only"):
        InversionConfig(method="idlg", token_fpr=0.01)
    assert InversionConfig(method="tokens", token_fpr=0.01).token_fpr == 0.01


def test_a_text_model_without_an_embedding_is_refused():
    setup = _setup(True)
    setup.make_model = lambda: nn.Linear(SEQ, VOCAB)
    config = privfl.load_config(QUICKSTART)
    with pytest.raises(ConfigError, match="no nn.Embedding"):
        create_inversion_observer(InversionConfig(), config, setup, LocalTraining(lr=0.1))
