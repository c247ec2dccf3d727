"""The suite runner: its numbers are those of the runs made one by one, rejected combinations
are recorded, not fatal, and an interrupted suite resumes without re-running finished cells."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from suite_helpers import write_suite

import privfl
from privfl.suites import CellStatus, Metric, load_suite, run_suite
from privfl.suites.runner import CACHE_DIR

GRID_2X2 = """
seeds = [0]
[attacks]
none = []
sign_flip = ["attack.poisoning.method=sign_flip", "attack.poisoning.scale=3",
             "attack.poisoning.clean_twin=false"]
[defenses]
none = []
median = ["defense.robust.rule=median"]
"""


def test_grid_matches_the_runs_one_by_one(tmp_path):
    """Two worker processes on a 2x2 grid give exactly the figures of privfl.run on each of
    the four configs in this process (wall-clock time aside)."""
    suite = load_suite(write_suite(tmp_path, GRID_2X2))
    run = run_suite(suite, tmp_path / "out", workers=2, progress=False)
    assert run.ran == 4 and run.cached == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers
    try:
        for rec in run.records:
            assert rec.status is CellStatus.OK
            cfg = privfl.load_config(tmp_path / "base.toml", list(rec.cell.overrides))
            alone = privfl.run(cfg, out=None, progress=False)
            assert rec.metrics[Metric.ACCURACY] == alone.final_accuracy
            assert rec.metrics[Metric.BYTES_UP] == sum(m["bytes_up"] for m in alone.metrics)
    finally:
        torch.set_num_threads(threads)
    by = {(r.cell.attack, r.cell.defense): r.metrics for r in run.records}
    # derived figures: the attack's damage against the no-attack row, overheads per row
    drop = by["none", "median"][Metric.ACCURACY] - by["sign_flip", "median"][Metric.ACCURACY]
    assert by["sign_flip", "median"][Metric.ACCURACY_DROP] == pytest.approx(drop)
    assert by["sign_flip", "median"][Metric.BYTES_OVERHEAD] == 1.0
    # the CSV holds the same numbers
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert len(rows) == 4
    for row in rows:
        m = by[row["attack"], row["defense"]]
        assert float(row["accuracy"]) == m[Metric.ACCURACY]
    for name in ("table.md", "index.html", "plots/heatmap_accuracy.png"):
        assert (tmp_path / "out" / name).is_file()


def test_rejected_combination_is_a_row_not_a_crash(tmp_path):
    """Robust rules need plaintext updates: median under secure aggregation is rejected by
    the config, and the table says so; the other cells run."""
    body = """
[attacks]
none = []
[defenses]
none = []
secagg_median = ["defense.secagg.threshold=0.6", "defense.robust.rule=median"]
"""
    run = run_suite(
        load_suite(write_suite(tmp_path, body)), tmp_path / "o", workers=0, progress=False
    )
    status = {r.cell.defense: r for r in run.records}
    assert status["none"].status is CellStatus.OK
    assert status["secagg_median"].status is CellStatus.INVALID
    assert "cannot be combined" in status["secagg_median"].reason
    assert run.ran == 1
    table = (tmp_path / "o" / "table.md").read_text()
    assert "| invalid: " in table and "cannot be combined" in table
    html = (tmp_path / "o" / "index.html").read_text()
    assert "invalid: " in html and "data:image/png;base64," in html


def test_parameters_substitute_and_identical_configs_run_once(tmp_path):
    """{fraction} is replaced by each value; the no-attack row does not mention it, so its
    three cells resolve to one config and run once."""
    body = """
[attacks]
none = []
gaussian = ["attack.poisoning.method=gaussian", "attack.poisoning.fraction={fraction}",
            "attack.poisoning.clean_twin=false"]
[parameters]
fraction = [0.1, 0.2, 0.3]
"""
    suite = load_suite(write_suite(tmp_path, body, rounds=1))
    cells = suite.cells()
    assert len(cells) == 6
    fractions = [suite.resolve(c).attack.poisoning.fraction for c in cells[3:]]
    assert fractions == [0.1, 0.2, 0.3]
    run = run_suite(suite, tmp_path / "o", workers=0, progress=False)
    assert run.ran == 4  # one for the three identical no-attack cells, three attacked
    none = [r.metrics[Metric.ACCURACY] for r in run.records[:3]]
    assert none[0] == none[1] == none[2]


def test_unknown_placeholder_is_a_config_error(tmp_path):
    body = '[attacks]\nx = ["attack.poisoning.fraction={frac}"]\n[parameters]\nfraction = [0.1]\n'
    with pytest.raises(privfl.ConfigError, match=r"\{frac\}.*parameters: fraction"):
        load_suite(write_suite(tmp_path, body))


@pytest.mark.slow
def test_killed_suite_resumes_without_rerunning_finished_cells(tmp_path):
    """Kill the whole `privfl bench` process group once some cells are cached; the same
    suite then runs exactly the cells that were not, and leaves the cached ones untouched."""
    body = """
seeds = [0, 1, 2]
[attacks]
none = []
[defenses]
none = []
median = ["defense.robust.rule=median"]
"""
    path = write_suite(tmp_path, body, rounds=8)
    out = tmp_path / "o"
    cache = out / CACHE_DIR
    cmd = [
        sys.executable,
        "-m",
        "privfl",
        "bench",
        str(path),
        "--out",
        str(out),
        "--workers",
        "1",
        "-q",
    ]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while not (cache.is_dir() and any(cache.glob("*.json"))):
            assert proc.poll() is None, "the suite ended before a cell was cached"
            assert time.monotonic() < deadline, "no cell finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    assert 1 <= len(before) < 6
    ran: list[str] = []
    run = run_suite(load_suite(path), out, workers=0, progress=False, on_result=ran.append)
    assert run.cached == len(before) and run.ran == 6 - len(before)
    assert not {f"{k}.json" for k in ran} & set(before)
    assert {
        p.name: p.stat().st_mtime_ns for p in cache.glob("*.json") if p.name in before
    } == before
    assert all(r.status is CellStatus.OK for r in run.records)
    assert all(math.isfinite(r.metrics[Metric.ACCURACY]) for r in run.records)


def test_interrupted_suite_resumes_without_rerunning_finished_cells(tmp_path):
    """Ctrl-C (KeyboardInterrupt) after two of four configs: the rerun makes the other two
    only, and its figures equal an uninterrupted suite's."""
    path = write_suite(tmp_path, GRID_2X2, rounds=1)
    done: list[str] = []

    def interrupt_after_two(key: str) -> None:
        done.append(key)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(
            load_suite(path),
            tmp_path / "o",
            workers=0,
            progress=False,
            on_result=interrupt_after_two,
        )
    again: list[str] = []
    run = run_suite(
        load_suite(path), tmp_path / "o", workers=0, progress=False, on_result=again.append
    )
    assert (run.cached, run.ran) == (2, 2) and not set(again) & set(done)
    fresh = run_suite(load_suite(path), tmp_path / "fresh", workers=0, progress=False)
    assert [r.metrics[Metric.ACCURACY] for r in run.records] == [
        r.metrics[Metric.ACCURACY] for r in fresh.records
    ]
