"""D-PSGD's round loop (privfl.decentralized.runner) against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import privfl
from privfl.config import config_from_dict
from privfl.decentralized.runner import DecentralizedRun, consensus_distance
from privfl.decentralized.topology import build_gossip
from privfl.engine import SequentialEngine
from privfl.federation import Federation
from privfl.runfolder import RunFile, RunFolder

N = 8


def _config(topology: str, **federation) -> privfl.Config:
    raw = {
        "name": "d",
        "seed": 1,
        # 1000 examples, 800 for training: 100 per client, so FedAvg's weights are equal
        "data": {
            "name": "synthetic",
            "samples": 1000,
            "shape": [12],
            "classes": 4,
            "partition": "iid",
            "clients": N,
        },
        "model": {"name": "mlp", "hidden": [16]},
        "federation": {
            "rounds": 3,
            "clients_per_round": N,
            "local_epochs": 1,
            "batch_size": 25,
            "lr": 0.1,
            "topology": topology,
            **federation,
        },
    }
    return config_from_dict(raw)


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_complete_graph_with_uniform_mixing_is_fedavg_with_equal_weights(engine):
    mix = {"mixing": "uniform"}
    dec = DecentralizedRun(_config("complete", engine=engine, decentralized=mix))
    star = Federation(_config("star", engine=engine))
    sizes = {len(i) for i in star.data.partition.indices}
    assert sizes == {100}  # equal example counts: the star's weighted mean is the plain mean
    for _ in range(3):
        dec.run_round()
        star.run_round()
        # every node holds FedAvg's model, and so does their average
        torch.testing.assert_close(dec.nodes, star.params.expand(N, -1), atol=2e-6, rtol=0)
        torch.testing.assert_close(dec.params, star.params, atol=2e-6, rtol=0)
    assert dec.metrics[-1]["consensus_distance"] < 1e-9
    assert dec.metrics[-1]["test_accuracy"] == pytest.approx(star.metrics[-1]["test_accuracy"])


def test_a_ring_round_is_local_training_then_one_mixing_product():
    cfg = _config("ring", engine="sequential", decentralized={"gossip_steps": 2})
    run = DecentralizedRun(cfg)
    run.run_round()  # every node now holds a different model
    x0 = run.nodes.clone()
    # independently: each node trains from its own row with the plain sequential engine,
    # then the mixing matrix (Metropolis on the 8-ring: 1/3 each) is applied twice
    engine = SequentialEngine(run.make_model, run.spec, run.data, run.stages.trainer, cfg.seed)
    ups = engine.train(x0.mean(0), list(range(N)), 2, starts=x0)
    sent = x0 + torch.stack([u.delta for u in ups])
    w = torch.from_numpy(build_gossip("ring", N, cfg.seed, mixing="metropolis", p=None).mixing)
    expected = (w @ w @ sent.double()).float()
    rec = run.run_round()
    torch.testing.assert_close(run.nodes, expected, atol=1e-6, rtol=0)
    # the metrics: consensus distance by hand, bytes = 2 steps x 16 messages x dim x 4
    xbar = expected.double().mean(0)
    by_hand = float(((expected.double() - xbar) ** 2).sum(1).mean())
    assert rec["consensus_distance"] == pytest.approx(by_hand, rel=1e-6)
    assert rec["consensus_distance"] > 0
    assert rec["bytes_per_node"] == 2 * 2 * run.spec.dim * 4
    accs = []
    for row in run.nodes:
        run.spec.load_into(run.model, row)
        accs.append(privfl.evaluation.evaluate(run.model, *_test(run))[1])
    assert rec["node_accuracy_mean"] == pytest.approx(np.mean(accs))
    assert rec["node_accuracy_worst10"] == pytest.approx(min(accs))  # ceil(0.8) = 1 node


def _test(run):
    t = run.data.bundle.test
    return t.x, t.y


def test_consensus_distance_is_the_mean_squared_distance_to_the_average():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]])
    # average (1, 1); squared distances 2, 2, 4
    assert consensus_distance(x) == pytest.approx(8 / 3)


def test_a_resumed_ring_run_gives_the_uninterrupted_numbers(tmp_path):
    cfg = _config("ring", rounds=3).model_copy(update={"name": "c"})
    full = privfl.run(cfg, out=tmp_path / "a", progress=False)
    fed = DecentralizedRun(cfg, folder=RunFolder.create(tmp_path / "b", "c"))
    fed.folder.write_toml(RunFile.CONFIG, cfg.to_toml_dict())
    fed.run_round()
    fed.run_round()
    resumed = privfl.resume(tmp_path / "b" / "c", progress=False)
    assert torch.equal(resumed.params, full.params)
    assert [m["consensus_distance"] for m in resumed.metrics] == [
        m["consensus_distance"] for m in full.metrics
    ]


def test_sampled_participation_trains_only_the_sampled_nodes_and_every_node_gossips():
    dec = {"participation": "sampled"}
    run = DecentralizedRun(_config("ring", clients_per_round=3, decentralized=dec))
    x0 = run.nodes.clone()
    rec = run.run_round()
    assert len(rec["clients"]) == 3
    # node models before mixing: the untrained nodes kept the initial model
    w = torch.from_numpy(run.gossip.mixing).float()
    sent = torch.linalg.solve(w.double(), run.nodes.double()).float()
    idle = np.setdiff1d(np.arange(N), rec["clients"])
    torch.testing.assert_close(sent[idle], x0[idle], atol=1e-5, rtol=0)
    assert not torch.allclose(sent[rec["clients"]], x0[rec["clients"]], atol=1e-3)


def test_clients_per_round_other_than_all_nodes_is_refused():
    with pytest.raises(privfl.errors.ConfigError, match="every node"):
        _config("ring", clients_per_round=3)


def _sent(run, x0):
    """What every node sent in the round just run: ``W^{-1} X`` (W invertible here), minus
    where it started: each node's message's update."""
    w = torch.from_numpy(run.gossip.mixing)
    return torch.linalg.solve(w, run.nodes.double()).float() - x0


def test_malicious_nodes_send_their_negated_update():
    cfg = _config("ring", engine="sequential")
    attack = {"poisoning": {"method": "sign_flip", "fraction": 0.25}}
    bad = DecentralizedRun(cfg.model_copy(update={"attack": type(cfg.attack)(**attack)}))
    clean = DecentralizedRun(cfg)
    x0 = bad.nodes.clone()
    bad.run_round()
    clean.run_round()
    malicious = bad.stages.threats[0][1].malicious
    honest = np.setdiff1d(np.arange(N), malicious)
    got, want = _sent(bad, x0), _sent(clean, x0)
    assert len(malicious) == 2
    torch.testing.assert_close(got[malicious], -want[malicious], atol=1e-4, rtol=0)
    torch.testing.assert_close(got[honest], want[honest], atol=1e-4, rtol=0)


def test_the_curious_node_sees_its_neighbours_update_and_local_dp_noises_every_message():
    dp = {"dp": {"mode": "local", "noise_multiplier": 1.0, "clip": 0.5}}
    cfg = _config("ring", engine="sequential")
    run = DecentralizedRun(cfg.model_copy(update={"defense": type(cfg.defense)(**dp)}))
    seen = []

    class Spy(privfl.stages.Observer):
        def observe(self, view, ctx):
            seen.append(view)
            return []

    run.stages.observers.append(Spy())
    x0 = run.nodes.clone()
    run.run_round()
    (view,) = seen
    assert run.watched == 1 and view.client_ids.tolist() == [1] and view.channel == "gossip"
    torch.testing.assert_close(view.global_params, x0[1])
    torch.testing.assert_close(view.updates.deltas[0], _sent(run, x0)[1], atol=1e-4, rtol=0)
    # local DP: one event per node (its own budget), noise far above the clip
    parties = sorted({e.party for e in run.ledger.events})
    assert parties == sorted(privfl.ledger.client_party(i) for i in range(N))
    assert view.updates.deltas[0].norm() > 2 * 0.5


@pytest.mark.parametrize(
    "federation, words",
    [
        ({"decentralized": {"p": 0.3}}, "needs federation.decentralized.p|applies only when"),
        ({"topology": "erdos_renyi"}, "needs federation.decentralized.p"),
        ({"topology": "ring", "decentralized": {"p": 0.3}}, "p applies only when"),
        ({"topology": "ring", "decentralized": {"observer": N}}, "observer = 8 is not a node"),
        ({"topology": "star", "decentralized": {"gossip_steps": 2}}, "topology is not 'star'"),
        ({"topology": "ring", "engine": "ray"}, "ray"),
    ],
)
def test_bad_decentralized_settings_are_refused_with_the_reason(federation, words):
    raw = _config("star").to_toml_dict()
    base = {k: v for k, v in raw["federation"].items() if k != "engine"}
    raw["federation"] = {**base, **federation}
    with pytest.raises(privfl.errors.ConfigError, match=words):
        config_from_dict(raw)


def test_a_peer_to_peer_run_trains_its_nodes_on_the_vectorized_engine_by_default():
    assert _config("ring").federation.engine == "auto"
    assert DecentralizedRun(_config("ring")).engine.trains_with == "vectorized"
    assert _config("ring", engine="sequential").federation.engine == "sequential"


@pytest.mark.parametrize("level", ["char", "word"])
def test_a_text_run_records_the_star_runs_text_metrics(level):
    data = {"name": "pydoc", "partition": "natural", "clients": 4, "seq_len": 8, "level": level}
    data |= {"stride": 64} if level == "char" else {"vocab_size": 200}
    model = {"name": "char_lstm" if level == "char" else "word_lstm", "hidden": 16}
    model |= {"layers": 1} if level == "char" else {"embedding_dim": 8, "projection": 8}
    fed = {
        "rounds": 1,
        "clients_per_round": 4,
        "local_steps": 2,
        "batch_size": 8,
        "topology": "ring",
    }
    cfg = config_from_dict(
        {"name": "lm", "seed": 3, "data": data, "model": model, "federation": fed}
    )
    run = DecentralizedRun(cfg)
    rec = run.run_round()
    # independently: the average model's logits on every test window, by hand
    test, vocab = run.data.bundle.test, run.data.bundle.vocab

    def logits_of(params):
        run.spec.load_into(run.model, params)
        run.model.eval()
        with torch.no_grad():
            return torch.cat([run.model(xb) for xb in test.x.split(64)]).double()

    logits = logits_of(run.params)
    losses = torch.nn.functional.cross_entropy(logits, test.y, reduction="none")
    skip = [vocab.pad, vocab.oov, vocab.bos, vocab.eos] if level == "word" else []
    keep = ~torch.isin(test.y, torch.tensor([i for i in skip if i is not None], dtype=test.y.dtype))
    assert keep.all() == (level == "char")
    hits = (logits.argmax(1) == test.y)[keep].double()
    assert rec["test_loss"] == pytest.approx(float(losses.mean()), rel=1e-5)
    assert rec["test_perplexity"] == pytest.approx(np.exp(float(losses.mean())), rel=1e-5)
    assert rec["test_accuracy"] == pytest.approx(float(hits.mean()))
    # each node's accuracy counts the same targets (words: without pad, oov, bos, eos)
    nodes = [float((logits_of(row).argmax(1) == test.y)[keep].double().mean()) for row in run.nodes]
    assert rec["node_accuracy_mean"] == pytest.approx(np.mean(nodes))
