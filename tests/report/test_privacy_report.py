"""The privacy-budget report: written at the end of a DP run, rewritten from the run folder,
self-contained HTML, the accountant and its looseness always stated, the warnings."""

from __future__ import annotations

import json
import re

import pytest
from conftest import small_config
from typer.testing import CliRunner

import privfl
from privfl.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def _run(tmp_path, name, dp, rounds=3, **sections):
    cfg = small_config(
        name=name,
        federation={"rounds": rounds, "clients_per_round": 4, "batch_size": 16},
        defense={"dp": dp},
        **sections,
    )
    return privfl.run(cfg, out=tmp_path, progress=False).run_dir


@pytest.fixture(scope="module")
def central_run(tmp_path_factory):
    return _run(
        tmp_path_factory.mktemp("runs"),
        "central",
        {"mode": "central", "noise_multiplier": 1.0, "clip": 1.0},
    )


def test_report_states_unit_accountant_and_its_looseness(central_run):
    md = (central_run / "report.md").read_text()
    ledger = json.loads((central_run / "ledger.json").read_text())
    assert f"epsilon = {ledger['epsilon']:.3f} at delta = 1e-05" in md
    assert "**RDP** accountant (Opacus" in md and "Balle et al. 2020" in md
    assert "One user: everything one client contributes" in md
    assert "does not protect anyone from the server" in md
    assert "Poisson-sampled" in md  # the sampling that replaced federation.sampling
    for key in ("rdp", "rdp_classic", "prv", "gdp"):  # every accountant's figure is shown
        assert f"{ledger['epsilon_by_accountant'][key]:.3f}" in md
    assert "APPROXIMATION, NOT A BOUND" in md  # GDP's row says what it is
    for png in re.findall(r"\]\((plots/[^)]+\.png)\)", md):
        assert (central_run / png).read_bytes().startswith(PNG)


def test_html_is_self_contained(central_run):
    page = (central_run / "report.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) >= 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page and "<link" not in page


def test_privfl_report_rewrites_the_same_report(central_run):
    before = (central_run / "report.md").read_text()
    (central_run / "report.md").unlink()
    (central_run / "report.html").unlink()
    r = runner.invoke(app, ["report", str(central_run)])
    assert r.exit_code == 0, r.output
    assert (central_run / "report.md").read_text() == before
    assert (central_run / "report.html").exists()


def test_warnings_delta_epsilon_clipping_and_gdp(tmp_path):
    run = _run(
        tmp_path,
        "bad",
        {
            "mode": "central",
            "noise_multiplier": 0.3,
            "clip": 1e-4,
            "delta": 0.2,
            "accountant": "gdp",
        },
    )
    md = (run / "report.md").read_text()
    warnings = md.split("## Warnings", 1)[1]
    assert "delta = 0.2 is >= 1/N = 1/10" in warnings
    assert re.search(r"epsilon = [\d.]+ > 10", warnings)
    assert "clipped 100% of client updates" in warnings
    assert "GDP, a central-limit **approximation, not a bound**" in warnings


def test_sample_level_report_shows_per_client_epsilons(tmp_path):
    run = _run(tmp_path, "sample", {"mode": "sample", "noise_multiplier": 1.0, "clip": 1.0})
    md = (run / "report.md").read_text()
    ledger = json.loads((run / "ledger.json").read_text())
    assert "One training example of one client" in md and "## Per-client epsilon" in md
    per = ledger["epsilon_per_party"]
    assert ledger["epsilon"] == max(per.values()) and len(per) > 1
    assert (run / "plots" / "client_epsilon.png").read_bytes().startswith(PNG)


def test_several_runs_compare_accuracy_against_epsilon(tmp_path, central_run):
    other = _run(tmp_path, "central2", {"mode": "central", "noise_multiplier": 2.0, "clip": 1.0})
    plain = privfl.run(
        small_config(name="plain", federation={"rounds": 2}), out=tmp_path, progress=False
    ).run_dir
    out = tmp_path / "cmp"
    r = runner.invoke(app, ["report", str(central_run), str(other), str(plain), "--out", str(out)])
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert "| central |" in md and "| central2 |" in md and "no guarantee" in md
    assert (out / "plots" / "accuracy_vs_epsilon.png").read_bytes().startswith(PNG)
    # A plain run's own report says it has no guarantee.
    assert "carries no (epsilon, delta) guarantee" in (plain / "report.md").read_text()


def test_report_of_a_folder_that_is_no_run_exits_2(tmp_path):
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "not a finished run folder" in r.output


def test_calibrate_prints_the_noise_multiplier_last():
    r = runner.invoke(
        app,
        [
            "calibrate",
            "--target-epsilon",
            "3",
            "--delta",
            "1e-5",
            "--sample-rate",
            "0.01",
            "--steps",
            "1000",
        ],
    )
    assert r.exit_code == 0, r.output
    sigma = float(re.findall(r"[0-9]+\.[0-9]+", r.output)[-1])
    from opacus.accountants.utils import get_noise_multiplier

    ref = get_noise_multiplier(target_epsilon=3, target_delta=1e-5, sample_rate=0.01, steps=1000)
    assert sigma == pytest.approx(ref, rel=0.01)
    r = runner.invoke(
        app,
        [
            "calibrate",
            "--target-epsilon",
            "3",
            "--delta",
            "1e-5",
            "--sample-rate",
            "0.01",
            "--steps",
            "1000",
            "--accountant",
            "gdp",
        ],
    )
    assert r.exit_code == 0 and "APPROXIMATION, NOT A BOUND" in r.output


@pytest.mark.parametrize(
    "args,match",
    [
        (["--delta", "2"], "delta must lie in (0, 1), got 2.0"),
        (["--sample-rate", "0"], "sample_rate must lie in (0, 1]"),
        (["--accountant", "moments"], "accountant must be one of rdp, prv, gdp"),
    ],
)
def test_calibrate_bad_input_exits_2_with_one_line(args, match):
    base = {"--target-epsilon": "3", "--delta": "1e-5", "--sample-rate": "0.01", "--steps": "100"}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    r = runner.invoke(app, ["calibrate", *[x for kv in base.items() for x in kv]])
    assert r.exit_code == 2 and match in " ".join(r.output.split())
