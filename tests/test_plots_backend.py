"""privfl never touches the user's matplotlib state: no backend is selected or changed, pyplot
is never imported, and the figures are plain :class:`matplotlib.figure.Figure` objects (a
notebook displays a returned one inline)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from privfl.plots import partition_figure, plot_training, training_figure
from privfl.report.plots import (
    accuracy_vs_epsilon_figure,
    client_epsilons_figure,
    epsilon_per_round_figure,
)

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def test_no_library_module_selects_a_backend_or_imports_pyplot():
    offenders = []
    for top in ("privfl", "attacks", "defenses"):
        for path in sorted((ROOT / top).rglob("*.py")):
            text = path.read_text()
            for pattern in (
                r"matplotlib\.use\(",
                r"import matplotlib\.pyplot",
                r"from matplotlib import pyplot",
                r"\bpylab\b",
            ):
                if re.search(pattern, text):
                    offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert not offenders


_SCRIPT = """
import matplotlib, sys
matplotlib.use("svg")
import privfl
from privfl.report.privacy import write_run_report
r = privfl.run(privfl.Config(name="b", federation={"rounds": 1, "clients_per_round": 2}),
               out=sys.argv[1], progress=False)
write_run_report(r.run_dir)
assert (r.run_dir / "plots" / "training.png").read_bytes().startswith(b"\\x89PNG")
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_a_run_and_its_report_leave_the_backend_alone(tmp_path):
    # A fresh interpreter: the test process may already have imported pyplot elsewhere.
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    assert out[-2:] == ["svg", "False"]


def test_figures_are_plain_figures(tmp_path):
    metrics = [
        {"round": r, "test_accuracy": 0.5 + 0.1 * r, "test_loss": 1.0 / r, "train_loss": 1.2 / r}
        for r in (1, 2, 3)
    ]
    figs = [
        training_figure(metrics, "t"),
        partition_figure(np.array([[3, 1], [0, 4], [2, 2]])),
        epsilon_per_round_figure([(1, 0.5), (2, 0.8)], delta=1e-5, who="user", accountant="rdp"),
        client_epsilons_figure([0.5, 0.7, float("inf")], delta=1e-5, unit="user"),
        accuracy_vs_epsilon_figure([("run", [0.5, 0.8], [0.6, 0.7])], title="t"),
    ]
    assert all(type(f) is Figure for f in figs)
    assert len(figs[0].axes) == 2
    path = plot_training(metrics, tmp_path / "training.png")
    assert path.read_bytes().startswith(PNG)


_LOGGING = """
import logging, sys
import privfl
from privfl.accounting import epsilon_of
epsilon_of(((1.0, 0.01, 10),), delta=1e-5)  # imports Opacus, which calls logging.basicConfig
dp = {"mode": "central", "noise_multiplier": 1.0}
privfl.run(privfl.Config(name="b", federation={"rounds": 1, "clients_per_round": 2},
                         defense={"dp": dp}), out=None, progress=False)
print(len(logging.getLogger().handlers), logging.getLogger().level)
"""


@pytest.mark.parametrize("first", ["accounting", "dpsgd"])
def test_logging_configuration_is_left_to_the_application(first):
    code = _LOGGING
    if first == "dpsgd":  # a DP-SGD run imports Opacus from the trainer, before any accountant
        code = code.replace(
            "epsilon_of(((1.0, 0.01, 10),), delta=1e-5)",
            "from privfl.defenses.dp.dpsgd import check_model; import torch; "
            "check_model(torch.nn.Linear(2, 2))",
        )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert out[-2:] == ["0", str(30)]  # no root handler added, the default WARNING level
