"""[attack.inversion] from TOML and --set, its errors, and the attack end to end from a run."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from inversion_fixtures import *  # noqa: F403 (the pytest fixtures; see that module)
from torch import nn

import privfl
from privfl.attacks.inversion import CENTRAL_DP_NOTE, InversionConfig, create_inversion_observer
from privfl.attacks.inversion.build import _view_notes
from privfl.client import LocalTraining
from privfl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "inversion.toml"
QUICKSTART = ROOT / "examples" / "quickstart.toml"


def test_set_adds_the_attack_to_any_config():
    cfg = privfl.load_config(QUICKSTART, ["attack.inversion.method=ig"])
    inv = cfg.attack.inversion
    assert inv is not None and inv.method == "ig"
    assert (inv.resolved_iterations, inv.resolved_lr, inv.rounds, inv.max_targets) == (
        1000,
        0.1,
        [1],
        8,
    )
    assert privfl.load_config(QUICKSTART).attack.inversion is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("attack.inversion.iteration=5", "unknown key 'attack.inversion.iteration' (did you mean"),
        ("attack.inversion.method=gan", "attack.inversion.method"),
        ("attack.inversion.tv=0.5", "attack.inversion.tv applies only when method = 'ig'"),
        ("attack.inversion.rounds=[1, 1]", "lists a round twice"),
        ("attack.inversion.max_targets=0", "attack.inversion.max_targets"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        privfl.load_config(EXAMPLE, [override])


def test_a_round_after_the_last_is_refused():
    cfg = privfl.load_config(EXAMPLE, ["attack.inversion.rounds=[2]"])
    with pytest.raises(ConfigError, match=r"attack.inversion.rounds lists \[2\]"):
        privfl.run(cfg, out=None, progress=False)


def test_label_recovery_on_a_model_without_a_final_linear_layer_is_refused():
    class NoHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 10, 8)

        def forward(self, x):
            return self.conv(x).flatten(1)

    config = privfl.load_config(EXAMPLE)
    data = SimpleNamespace(bundle=SimpleNamespace(input_shape=(1, 8, 8), num_classes=10))
    setup = SimpleNamespace(data=data, make_model=NoHead)
    training = LocalTraining(lr=0.1, steps=1, batch_size=1)
    for method in ("idlg", "ig"):
        with pytest.raises(ConfigError, match="final linear layer"):
            create_inversion_observer(InversionConfig(method=method), config, setup, training)
    # DLG optimizes the labels: it needs no last layer.
    create_inversion_observer(InversionConfig(method="dlg"), config, setup, training)


@pytest.mark.parametrize(("mode", "noted"), [("central", True), ("local", False), (None, False)])
def test_central_dp_runs_say_why_the_attack_still_succeeds(mode, noted):
    # [defense.dp] comes with the DP issue; a stand-in config carries its dump.
    dump = {} if mode is None else {"dp": {"mode": mode}}
    config = SimpleNamespace(defense=SimpleNamespace(model_dump=lambda: dump))
    assert _view_notes(config) == ((CENTRAL_DP_NOTE,) if noted else ())


def test_a_run_writes_attack_records_and_the_png_grid(tmp_path):
    sets = ["attack.inversion.max_targets=2", "attack.inversion.iterations=1"]
    result = privfl.run(EXAMPLE, out=tmp_path, overrides=sets, progress=False)
    run = tmp_path / "inversion"
    records = json.loads((run / "attacks.json").read_text())
    assert records == json.loads(json.dumps(result.attacks))
    assert len(records) == 2 and {r["round"] for r in records} == {1}
    for r in records:
        for key in (
            "attack",
            "round",
            "client",
            "psnr",
            "ssim",
            "mse",
            "label_accuracy",
            "seconds",
        ):
            assert key in r
        assert r["label_accuracy"] == 1.0  # iDLG's analytic label, whatever the iterations
    assert (run / "plots" / "inversion.png").read_bytes()[:4] == b"\x89PNG"


def test_the_attack_runs_on_a_config_with_many_examples_and_local_epochs():
    # quickstart: ~29 examples a client, 5 epochs of batch 10; the FedSGD reading of DLG.
    sets = [
        "attack.inversion.iterations=1",
        "attack.inversion.max_targets=1",
        "federation.rounds=1",
    ]
    result = privfl.run(QUICKSTART, out=None, overrides=sets, progress=False)
    (r,) = result.attacks
    assert r["examples"] == r["reported_examples"] > 10 and r["status"] == "ok"
    assert r["label_accuracy"] is not None and torch.isfinite(torch.tensor(r["psnr"]))


@pytest.mark.slow
def test_example_from_the_command_line_reconstructs_the_digits(tmp_path):
    # The acceptance setting: the papers' LeNet, one step on one digit, iDLG, 8 clients.
    cmd = [sys.executable, "-m", "privfl", "run", str(EXAMPLE), "--out", str(tmp_path), "-q"]
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True)
    records = json.loads((tmp_path / "inversion" / "attacks.json").read_text())
    assert len(records) == 8
    assert statistics.median(r["psnr"] for r in records) >= 30
    assert all(r["label_accuracy"] == 1.0 for r in records)
