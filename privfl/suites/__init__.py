"""Benchmark suites: a grid of attacks x defenses x parameters x seeds on one base config,
each cell one run through :func:`privfl.run`, run in parallel, cached, tabulated and plotted.

>>> from privfl.suites import load_suite, run_suite  # doctest: +SKIP
>>> suite = load_suite("benchmarks/suites/quick.toml")  # doctest: +SKIP
>>> run = run_suite(suite, "runs/suites/quick", workers=2)  # doctest: +SKIP
"""

from privfl.suites.cell import CellStatus, Metric, run_cell, summarize
from privfl.suites.outputs import INDEX_HTML, RESULTS_CSV, TABLE_MD, write_outputs
from privfl.suites.runner import CellRecord, SuiteRun, run_suite
from privfl.suites.spec import Cell, Suite, SuiteSpec, config_key, load_suite

__all__ = [
    "INDEX_HTML",
    "RESULTS_CSV",
    "TABLE_MD",
    "Cell",
    "CellRecord",
    "CellStatus",
    "Metric",
    "Suite",
    "SuiteRun",
    "SuiteSpec",
    "config_key",
    "load_suite",
    "run_cell",
    "run_suite",
    "summarize",
    "write_outputs",
]
