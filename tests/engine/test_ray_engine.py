"""The Ray engine against the sequential one: a local Ray instance with 2 CPUs (two actors)
trains the same model, client by client, as the sequential engine (slow: Ray's start-up)."""

from __future__ import annotations

import pytest
import torch
from conftest import small_config

from privfl.errors import ConfigError
from privfl.federation import Federation


def _engine(cfg, engine, ray=None):
    fed = cfg.federation.model_copy(update={"engine": engine, "ray": ray})
    return cfg.model_copy(update={"federation": fed})


def test_ray_section_only_with_the_ray_engine():
    with pytest.raises(ConfigError, match="federation.ray applies only when engine = 'ray'"):
        small_config(federation={"engine": "sequential", "ray": {"address": "auto"}})


def test_the_actors_train_on_their_cpus_and_refuse_an_explicit_gpu(monkeypatch, caplog):
    """Ray's actors here hold one CPU each and no GPU: a config that says cuda is refused, not
    trained on the CPU; auto that found a GPU trains on the CPUs and says so."""
    from privfl.engine.ray import _actor_device

    # Through the run: the engine is built (and refuses) before Ray or CUDA is touched.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="device = 'cuda': the ray engine trains"):
        Federation(small_config(federation={"engine": "ray", "device": "cuda"}))
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    fed = small_config().federation
    assert _actor_device(cpu, fed) == cpu
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=f"device = '{name}': the ray engine trains"):
            _actor_device(gpu, fed.model_copy(update={"device": name}))
    with caplog.at_level("INFO", logger="privfl.engine.ray"):
        assert _actor_device(gpu, fed.model_copy(update={"device": "auto"})) == cpu
    assert "actors train on their CPUs" in caplog.text


@pytest.mark.slow
def test_local_ray_instance_gives_the_sequential_model():
    pytest.importorskip("ray")
    from privfl.engine.ray_config import RayConfig

    cfg = small_config(
        data={"partition": "dirichlet", "alpha": 0.5, "clients": 12},
        federation={"rounds": 3, "clients_per_round": 5, "batch_size": 8},
    )
    seq = Federation(_engine(cfg, "sequential"))
    ray_fed = Federation(_engine(cfg, "ray", ray=RayConfig(num_cpus=2)))
    try:
        assert len(ray_fed.engine._actors) == 2
        for _ in range(cfg.federation.rounds):
            a, b = seq.run_round(), ray_fed.run_round()
            assert a["clients"] == b["clients"]
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    finally:
        ray_fed.finish()  # closes the engine: actors killed, the local instance shut down
    assert torch.allclose(ray_fed.params, seq.params, atol=1e-6, rtol=0)
    assert (seq.params - Federation(cfg).params).abs().max() > 1e-2
    import ray

    assert not ray.is_initialized()
