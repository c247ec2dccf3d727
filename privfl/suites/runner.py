"""Run a suite: resolve every cell, run each distinct config once in worker processes, cache
finished cells, and write the results.

The cache is one JSON file per distinct resolved config (``OUT/cache/<key>.json``, written
atomically once the run has finished), so a suite that is interrupted (Ctrl-C, a killed
process, a crashed machine) resumes where it stopped: rerunning the same command runs only
the cells without a cache file. Cells whose configs resolve to the same experiment (a
parameter their overrides do not mention) share one run.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from privfl.config import Config
from privfl.errors import ConfigError
from privfl.progress import progress_bar
from privfl.suites.cell import CellStatus, init_worker, run_cell
from privfl.suites.outputs import write_outputs
from privfl.suites.records import CellRecord, SuiteRun
from privfl.suites.spec import Suite, config_key

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
RUNS_DIR = "runs"
CACHE_FORMAT = 1


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    workers: int = 2,
    progress: bool = True,
    on_result: Callable[[str], None] | None = None,
) -> SuiteRun:
    """Run every cell of ``suite`` not yet in ``out``'s cache, then write ``results.csv``,
    ``table.md``, the heatmaps and ``index.html`` into ``out``.

    Args:
        workers: worker processes (each with one torch thread); 0 runs the cells in this
            process, one after the other.
        progress: a rich progress bar on stderr.
        on_result: called with the cache key after each config finishes (tests use it).
    """
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")
    t0 = time.perf_counter()
    out = Path(out)
    cache = out / CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    cells = suite.cells()
    keys: dict[int, str] = {}
    todo: dict[str, Config] = {}
    records: list[CellRecord] = []
    for i, cell in enumerate(cells):
        try:
            config = suite.resolve(cell)
        except ConfigError as e:
            records.append(CellRecord(cell, CellStatus.INVALID, str(e)))
            continue
        keys[i] = config_key(config)
        todo.setdefault(keys[i], config)
        dp = config.defense.dp
        seeded = dp is not None and not dp.secure_rng
        records.append(CellRecord(cell, CellStatus.OK, key=keys[i], seeded_noise=seeded))
    results = {k: _read_cache(cache / f"{k}.json") for k in todo}
    results = {k: v for k, v in results.items() if v is not None}
    pending = {k: c for k, c in todo.items() if k not in results}
    log.info(
        "suite %s: %d cells, %d distinct runs, %d cached, %d to run",
        suite.name,
        len(cells),
        len(todo),
        len(results),
        len(pending),
    )
    bar = progress_bar(f"[bold]{suite.name}", "last", enabled=progress)
    runs_dir = out / RUNS_DIR if suite.spec.keep_runs else None

    def finished(key: str, result: dict[str, Any]) -> None:
        for line in result.get("log", []):
            log.info("%s: %s", todo[key].name, line)
        if result["status"] == CellStatus.ERROR:
            log.error("%s: %s\n%s", todo[key].name, result["reason"], result.get("traceback"))
        else:
            _write_cache(cache / f"{key}.json", key, todo[key], result)
        results[key] = result
        if on_result is not None:
            on_result(key)

    with bar:
        task = bar.add_task("", total=len(todo), completed=len(todo) - len(pending), last="")
        for key, result in _execute(pending, runs_dir, workers):
            finished(key, result)
            bar.update(task, advance=1, last=f"{todo[key].name}: {result['status']}")
    for i, rec in enumerate(records):
        if i in keys:
            res = results[keys[i]]
            rec.status = CellStatus(res["status"])
            rec.reason = res.get("reason", "")
            rec.metrics = dict(res.get("metrics", {}))
            rec.run_dir = res.get("run_dir")
    run = SuiteRun(
        suite=suite,
        out=out,
        records=records,
        ran=len(pending),
        cached=len(todo) - len(pending),
        seconds=time.perf_counter() - t0,
        workers=workers,
    )
    write_outputs(run)
    return run


def _execute(pending: dict[str, Config], runs_dir: Path | None, workers: int):
    """Yield ``(key, result)`` as each pending config finishes, in completion order."""
    if not pending:
        return
    if workers == 0:
        for key, config in pending.items():
            yield key, run_cell(config, runs_dir)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork after torch has started its threads
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(pending)), mp_context=ctx, initializer=init_worker
    )
    futures: dict[Future, str] = {}
    try:
        for key, config in pending.items():
            futures[pool.submit(run_cell, config, runs_dir)] = key
        not_done = set(futures)
        while not_done:
            done, not_done = wait(not_done, return_when=FIRST_COMPLETED)
            for fut in done:
                yield futures[fut], fut.result()
    finally:  # on Ctrl-C or an error: drop the queue; finished cells are already cached
        pool.shutdown(wait=True, cancel_futures=True)


def _read_cache(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:  # cannot happen with atomic writes, but never trust it
        log.warning("ignoring unreadable cache entry %s", path)
        return None
    if data.get("format") != CACHE_FORMAT:
        return None
    return data["result"]


def _write_cache(path: Path, key: str, config: Config, result: dict[str, Any]) -> None:
    data = {
        "format": CACHE_FORMAT,
        "key": key,
        "config": config.to_toml_dict(),
        "result": {k: v for k, v in result.items() if k != "log"},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


__all__ = ["CellRecord", "SuiteRun", "run_suite"]
