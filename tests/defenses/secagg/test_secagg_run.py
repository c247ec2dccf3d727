"""Secure aggregation inside a federated run: same model as without it (within the
quantization bound), deterministic metrics despite random keys, aborted rounds leave the model
unchanged; and the config rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import privfl
from privfl.config import Config, config_from_dict
from privfl.defenses.secagg.channel import SecAggChannel, mean_error_bound
from privfl.errors import ConfigError
from privfl.federation import Federation


def _secagg(make_config, rounds=1, **secagg):
    return make_config(
        federation={"rounds": rounds, "clients_per_round": 6},
        defense={"secagg": secagg},
    )


def test_one_round_gives_the_plain_model_within_the_quantization_bound(make_config):
    cfg = _secagg(make_config)
    fed = Federation(cfg)
    assert isinstance(fed.stages.channel, SecAggChannel)
    seen = {}
    transmit = fed.stages.channel.transmit

    def spy(batch, aggregator, ctx):
        seen["batch"], seen["result"] = batch, transmit(batch, aggregator, ctx)
        return seen["result"]

    fed.stages.channel.transmit = spy
    start = fed.params.clone()
    fed.run_round()
    batch, channel = seen["batch"], fed.stages.channel
    x = batch.deltas.numpy().astype(np.float64)
    assert np.abs(x).max() < channel.config.clip  # nothing clipped: compare with plain FedAvg
    reference = (batch.weights[:, None] * x).sum(0) / batch.weights.sum()
    values, weights = channel.codecs(len(batch))
    bound = mean_error_bound(values, weights, batch.weights.sum() / channel.max_weight, len(batch))
    got = (fed.params - start).numpy().astype(np.float64)
    assert np.all(np.abs(got - reference) <= bound + 2**-23 * (np.abs(reference) + 1))
    plain = privfl.run(
        make_config(federation={"rounds": 1, "clients_per_round": 6}), out=None, progress=False
    )
    np.testing.assert_allclose(fed.params.numpy(), plain.params.numpy(), atol=1e-6)
    assert seen["result"].view.updates is None


def test_secagg_run_learns_the_plain_model(make_config):
    plain = privfl.run(
        make_config(federation={"rounds": 3, "clients_per_round": 6}), out=None, progress=False
    )
    sa = privfl.run(_secagg(make_config, rounds=3), out=None, progress=False)
    assert abs(plain.final_accuracy - sa.final_accuracy) <= 0.01
    assert torch.allclose(plain.params, sa.params, atol=1e-5)
    assert all(
        m["bytes_up"] > p["bytes_up"] for m, p in zip(sa.metrics, plain.metrics, strict=True)
    )


def test_metrics_are_deterministic_with_dropouts(make_config, tmp_path):
    # k = 2 is below the safe degree for 6 clients: a research run (allow_insecure)
    cfg = _secagg(make_config, rounds=2, dropout=0.35, neighbours=2, allow_insecure=True)
    a = privfl.run(cfg.model_copy(update={"name": "a"}), out=tmp_path, progress=False)
    b = privfl.run(cfg.model_copy(update={"name": "b"}), out=tmp_path, progress=False)
    text_a = (tmp_path / "a" / "metrics.jsonl").read_bytes()
    assert text_a == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    assert torch.equal(a.params, b.params)
    dropped = [c for m in a.metrics for c in m["dropped"]]
    vanished = [c for m in a.metrics for ids in m["secagg_vanished"].values() for c in ids]
    assert len(vanished) == 2 * 2 and set(dropped) <= set(vanished)  # 35% of 6, each round
    # a resolved config.toml of a secagg run loads back to the same config
    assert privfl.load_config(tmp_path / "a" / "config.toml") == cfg.model_copy(
        update={"name": "a"}
    )


def test_aborted_rounds_leave_the_model_unchanged(make_config, caplog):
    cfg = _secagg(make_config, rounds=2, threshold=1.0, dropout=0.2)
    fed = Federation(cfg)
    start = fed.params.clone()
    for _ in range(2):
        record = fed.run_round()
        assert record["aggregated"] == 0 and "fewer than" in record["secagg_abort"]
    assert torch.equal(fed.params, start)
    # the log names the protocol's reason, not a generic "no surviving updates"
    aborts = [r.getMessage() for r in caplog.records if "no aggregate" in r.getMessage()]
    assert len(aborts) == 2 and all("secagg_abort: " in m and "fewer than" in m for m in aborts)


def test_config_rules():
    with pytest.raises(ConfigError, match=r"defense\.secagg\.threshold must be in \(0\.5, 1\]"):
        config_from_dict({"defense": {"secagg": {"threshold": 0.5}}})
    with pytest.raises(ConfigError, match="even number"):
        config_from_dict({"defense": {"secagg": {"neighbours": 5}}})
    with pytest.raises(ConfigError, match="corruption applies only when neighbours is 'auto' or"):
        config_from_dict({"defense": {"secagg": {"corruption": 0.2}}})
    with pytest.raises(ConfigError, match="allow_insecure applies only when neighbours is an"):
        config_from_dict({"defense": {"secagg": {"neighbours": "auto", "allow_insecure": True}}})
    # corruption goes with an explicit k (the assumption the safe k comes from); k = 4 is
    # below it for a cohort of 10, so only a research run takes it
    with pytest.raises(ConfigError, match="below the smallest safe degree k = 9"):
        config_from_dict({"defense": {"secagg": {"neighbours": 4, "corruption": 0.2}}})
    explicit = {"neighbours": 4, "corruption": 0.2, "allow_insecure": True}
    assert config_from_dict({"defense": {"secagg": explicit}}).defense.secagg.corruption == 0.2
    with pytest.raises(ConfigError, match="threshold applies only when neighbours is not"):
        config_from_dict({"defense": {"secagg": {"neighbours": "auto", "threshold": 0.7}}})
    with pytest.raises(ConfigError, match="unknown key 'defense.secagg.treshold'"):
        config_from_dict({"defense": {"secagg": {"treshold": 0.7}}})
    with pytest.raises(ConfigError, match="bits"):
        config_from_dict({"defense": {"secagg": {"bits": 8}}})
    ok = config_from_dict(
        {
            "data": {"clients": 100},
            "federation": {"clients_per_round": 100},
            "defense": {"secagg": {"neighbours": 44, "dropout": 0.1}},
        }
    )
    assert ok.defense.secagg.neighbours == 44  # the safe degree for 100 clients at 10%


def test_secagg_with_a_robust_aggregator_is_rejected():
    from privfl.config import config_from_dict
    from privfl.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be combined with defense.secagg"):
        config_from_dict({"defense": {"secagg": {}, "robust": {"rule": "median"}}})
    assert Config(defense={"secagg": {}}).defense.secagg is not None


def test_the_example_config_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "examples" / "secagg.toml"
    cfg = privfl.load_config(path)
    assert cfg.defense.secagg is not None and cfg.defense.secagg.dropout == 0.1
