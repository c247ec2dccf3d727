"""``[federation] device``: what each value means on this machine, the one-line refusal of a
CUDA device that is not there (exit 2, no run folder), and, where a GPU exists (tests marked
``gpu``), that a run on it learns the CPU run's model."""

from __future__ import annotations

import pytest
import torch
from conftest import small_config
from typer.testing import CliRunner

import privfl
from privfl.cli import app
from privfl.device import generator_on, resolve_device
from privfl.errors import ConfigError
from privfl.federation import Federation
from privfl.seeding import torch_generator


def test_cpu_and_auto_without_cuda_resolve_to_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_picks_cuda_where_it_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_a_config_error_naming_the_key(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=rf"federation.device = '{name}'.*no CUDA device"):
        resolve_device(name)


def test_a_cuda_index_past_the_machines_devices_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match="has 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "CPU", "mps"])
def test_other_values_fail_config_validation(bad):
    with pytest.raises(ConfigError, match="federation.device"):
        small_config(federation={"device": bad})


def test_the_cli_refuses_cuda_without_one_in_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["run", "examples/quickstart.toml", "--out", str(tmp_path), "-q"]
    r = CliRunner().invoke(app, [*args, "--set", "name=c", "--set", "federation.device=cuda"])
    assert r.exit_code == 2
    assert "no CUDA device" in r.output
    assert not (tmp_path / "c").exists()


def test_on_the_cpu_the_generator_is_the_clients_own_stream():
    g = torch_generator(0, "client", 1, 2)
    assert generator_on(torch.device("cpu"), g) is g


def test_a_device_generator_draws_nothing_from_the_clients_stream(monkeypatch):
    # The CUDA branch of generator_on, run here with a CPU generator standing in for the
    # device's (torch.Generator(device=...) is the only device call in it). Were it to draw
    # its seed from the stream, DP-SGD's Poisson lots (the stream's later draws) would shift
    # on a GPU and the run train other examples than the CPU run.
    real = torch.Generator
    monkeypatch.setattr(torch, "Generator", lambda device=None: real())
    g = torch_generator(0, "client", 1, 2)
    before = g.get_state()
    on_gpu = generator_on(torch.device("cuda"), g)
    assert on_gpu is not g
    assert torch.equal(g.get_state(), before)
    again = generator_on(torch.device("cuda"), torch_generator(0, "client", 1, 2))
    other = generator_on(torch.device("cuda"), torch_generator(0, "client", 1, 3))
    first = torch.randn(4, generator=on_gpu)
    assert torch.equal(first, torch.randn(4, generator=again))  # reproducible from the seed
    assert not torch.equal(first, torch.randn(4, generator=other))  # each client its own


def test_device_cpu_gives_the_default_runs_numbers():
    runs = []
    for device in ("auto", "cpu"):
        fed = Federation(small_config(federation={"device": device}))
        fed.run_round()
        runs.append(fed.params)
    if not torch.cuda.is_available():  # then auto is the CPU
        assert torch.equal(*runs)


@pytest.mark.gpu
@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
@pytest.mark.parametrize("dp", [None, "sample", "central"])
def test_a_run_on_the_gpu_learns_the_cpu_runs_model(engine, dp):
    extra = {} if dp is None else {"defense": {"dp": {"mode": dp, "noise_multiplier": 0.0}}}
    if dp == "sample":
        extra["defense"]["dp"]["clip"] = 1e6  # noise 0, no clipping: plain SGD on Poisson lots
    params = {}
    for device in ("cpu", "cuda"):
        cfg = small_config(federation={"device": device, "engine": engine}, **extra)
        fed = Federation(cfg)
        for _ in range(2):
            record = fed.run_round()
        assert fed.engine.device.type == device
        assert fed.params.device.type == "cpu"  # updates travel as CPU vectors
        params[device] = (fed.params, record["test_accuracy"])
    assert torch.allclose(params["cpu"][0], params["cuda"][0], atol=1e-4)
    assert params["cpu"][1] == pytest.approx(params["cuda"][1], abs=0.02)


@pytest.mark.gpu
def test_the_quickstart_runs_on_the_gpu_end_to_end(tmp_path):
    r = privfl.run(
        "examples/quickstart.toml",
        out=tmp_path,
        overrides=["federation.device=cuda", "federation.rounds=2"],
        progress=False,
    )
    assert r.metrics[-1]["test_accuracy"] > 0.5


def test_a_config_refused_while_the_run_is_built_leaves_no_folder(tmp_path):
    # An attacked round past the run's last is refused when the plan is built.
    args = ["run", "examples/quickstart.toml", "--out", str(tmp_path), "-q", "--set", "name=b"]
    late = ["--set", "federation.rounds=2", "--set", "attack.inversion.rounds=[5]"]
    r = CliRunner().invoke(app, [*args, *late])
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "b").exists()
