"""Every workload ``[federation] device = "cuda"`` reaches, run on the GPU beside the same run
on the CPU (tests marked ``gpu``: skipped where CUDA is missing; docs/design.md, "Device paths
audited without a GPU", says which paths were only reasoned about).

Each test is a close copy of a CPU test that passes (named in its comment), run once per
device. The tolerances, unless a test says otherwise: the CPU's and the GPU's float32 kernels
sum in other orders, as the vectorized and sequential engines do, which the engine tests hold
to ``atol = 2e-5`` after two or three rounds (tests/engine/test_vectorized_engine.py,
test_batched_cnn.py); ``1e-4`` leaves five times that, as test_device.py's MLP test does.
Accuracies may differ by the few test examples on a decision boundary (``abs = 0.02``).

``PRIVFL_GPU_TEST_DEVICE=cpu`` runs the second half on the CPU too: a dry run of the tests'
own logic on a machine without a GPU (with a plugin that drops the ``gpu`` skip).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import small_config

import privfl
from privfl.attacks.inversion.target import InversionTarget
from privfl.config import apply_overrides, config_from_dict
from privfl.decentralized.runner import runner_class

pytestmark = pytest.mark.gpu


def _twin(path: str):
    """The CPU test module ``tests/<path>`` whose setup a test here runs on the GPU, imported
    as pytest's default ("prepend") import mode imports it: its folder on ``sys.path``, by its
    file name. So it is the module object pytest collects, its own imports of its neighbours
    resolve, and no top-level package of this repository (``attacks``) shadows its folder.
    Bound to a name without ``test``, so pytest does not collect its tests here again."""
    folder = str(Path(__file__).parent / Path(path).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(Path(path).stem)


batched_cnn = _twin("engine/test_batched_cnn.py")
decentralized = _twin("decentralized/test_runner.py")
heterogeneous = _twin("heterogeneity/test_heterogeneous_clients.py")
qffl = _twin("fairness/test_qffl.py")
contributions = _twin("incentives/test_contributions.py")
inversion = _twin("attacks/inversion/test_inversion_observer.py")
text_runs = _twin("attacks/inversion/test_inversion_text_runs.py")
membership = _twin("attacks/membership/test_membership_client.py")
one_run_audit = _twin("audit/test_one_run_audit.py")

#: The device the second run of each test uses.
OTHER = os.environ.get("PRIVFL_GPU_TEST_DEVICE", "cuda")
DEVICES = ("cpu", OTHER)


@pytest.fixture(autouse=True)
def full_float32():
    """cuDNN runs float32 convolutions (and RNNs) in TF32 by default on Ampere and later: a
    10-bit mantissa, ~1e-3 relative error a product, which no tolerance argued from float32
    rounding covers (the CPU has no such mode). These comparisons run in full float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _with_device(cfg: privfl.Config, device: str, **federation) -> privfl.Config:
    fed = cfg.federation.model_copy(update={"device": device, **federation})
    return cfg.model_copy(update={"federation": fed})


def _runs(cfg: privfl.Config, rounds: int | None = None, **federation):
    """The run of ``cfg`` on each device after ``rounds`` rounds (all by default): (cpu, gpu)."""
    out = []
    for device in DEVICES:
        c = _with_device(cfg, device, **federation)
        run = runner_class(c)(c)
        for _ in range(c.federation.rounds if rounds is None else rounds):
            run.run_round()
        out.append(run)
    return out


def _same_model(cpu, gpu, atol: float = 1e-4) -> None:
    assert gpu.engine.device.type == OTHER and gpu.params.device.type == "cpu"
    assert (cpu.params - type(cpu)(cpu.config).params).abs().max() > 1e-3  # it trained
    assert torch.allclose(cpu.params, gpu.params, atol=atol, rtol=0)
    for a, b in zip(cpu.metrics, gpu.metrics, strict=True):
        assert a["clients"] == b["clients"]
        if a.get("test_accuracy") is not None:
            assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=0.02)


