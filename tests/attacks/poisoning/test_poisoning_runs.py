"""Poisoning in whole runs: metrics, the clean twin, resume, the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import privfl
from privfl.attacks.poisoning import POISONING_ATTACKS, PoisoningMethod, choose_malicious
from privfl.attacks.poisoning.base import PoisonedTrainer
from privfl.cli import app
from privfl.federation import Federation
from privfl.runfolder import RunFile, RunFolder

runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models: intra-op threads only add contention on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(make_config, attack, robust=None, **federation):
    defense = {"robust": robust} if robust else {}
    return make_config(
        data={"clients": 20},
        federation={"rounds": 3, "clients_per_round": 10, **federation},
        attack={"poisoning": attack},
        defense=defense,
    )


def test_registry_covers_every_method():
    assert set(POISONING_ATTACKS) == set(PoisoningMethod)
    for method, cls in POISONING_ATTACKS.items():
        assert cls.method is method


def test_metrics_attackers_exclusions_and_detection(make_config):
    cfg = _cfg(
        make_config,
        {"method": "sign_flip", "scale": 4.0, "fraction": 0.3, "clean_twin": False},
        {"rule": "krum", "f": 3},
    )
    res = privfl.run(cfg, out=None, progress=False)
    malicious = set(choose_malicious(cfg.seed, 20, 0.3).tolist())
    for rec in res.metrics:
        attackers = set(rec["attackers"])
        assert attackers == malicious & set(rec["clients"])
        excluded = set(rec["excluded"])
        assert len(excluded) == 9 and excluded <= set(rec["clients"])
        hits = len(attackers & excluded)
        assert rec["detection_precision"] == hits / 9
        assert rec["detection_recall"] == (hits / len(attackers) if attackers else None)
        assert "clean_test_accuracy" not in rec


def test_clean_twin_is_the_run_without_the_attack(make_config):
    attacked = _cfg(make_config, {"method": "ipm", "epsilon": 2.0}, {"rule": "median"})
    res = privfl.run(attacked, out=None, progress=False)
    clean_cfg = attacked.model_copy(
        update={"attack": attacked.attack.model_copy(update={"poisoning": None})}
    )
    clean = privfl.run(clean_cfg, out=None, progress=False)
    for a, c in zip(res.metrics, clean.metrics, strict=True):
        assert a["clean_test_accuracy"] == c["test_accuracy"]
        assert a["accuracy_drop"] == pytest.approx(c["test_accuracy"] - a["test_accuracy"])


def test_honest_until_the_start_round(make_config):
    cfg = _cfg(make_config, {"method": "label_flip", "fraction": 0.3, "start_round": 3})
    res = privfl.run(cfg, out=None, progress=False)
    first, second, third = res.metrics
    for rec in (first, second):
        assert rec["test_accuracy"] == rec["clean_test_accuracy"] and rec["attackers"] == []
        assert rec["accuracy_drop"] == 0.0
    assert third["attackers"] and third["test_loss"] != pytest.approx(third["train_loss"])


def test_label_flipping_wraps_the_trainer(make_config):
    cfg = _cfg(make_config, {"method": "label_flip", "clean_twin": False})
    stages = Federation(cfg).stages
    assert isinstance(stages.trainer, PoisonedTrainer) and not stages.client_transforms


def test_resume_continues_the_attacked_run_and_its_twin(make_config, tmp_path):
    cfg = _cfg(make_config, {"method": "alie"}, {"rule": "centered_clip", "tau": 0.5})
    whole = privfl.run(cfg, out=None, progress=False)
    fed = Federation(cfg, folder=RunFolder.create(tmp_path, cfg.name))
    fed.folder.write_toml(RunFile.CONFIG, cfg.to_toml_dict())
    fed.run_round()
    fed.run_round()
    # The twin's state in the checkpoint holds no round records (they would grow it by one a
    # round): the twin's model and round, without which the resumed twin could not continue.
    stages = fed.folder.load_checkpoint()["stages"]
    (twin,) = (v for k, v in stages.items() if k.endswith(":CleanTwin"))
    assert "metrics" not in twin and twin["round"] == 2
    resumed = privfl.resume(tmp_path / cfg.name, progress=False)
    assert resumed.metrics == whole.metrics
    assert torch.equal(resumed.params, whole.params)


def test_backdoor_metrics_and_model_replacement(make_config):
    cfg = _cfg(make_config, {"method": "model_replacement", "clean_twin": False})
    res = privfl.run(cfg, out=None, progress=False)
    assert all(0.0 <= rec["attack_success_rate"] <= 1.0 for rec in res.metrics)


def test_cli_set_on_any_config_and_one_line_errors(tmp_path):
    base = ["run", "examples/quickstart.toml", "-q", "--out", str(tmp_path)]
    base += ["--set", "federation.rounds=1", "--set", "attack.poisoning.method=alie"]
    ok = runner.invoke(app, [*base, "--set", "attack.poisoning.clean_twin=false"])
    assert ok.exit_code == 0, ok.output
    rec = json.loads((tmp_path / "quickstart" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(rec["attackers"]) <= set(rec["clients"])
    bad = runner.invoke(app, [*base, "--set", "attack.poisoning.scale=4"])
    assert bad.exit_code == 2
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert (
        "attack.poisoning.scale applies only when method is sign_flip or model_replacement"
        in lines[0]
    )


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ({"method": "sign_flip", "fraction": 0.01}, "makes no malicious client"),
        ({"method": "alie", "fraction": 0.6}, "ALIE's z_max needs fewer than half"),
        (
            {"method": "sign_flip", "knowledge": "partial"},
            "knowledge applies only when method is alie",
        ),
        ({"method": "poison"}, "attack.poisoning.method"),
        ({"method": "ipm", "epsilon": -1}, "attack.poisoning.epsilon"),
    ],
)
def test_bad_attack_config_names_the_field(make_config, attack, message):
    with pytest.raises(privfl.ConfigError, match=message.replace("(", "\\(")):
        _cfg(make_config, attack)


def test_target_label_must_exist(make_config):
    cfg = _cfg(make_config, {"method": "model_replacement", "target_label": 10})
    with pytest.raises(privfl.ConfigError, match="target_label = 10 is not a label of digits"):
        Federation(cfg)


def test_malicious_set_is_independent_of_the_defense(make_config):
    a = _cfg(make_config, {"method": "gaussian", "clean_twin": False})
    b = _cfg(make_config, {"method": "gaussian", "clean_twin": False}, {"rule": "median"})
    ra = privfl.run(a, out=None, progress=False)
    rb = privfl.run(b, out=None, progress=False)
    assert [r["attackers"] for r in ra.metrics] == [r["attackers"] for r in rb.metrics]
    assert np.isfinite(rb.params.numpy()).all()
