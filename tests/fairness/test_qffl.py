"""q-FFL / q-FedAvg (Li, Sanjabi, Beirami and Smith, ICLR 2020, Algorithm 2): the step against
the paper's formula computed directly in numpy, the q = 0 reduction, the exact start losses,
and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import privfl
from privfl.config import config_from_dict
from privfl.errors import ConfigError, PrivflError
from privfl.fairness.qffl import (
    LOSS_EPS,
    START_LOSS,
    QFFLAggregator,
    client_start_losses,
    qffl_aggregate,
)
from privfl.federation import Federation
from privfl.update import UpdateBatch


def _tiny(q: float, *, lr: float = 0.1, clients: int = 3, **federation) -> privfl.Config:
    """Logistic regression on 4-pixel synthetic data, every client every round."""
    return config_from_dict(
        {
            "name": "qffl",
            "seed": 3,
            "data": {
                "name": "synthetic",
                "samples": 120,
                "shape": [1, 2, 2],
                "classes": 3,
                "partition": "dirichlet",
                "alpha": 0.5,
                "clients": clients,
            },
            "model": {"name": "mlp", "hidden": []},
            "federation": {
                "rounds": 2,
                "clients_per_round": clients,
                "local_epochs": 2,
                "batch_size": 8,
                "lr": lr,
                "server_optimizer": "qffl",
                "server_q": q,
                **federation,
            },
        }
    )


def _numpy_loss(w: np.ndarray, x: np.ndarray, y: np.ndarray, classes: int) -> float:
    """Mean cross-entropy of the linear model ``w = [W (classes x d) | b]`` by hand."""
    d = x.shape[1]
    weight, bias = w[: classes * d].reshape(classes, d), w[classes * d :]
    z = x @ weight.T + bias
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0])
def test_qffl_round_is_the_papers_formula_computed_directly(q):
    lr = 0.1
    fed = Federation(_tiny(q, lr=lr))
    w = fed.params.double().numpy().copy()
    cohort = fed.plan_round(1).cohort.tolist()
    # The local models w_bar_k, trained by the engine from w on the clients' own streams.
    local = [w + u.delta.double().numpy() for u in fed.engine.train(fed.params, cohort, 1)]
    big_l = 1 / lr
    deltas, hs, sizes = [], [], []
    for k, cid in enumerate(cohort):  # Algorithm 2, client by client, as the reference code
        x, y = fed.data.client_train(cid)
        f = _numpy_loss(w, x.reshape(len(y), -1).double().numpy(), y.numpy(), 3) + LOSS_EPS
        dw = big_l * (w - local[k])
        n_k = len(y)  # p_k = n_k / n, the weight uniform sampling needs
        deltas.append(n_k * f**q * dw)
        hs.append(n_k * (q * f ** (q - 1) * float(np.sum(dw**2)) + big_l * f**q))
        sizes.append(n_k)
    assert len(set(sizes)) > 1  # unequal clients: the weights matter
    expected = w - np.sum(deltas, axis=0) / np.sum(hs)
    record = fed.run_round()
    np.testing.assert_allclose(fed.params.double().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert record["qffl_h_sum"] == pytest.approx(np.sum(hs), rel=1e-6)
    # The step differs from FedAvg's, so the test can tell them apart.
    fedavg = np.average(local, axis=0, weights=sizes)
    assert np.abs(expected - fedavg).max() > 1e-4


def test_q_zero_is_the_example_weighted_mean_of_the_local_models():
    fed = Federation(_tiny(0.0))
    w = fed.params.clone()
    cohort = fed.plan_round(1).cohort.tolist()
    updates = fed.engine.train(w, cohort, 1)
    local = torch.stack([w + u.delta for u in updates])
    n = torch.tensor([u.num_examples for u in updates], dtype=torch.float32)
    assert len(set(n.tolist())) > 1
    fed.run_round()
    # The paper's reduction: with q = 0, w <- w - sum n_k L (w - w_bar_k) / sum n_k L,
    # the example-weighted mean of the local models: FedAvg.
    torch.testing.assert_close(fed.params, (n / n.sum()) @ local, rtol=1e-5, atol=1e-6)


def test_q_zero_is_fedavg_over_several_rounds_on_unequal_clients():
    raw = _tiny(0.0, clients=4).model_dump(mode="json")
    qffl = privfl.run(config_from_dict(raw), out=None, progress=False)
    fed = raw["federation"]
    raw["federation"] = {**fed, "server_optimizer": "fedavg"}
    raw["federation"].pop("server_q")
    fedavg = privfl.run(config_from_dict(raw), out=None, progress=False)
    torch.testing.assert_close(qffl.params, fedavg.params, rtol=1e-5, atol=1e-6)


def test_aggregate_reduces_to_the_weighted_mean_at_q_zero_and_reweights_by_loss_otherwise():
    g = torch.Generator().manual_seed(0)
    deltas = torch.randn(5, 7, generator=g)
    losses = np.array([0.1, 0.5, 1.0, 2.0, 4.0])
    move, _ = qffl_aggregate(deltas, losses, 0.0, 0.05)
    torch.testing.assert_close(move, deltas.mean(0))
    n = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    move, _ = qffl_aggregate(deltas, losses, 0.0, 0.05, n)
    torch.testing.assert_close(move, torch.from_numpy(n / n.sum()).float() @ deltas)
    # Equal deltas: the move is the delta times L sum F^q / sum h, < 1 for q > 0.
    same = deltas[:1].repeat(5, 1)
    move, sum_h = qffl_aggregate(same, losses, 2.0, 0.05)
    f = losses + LOSS_EPS
    scale = 20 * np.sum(f**2) / sum_h
    torch.testing.assert_close(move, same[0] * float(scale))
    assert 0 < scale < 1


def test_start_losses_are_each_clients_exact_training_loss():
    fed = Federation(_tiny(1.0, clients=3))
    clients = [2, 0, 1]
    got = client_start_losses(fed.model, fed.spec, fed.params, fed.data, clients)
    fed.spec.load_into(fed.model, fed.params)
    for cid, f in zip(clients, got, strict=True):
        x, y = fed.data.client_train(cid)
        with torch.no_grad():
            direct = torch.nn.functional.cross_entropy(fed.model(x), y).item()
        assert f == pytest.approx(direct, rel=1e-6)


def test_only_the_qffl_aggregator_asks_for_start_losses(make_config):
    plain = Federation(make_config())
    assert not getattr(plain.stages.aggregator, "needs_start_loss", False)
    rec = plain.run_round()
    assert "qffl_h_sum" not in rec
    fed = Federation(_tiny(1.0))
    assert isinstance(fed.stages.aggregator, QFFLAggregator)


def test_an_update_without_its_loss_is_an_error_not_a_silent_step():
    agg = QFFLAggregator(1.0, 0.1)
    batch = UpdateBatch(np.arange(2), torch.zeros(2, 3), np.ones(2))
    fed = Federation(_tiny(1.0))
    from privfl.stages import RoundContext

    ctx = RoundContext(1, 0, fed.params, fed.spec, 3, np.arange(2), fed.ledger)
    with pytest.raises(PrivflError, match=START_LOSS):
        agg.aggregate(batch, ctx)


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        ({"defense": {"secagg": {}}}, ["qffl", "defense.secagg", "loss"]),
        ({"defense": {"robust": {"rule": "median"}}}, ["qffl", "defense.robust"]),
        (
            {"defense": {"dp": {"mode": "central", "noise_multiplier": 1.0}}},
            ["qffl", "defense.dp", "loss"],
        ),
        ({"defense": {"dp": {"mode": "local", "noise_multiplier": 1.0}}}, ["qffl", "clear"]),
    ],
)
def test_combinations_that_hide_or_replace_the_losses_are_refused(extra, fragments):
    raw = _tiny(1.0, clients=6).model_dump(mode="json", exclude_none=True)
    with pytest.raises(ConfigError) as info:
        config_from_dict({**raw, **extra})
    for fragment in fragments:
        assert fragment in str(info.value)


def test_qffl_settings_are_checked():
    raw = _tiny(1.0).model_dump(mode="json", exclude_none=True)
    with pytest.raises(ConfigError, match="server_q"):
        config_from_dict({**raw, "federation": {**raw["federation"], "server_q": -1}})
    with pytest.raises(ConfigError, match="server_lr"):
        config_from_dict({**raw, "federation": {**raw["federation"], "server_lr": 0.5}})
    fedavg = {k: v for k, v in raw["federation"].items() if k != "server_q"}
    with pytest.raises(ConfigError, match="server_q"):
        config_from_dict(
            {**raw, "federation": {**fedavg, "server_optimizer": "fedavg", "server_q": 2}}
        )