# ---------------------------------------------------------------- training, both engines

CNN = batched_cnn.CNN


@pytest.mark.parametrize("norm", ["none", "group"])
@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_a_cnn_on_the_gpu_learns_the_cpu_runs_model(engine, norm):
    # tests/engine/test_batched_cnn.py::test_vectorized_cnn_gives_the_sequential_model, "plain"
    cfg = batched_cnn._cnn_config("plain", norm)
    cpu, gpu = _runs(cfg, engine=engine)
    assert gpu.engine.trains_with == engine  # the batched CNN kernel, not a fallback
    _same_model(cpu, gpu)
    for a, b in zip(cpu.metrics, gpu.metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


@pytest.mark.parametrize(
    ("engine", "noise"), [("sequential", 0.0), ("vectorized", 0.0), ("vectorized", 1.0)]
)
def test_dp_sgd_on_a_cnn_on_the_gpu_learns_the_cpu_runs_model(engine, noise):
    # tests/engine/test_batched_cnn.py::test_vectorized_cnn_dp_sgd_gives_the_opacus_model
    # (GroupNorm). The Poisson lots come from the clients' CPU streams on both devices; the
    # vectorized engine's noise too (the same numbers), Opacus' on the device (other
    # numbers: see the next test), so the sequential engine is compared without noise.
    cfg = batched_cnn._dp_cnn_config(noise, "group")
    cpu, gpu = _runs(cfg, engine=engine)
    assert gpu.engine.trains_with == engine
    _same_model(cpu, gpu)
    for a, b in zip(cpu.metrics, gpu.metrics, strict=True):
        assert a["examples"] == b["examples"]
        # a per-example norm within rounding of the clip bound may fall on either side
        assert a["dp_clipped_fraction"] == pytest.approx(b["dp_clipped_fraction"], abs=0.02)


def test_opacus_noise_on_the_gpu_is_drawn_there_and_the_lots_stay_the_cpus():
    # As above, sequential with noise: Opacus draws its noise from a device generator
    # seeded from the client's stream (privfl.device.generator_on), so the model differs
    # from the CPU's, but the lots (and so the accounting) do not, and it is reproducible.
    cfg = small_config(
        model={**CNN, "norm": "group"},
        data={"partition": "dirichlet", "alpha": 0.5, "clients": 10},
        federation={"rounds": 2, "clients_per_round": 3, "batch_size": 12, "lr": 0.5},
        defense={"dp": {"mode": "sample", "noise_multiplier": 1.0, "clip": 0.3}},
    )
    cpu, gpu = _runs(cfg, engine="sequential")
    again = _runs(cfg, engine="sequential")[1]
    assert gpu.engine.device.type == OTHER
    assert cpu.ledger.events == gpu.ledger.events
    assert torch.isfinite(gpu.params).all()
    assert torch.allclose(gpu.params, again.params, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dp", [None, "sample"])
@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_an_lstm_on_the_gpu_learns_the_cpu_runs_model(engine, dp):
    # tests/data/test_text_models.py::test_a_run_on_the_bundled_text_reports_perplexity
    # (char); the vectorized engine hands token windows to the sequential loop. DP-SGD
    # trains Opacus' DPLSTM, without noise and clipping (plain SGD on Poisson lots).
    defense = {} if dp is None else {"dp": {"mode": dp, "noise_multiplier": 0.0, "clip": 1e6}}
    cfg = privfl.Config(
        name="lm",
        data={
            "name": "pydoc",
            "partition": "natural",
            "clients": 6,
            "seq_len": 8,
            "level": "char",
            "stride": 64,
        },
        model={"name": "char_lstm", "hidden": 16, "layers": 1},
        federation={"rounds": 1, "clients_per_round": 2, "local_steps": 2, "batch_size": 8},
        defense=defense,
    )
    cpu, gpu = _runs(cfg, engine=engine)
    assert gpu.engine.trains_with == "sequential"
    _same_model(cpu, gpu)
    a, b = cpu.metrics[-1], gpu.metrics[-1]
    assert a["test_perplexity"] == pytest.approx(b["test_perplexity"], rel=1e-3)


# ------------------------------------------------------- DP on the server and the client


def test_local_dp_and_dp_ftrl_on_the_gpu_learn_the_cpu_runs_model():
    # tests/defenses/dp/test_local_dp.py::test_local_run_accounts_every_participation_...
    # and tests/test_ftrl.py::test_a_resumed_run_gives_the_uninterrupted_numbers. The noise
    # is drawn on the CPU (clients' and server's streams) and added to CPU vectors: the same
    # numbers on both devices, so only the training's rounding separates the models.
    local = small_config(
        federation={"rounds": 3, "clients_per_round": 4, "batch_size": 16},
        defense={"dp": {"mode": "local", "noise_multiplier": 2.0, "clip": 1.0}},
    )
    ftrl = small_config(
        federation={"rounds": 5, "clients_per_round": 4},
        defense={"dp": {"mode": "ftrl", "noise_multiplier": 0.8, "clip": 0.5, "restart_every": 4}},
    )
    for cfg in (local, ftrl):
        cpu, gpu = _runs(cfg)
        _same_model(cpu, gpu)
        assert cpu.ledger.events == gpu.ledger.events


def test_distributed_dp_on_the_gpu_runs_the_cpu_runs_rounds():
    # tests/test_distributed_dp.py's _ddp_config. The clients' updates are scaled, rotated
    # and randomly rounded to integers: a coordinate within float rounding of a rounding
    # boundary can land one integer step apart, so the models are compared by accuracy and
    # the rounds by their cohorts and privacy events (the server side is CPU code).
    cfg = small_config(
        defense={
            "dp": {"mode": "distributed", "noise_multiplier": 1.0},
            "secagg": {"neighbours": "all", "dropout": 0.0},
        },
        federation={"rounds": 3, "local_steps": 1, "sampling": "poisson"},
    )
    cpu, gpu = _runs(cfg)
    assert gpu.engine.device.type == OTHER
    assert cpu.ledger.events == gpu.ledger.events
    for a, b in zip(cpu.metrics, gpu.metrics, strict=True):
        assert a["clients"] == b["clients"] and a["dropped"] == b["dropped"]
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=0.05)


# ---------------------------------------------- decentralized, heterogeneous, fair runs


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_a_ring_on_the_gpu_learns_the_cpu_runs_nodes(engine):
    # tests/decentralized/test_runner.py's _config("ring", rounds=3): node models trained on
    # the device from their own starts, gossip on the CPU, every node tested on the device.
    cfg = decentralized._config("ring", rounds=3)
    cpu, gpu = _runs(cfg, engine=engine)
    _same_model(cpu, gpu)
    assert torch.allclose(cpu.nodes, gpu.nodes, atol=1e-4, rtol=0)
    a, b = cpu.metrics[-1], gpu.metrics[-1]
    assert a["node_accuracy_mean"] == pytest.approx(b["node_accuracy_mean"], abs=0.02)
    assert a["consensus_distance"] == pytest.approx(b["consensus_distance"], rel=1e-2, abs=1e-9)


def test_heterogeneous_clients_on_the_gpu_learn_the_cpu_runs_model():
    # tests/heterogeneity/test_heterogeneous_clients.py::test_deadline_drops_exactly_...
    # The steps and the stragglers come from numpy streams: the same on both devices.
    cpu, gpu = _runs(heterogeneous._deadline_config())
    _same_model(cpu, gpu)
    for a, b in zip(cpu.metrics, gpu.metrics, strict=True):
        assert a["dropped"] == b["dropped"] and a["stragglers"] == b["stragglers"]


def test_qffl_on_the_gpu_learns_the_cpu_runs_model():
    # tests/fairness/test_qffl.py's _tiny(q=1): the start losses F_k(w) are computed on the
    # device (Federation._with_start_loss), the q-FedAvg step on the CPU.
    cfg = qffl._tiny(1.0)
    cpu, gpu = _runs(cfg)
    _same_model(cpu, gpu)
    for a, b in zip(cpu.metrics, gpu.metrics, strict=True):
        assert a["qffl_start_loss_mean"] == pytest.approx(b["qffl_start_loss_mean"], rel=1e-4)


def test_contributions_on_the_gpu_are_the_cpu_runs(tmp_path):
    # tests/incentives/test_contributions.py::test_free_riders_score_nothing_and_below_...
    # (loo). The valuation is the server's (CPU code); the updates it values come from the
    # device. Validation accuracies move in steps of 1/100: a model that differs by float
    # rounding may move a value by a step or two.
    scores = []
    for i, device in enumerate(DEVICES):
        cfg = _with_device(contributions._free_riders("loo"), device)
        privfl.run(cfg, out=tmp_path / str(i), progress=False)
        out = json.loads((tmp_path / str(i) / "inc" / "contributions.json").read_text())
        scores.append({r["client"]: (r["score"], r["malicious"]) for r in out["records"]})
    cpu, gpu = scores
    assert cpu.keys() == gpu.keys()
    for c, (score, bad) in cpu.items():
        assert gpu[c][1] == bad and gpu[c][0] == pytest.approx(score, abs=0.03)
        if bad:
            assert score == gpu[c][0] == 0.0


# ---------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("targets", [1, 2])  # one target alone, two in one batch
@pytest.mark.parametrize("method", ["dlg", "idlg", "ig"])
def test_gradient_inversion_runs_on_the_gpu_and_scores_as_on_the_cpu(method, targets, monkeypatch):
    # tests/attacks/inversion/test_inversion_observer.py::test_server_side_noise_does_not_...
    # L-BFGS amplifies float rounding: on the CPU the batched and the per-target paths (which
    # differ by summation order only) end one iteration 2% apart on this config and part
    # ways after two (one converges, one stalls). So DLG and iDLG are compared after one
    # iteration (objective within 10%); IG's signed Adam steps are stable (the two CPU paths
    # agree to 0.001 dB after 30 iterations): PSNR within 1 dB. Labels recovered from the
    # bias gradient (iDLG, IG) are exact on both devices.
    seen: list[str] = []
    real = InversionTarget.from_delta.__func__

    def spy(cls, model, spec, global_params, *args, **kwargs):
        seen.append(global_params.device.type)
        return real(cls, model, spec, global_params, *args, **kwargs)

    monkeypatch.setattr(InversionTarget, "from_delta", classmethod(spy))
    iterations = 30 if method == "ig" else 1
    cfg = inversion._one_example_clients(method=method, iterations=iterations, max_targets=targets)
    cpu, gpu = _runs(cfg)
    assert seen == ["cpu"] * targets + [OTHER] * targets
    assert len(cpu.attacks) == len(gpu.attacks) == targets
    for a, b in zip(cpu.attacks, gpu.attacks, strict=True):
        assert a["client"] == b["client"] and a["status"] == b["status"] == "ok"
        assert b["objective"] == pytest.approx(a["objective"], rel=0.1)
        if method != "dlg":
            assert a["labels"] == b["labels"] and a["label_accuracy"] == b["label_accuracy"]
        if method == "ig":
            assert b["psnr"] == pytest.approx(a["psnr"], abs=1.0)


def test_the_token_attack_reads_the_gpu_runs_updates_as_the_cpus():
    # tests/attacks/inversion/test_inversion_text_runs.py's BASE (4 clients, not 10). The
    # attack reads the update on the CPU; an embedding row no example used gets a zero
    # gradient on both devices, so the exact threshold keeps precision 1 on both.
    base = [*text_runs.BASE, "federation.clients_per_round=4"]
    cfg = config_from_dict(apply_overrides({"name": "tokens"}, base))
    cpu, gpu = ([r for r in run.attacks if r["attack"] == "tokens"] for run in _runs(cfg))
    assert len(cpu) == len(gpu) == 4
    for a, b in zip(cpu, gpu, strict=True):
        assert a["client"] == b["client"] and a["threshold_rule"] == b["threshold_rule"]
        assert a["token_precision"] == b["token_precision"] == 1.0
        assert a["token_recall"] == pytest.approx(b["token_recall"], abs=0.05)


@pytest.mark.parametrize("method", ["model_replacement", "label_flip"])
def test_poisoning_and_its_clean_twin_on_the_gpu_score_as_on_the_cpu(method):
    # tests/attacks/poisoning/test_poisoning_runs.py's _cfg (backdoor: test_backdoor_metrics_
    # and_model_replacement; label flipping: test_label_flipping_wraps_the_trainer), with
    # the clean twin: the poisoned data are made on the device (PoisonedTrainer), the
    # success rate and the twin's accuracy tested there. Model replacement boosts the
    # attackers' updates (and their rounding) by n / (eta m), so the figures are compared,
    # not the weights.
    cfg = small_config(
        data={"clients": 20},
        federation={"rounds": 3, "clients_per_round": 10},
        attack={"poisoning": {"method": method}},
    )
    cpu, gpu = _runs(cfg)
    assert gpu.engine.device.type == OTHER
    for a, b in zip(cpu.metrics, gpu.metrics, strict=True):
        assert a["attackers"] == b["attackers"]
        for key in ("test_accuracy", "clean_test_accuracy", "accuracy_drop"):
            assert a[key] == pytest.approx(b[key], abs=0.03)
        if method == "model_replacement":
            assert a["attack_success_rate"] == pytest.approx(b["attack_success_rate"], abs=0.03)


@pytest.mark.parametrize("target", ["client", "global"])
def test_membership_on_the_gpu_scores_as_on_the_cpu(target):
    # tests/attacks/membership/test_membership_client.py: target client is
    # test_lira_shadow_updates_start_from_the_global_model_the_client_received (its shadows
    # are local trainings, on the device now); target global the shadow federations of
    # test_shadow_federations_train_on_the_vectorized_engine_... on its MLP (spawned runs, on
    # the device). The scores are logits on the CPU; a candidate whose score is within
    # rounding of another's may swap ranks with it: AUC within 0.05.
    if target == "client":
        attack = {"method": "lira", "shadow_models": 8, "fixed_variance": True, "candidates": 60}
        cfg = membership._config(attack, rounds=2)
    else:
        attack = {"method": "lira", "shadow_models": 4, "candidates": 20, "fixed_variance": True}
        cfg = membership._config({**attack, "target": "global"}, rounds=1, local_epochs=1)
    records = []
    for device in DEVICES:
        torch.manual_seed(0)
        (record,) = privfl.run(_with_device(cfg, device), out=None, progress=False).attacks
        records.append(record)
    a, b = records
    assert a.get("status") == b.get("status") and a["shadow_models"] == b["shadow_models"]
    assert a["auc"] == pytest.approx(b["auc"], abs=0.05)


def test_the_one_run_audit_of_a_gpu_run_guesses_as_the_cpus(tmp_path):
    # tests/audit/test_one_run_audit.py's _run(tmp_path, "open"): the canaries train on the
    # device with the clients' data; the audit scores the final model on the CPU. A canary
    # whose score is within rounding of the guess threshold may fall on either side.
    results = []
    for i, device in enumerate(DEVICES):
        cfg = _with_device(one_run_audit._config("open"), device)
        privfl.run(cfg, out=tmp_path / str(i), progress=False)
        results.append(json.loads((tmp_path / str(i) / "open" / "audit.json").read_text()))
    a, b = results
    assert a["guesses"] == b["guesses"]
    assert abs(a["correct"] - b["correct"]) <= 3
