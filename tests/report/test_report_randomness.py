"""The report says what the run's randomness means for its guarantee: seeded noise is
reproducible from config.toml (so the guarantee holds only against someone without it);
secure noise is not; SecAgg+ allowed below its safe degree is said in bold, DP or not."""

from __future__ import annotations

import re

import pytest
from conftest import small_config

import privfl
from privfl.report import RunFiles, build_run_report
from privfl.report.document import to_markdown
from privfl.report.privacy import INSECURE_SECAGG


def _report(tmp_path, name: str, federation: dict | None = None, **sections) -> str:
    federation = {"rounds": 2, "clients_per_round": 4, "batch_size": 16, **(federation or {})}
    cfg = small_config(name=name, federation=federation, **sections)
    run_dir = privfl.run(cfg, out=tmp_path, progress=False).run_dir
    return (run_dir / "report.md").read_text()


def _protected(md: str) -> str:
    """The "What is protected" section of a report."""
    return re.search(r"## What is protected\n(.*?)\n## ", md, re.S).group(1)


@pytest.mark.parametrize("mode", ["central", "local"])
def test_seeded_noise_is_called_reproducible_from_config_toml(tmp_path, mode):
    md = _report(tmp_path, mode, defense={"dp": {"mode": mode, "noise_multiplier": 1.0}})
    section = _protected(md)
    assert "**The noise is reproducible from the config.**" in section
    assert "`seed = 0`" in section and "secure_rng = false" in section
    assert "holds only against someone without `config.toml`" in section
    if mode == "central":
        assert "Poisson cohorts" in section


@pytest.mark.parametrize("mode", ["central", "local"])
def test_secure_noise_is_not_called_reproducible(tmp_path, mode):
    dp = {"mode": mode, "noise_multiplier": 1.0, "secure_rng": True}
    md = _report(tmp_path, mode, defense={"dp": dp})
    section = _protected(md)
    assert "reproducible" not in md.lower()
    assert "os.urandom" in section and "--resume" in section
    # Local DP's cohorts stay seeded (the server sees who sends); central DP's do not.
    assert ("still follows the seed" in section) is (mode == "local")


def test_dpsgd_report_names_the_lots(tmp_path):
    md = _report(tmp_path, "s", defense={"dp": {"mode": "sample", "noise_multiplier": 1.0}})
    assert "Poisson lots of DP-SGD" in _protected(md)


def test_central_dp_over_secagg_reports_the_rounding_slack(tmp_path):
    dp = {"mode": "central", "noise_multiplier": 1.0}
    md = _report(tmp_path, "cs", defense={"dp": dp, "secagg": {"bits": 16, "max_weight": 1.0}})
    row = next(line for line in md.splitlines() if "rounding slack" in line)
    assert re.search(r"up to 0\.0\d+", row)


def test_insecure_secagg_is_said_in_bold_in_the_report(tmp_path):
    """Report level: the same run folder, with and without the switch."""
    cfg = small_config(name="plain", federation={"rounds": 1}, defense={"secagg": {}})
    run_dir = privfl.run(cfg, out=tmp_path, progress=False).run_dir
    assert not (run_dir / "report.md").exists()  # no DP, no audit, SecAgg+ safe: no report
    run = RunFiles.load(run_dir)
    md = to_markdown(build_run_report(run, tmp_path / "plots"), tmp_path)
    assert INSECURE_SECAGG not in md
    secagg = run.config.defense.secagg.model_copy(update={"allow_insecure": True})
    run.config = run.config.model_copy(
        update={"defense": run.config.defense.model_copy(update={"secagg": secagg})}
    )
    md = to_markdown(build_run_report(run, tmp_path / "plots"), tmp_path)
    assert md.count(INSECURE_SECAGG) == 2  # at the top, and among the warnings
    assert INSECURE_SECAGG.startswith("**") and INSECURE_SECAGG.endswith("**")
    assert "No differential privacy was active" in md


def test_a_run_with_insecure_secagg_writes_the_report_without_dp(tmp_path):
    md = _report(
        tmp_path,
        "k2",
        federation={"rounds": 1, "clients_per_round": 8},
        defense={"secagg": {"neighbours": 2, "dropout": 0.3, "allow_insecure": True}},
    )
    assert INSECURE_SECAGG in md
