"""The suite table marks the cells whose DP noise is seeded (reproducible from their config)
with a dagger and a footnote; cells with secure_rng or without DP are not marked."""

from __future__ import annotations

import csv

from suite_helpers import write_suite

from privfl.suites import load_suite, run_suite
from privfl.suites.table import SEEDED_MARK, SEEDED_NOISE_NOTE

GRID = """
seeds = [0]
[attacks]
none = []
[defenses]
plain = []
dp_seeded = ["defense.dp.mode=central", "defense.dp.noise_multiplier=1.0"]
dp_secure = ["defense.dp.mode=central", "defense.dp.noise_multiplier=1.0",
             "defense.dp.secure_rng=true"]
"""


def test_seeded_dp_cells_are_marked_in_the_table_and_the_csv(tmp_path):
    suite = load_suite(write_suite(tmp_path, GRID, rounds=1))
    run = run_suite(suite, tmp_path / "out", workers=0, progress=False)
    seeded = {r.cell.defense: r.seeded_noise for r in run.records}
    assert seeded == {"plain": False, "dp_seeded": True, "dp_secure": False}
    table = (tmp_path / "out" / "table.md").read_text()
    rows = {line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| none")}
    assert rows == {"plain", f"dp_seeded {SEEDED_MARK}", "dp_secure"}
    assert SEEDED_NOISE_NOTE.split("`")[0] in table and "reproducible" in table
    assert "reproducible from the cell" in (tmp_path / "out" / "index.html").read_text()
    csv_rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert {r["defense"]: r["seeded_noise"] for r in csv_rows} == {
        "plain": "false",
        "dp_seeded": "true",
        "dp_secure": "false",
    }


def test_a_suite_without_seeded_noise_has_no_footnote(tmp_path):
    body = GRID.replace(
        'dp_seeded = ["defense.dp.mode=central", "defense.dp.noise_multiplier=1.0"]\n', ""
    )
    suite = load_suite(write_suite(tmp_path, body, rounds=1))
    run_suite(suite, tmp_path / "out", workers=0, progress=False)
    table = (tmp_path / "out" / "table.md").read_text()
    assert SEEDED_MARK not in table and "reproducible" not in table
