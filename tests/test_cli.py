"""The command line as a user meets it: exit codes, one-line errors, --set, data fetch."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from privfl.cli import app

runner = CliRunner()

QUICK = [
    "--set",
    "federation.rounds=2",
    "--set",
    "data.clients=6",
    "--set",
    "federation.clients_per_round=3",
    "-q",
]


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_run_with_overrides_writes_the_resolved_config(tmp_path):
    r = _run(
        "run",
        "examples/quickstart.toml",
        "--out",
        str(tmp_path),
        "--set",
        "name=cli",
        "--set",
        "model.hidden=[16, 8]",
        *QUICK,
    )
    assert r.exit_code == 0, r.output
    d = tmp_path / "cli"
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    assert "hidden = [\n    16,\n    8,\n]" in (d / "config.toml").read_text()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("federation.rounds=-3", "federation.rounds"),
        ("data.alpha=0", "data.alpha"),
        (
            "federation.clients_per_round=500",
            "clients_per_round (500) must be <= data.clients (50)",
        ),
        ("model.name=resnet", "'logreg', 'mlp', 'cnn'"),
        ("federation.roundz=3", "did you mean 'rounds'"),
        ("defense.nonsense.x=1", "unknown key 'defense.nonsense'"),
        ("data.partition=natural", "femnist"),
    ],
)
def test_bad_config_is_one_line_exit_2_without_traceback(tmp_path, override, needle):
    r = _run("run", "examples/quickstart.toml", "--out", str(tmp_path), "--set", override, "-q")
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert needle in text
    assert "Traceback" not in r.output
    assert r.output.strip().startswith("error:")
    assert not any(tmp_path.iterdir()), "a bad config must not leave a run folder"


def test_missing_data_folder_names_files_and_fetch_command(tmp_path):
    r = _run(
        "run",
        "examples/quickstart.toml",
        "--out",
        str(tmp_path),
        "--set",
        "data.name=mnist",
        "--set",
        f"data.dir={tmp_path / 'nowhere'}",
        "--set",
        "data.partition=iid",
        "-q",
    )
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "train-images-idx3-ubyte" in text and "privfl data fetch mnist --dir" in text


def test_resume_and_config_together_is_refused(tmp_path):
    r = _run("run", "examples/quickstart.toml", "--resume", str(tmp_path))
    assert r.exit_code == 2 and "--resume takes no CONFIG" in r.output


def test_missing_config_file(tmp_path):
    r = _run("run", str(tmp_path / "nope.toml"))
    assert r.exit_code == 2 and "config file not found" in r.output


def test_data_fetch_unknown_and_bundled_names():
    r = _run("data", "fetch", "imagenet", "--dir", "/tmp/x")
    assert r.exit_code == 2 and "mnist" in r.output
    r = _run("data", "fetch", "digits", "--dir", "/tmp/x")
    assert r.exit_code == 2 and "bundled" in r.output.lower()
