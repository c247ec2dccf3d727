"""``privfl data summary`` fits an 80-column terminal whatever the class count (issue 16,
item 13: a 62-class FEMNIST table used to be unreadable)."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from privfl.cli import app
from privfl.data.summary_table import summary_table


def _render(table, width: int) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text().splitlines()


def test_ten_classes_keep_the_full_histogram():
    counts = np.arange(30).reshape(3, 10)
    lines = _render(summary_table(counts, title="t", width=80), 80)
    assert all(len(ln) <= 80 for ln in lines)
    header = next(ln for ln in lines if "client" in ln)
    assert all(f" {c} " in header for c in range(10))
    row1 = next(ln for ln in lines if ln.strip("│ ").startswith("1 "))
    # client 1's label counts 10..19, in order, and its total
    assert [int(x) for x in row1.replace("│", " ").split()] == [1, 145, *range(10, 20)]


@pytest.mark.parametrize("width", [60, 80, 100])
def test_62_classes_fit_and_show_each_clients_most_frequent_labels(width):
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.4, size=(300, 62))
    counts[0] = 0
    counts[0, 61], counts[0, 3] = 9, 4
    lines = _render(summary_table(counts, title="femnist", width=width, max_rows=40), width)
    assert max(len(ln) for ln in lines) <= width
    assert len(lines) < 60
    row0 = next(ln for ln in lines if ln.strip("│ ").startswith("0 "))
    cells = [c.strip() for c in row0.strip("│").split("│")]
    assert cells[:3] == ["0", "13", "2"] and cells[3].startswith("61:9 3:4")
    last = lines[-2]  # the summary row, above the bottom rule
    assert "39-299" in last and "261 more" in last


def test_cli_summary_of_62_classes_fits_80_columns():
    r = CliRunner().invoke(
        app,
        [
            "data",
            "summary",
            "examples/quickstart.toml",
            *("--set", "data.name=synthetic", "--set", "data.classes=62"),
            *("--set", "data.shape=[4]", "--set", "data.clients=120"),
            *("--set", "federation.clients_per_round=10"),
        ],
        env={"COLUMNS": "80"},
    )
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    assert "of 62" in lines[-1] and "81 more" in r.output
