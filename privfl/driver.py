"""Drive a run to its end: ``run(config)`` and ``resume(run_dir)`` (re-exported by
:mod:`privfl.api` as ``privfl.run`` and ``privfl.resume``).

Below the API and the suites (which run their cells through it), above the privacy report
(written here from the run folder once every finisher has run) and the round loop.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from privfl.config import Config, load_config
from privfl.decentralized.runner import resume_run, runner_class
from privfl.device import resolve_device
from privfl.errors import PrivflError
from privfl.federation import Federation, RunResult
from privfl.progress import progress_bar
from privfl.provenance import environment
from privfl.runfolder import RunFile, RunFolder

log = logging.getLogger(__name__)


def run(
    config: Config | str | Path,
    *,
    out: str | Path | None = "runs",
    overrides: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RunResult:
    """Run the experiment ``config`` (a :class:`Config` or a TOML path) and return its result.

    Args:
        out: parent of the run folder ``out/<name>/``; None runs without writing files.
        overrides: ``section.key=value`` strings, as ``--set`` on the command line (TOML paths
            only).
        overwrite: replace an existing run folder of the same name.
        progress: show a progress bar on stderr.
    """
    with warnings_once_per_run():
        return _run(config, out=out, overrides=overrides, overwrite=overwrite, progress=progress)


def _run(
    config: Config | str | Path,
    *,
    out: str | Path | None,
    overrides: list[str] | None,
    overwrite: bool,
    progress: bool,
) -> RunResult:
    if not isinstance(config, Config):
        config = load_config(config, overrides)
    elif overrides:
        raise ValueError("overrides apply to a TOML path; build the Config with them instead")
    resolve_device(config.federation.device)  # no CUDA here: one line, and no run folder
    folder = None
    if out is not None:
        folder = RunFolder.create(out, config.name, overwrite=overwrite)
    try:
        fed = runner_class(config)(config, folder=folder)  # a server, or D-PSGD's nodes
    except PrivflError:
        # A config refused while the run is built leaves no folder behind (one it made empty).
        if folder is not None and not any(folder.path.iterdir()):
            folder.path.rmdir()
        raise
    if folder is not None:
        folder.write_toml(RunFile.CONFIG, config.to_toml_dict())
    return _drive(fed, progress)


def resume(run_dir: str | Path, *, progress: bool = True) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint to its configured rounds (or
    until its ``defense.dp.max_epsilon``: the ledger restored from the checkpoint is what the
    budget is checked against, so a resumed run never spends past it)."""
    with warnings_once_per_run():
        return _drive(resume_run(run_dir), progress)


@contextmanager
def warnings_once_per_run() -> Iterator[None]:
    """Show each warning (same text, category and place) once while a run lasts.

    Python shows a warning once per place only until the warning filters change, and every
    ``warnings.catch_warnings`` block (privfl's accounting, the libraries') changes them, so a
    library's warning raised each round (Opacus' "Optimal order is the smallest alpha" used
    to) came back a dozen times. This wraps ``warnings.showwarning`` (what shows a warning
    that the filters let through, so "error" and "ignore" filters are untouched) to drop
    repeats, and restores it after the run; a next run shows its warnings again."""
    shown = warnings.showwarning
    seen: set[tuple[str, type[Warning], str, int]] = set()

    def show_once(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        key = (str(message), category, str(filename), int(lineno))
        if key not in seen:
            seen.add(key)
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show_once
    try:
        yield
    finally:
        warnings.showwarning = shown


def _drive(fed: Federation, progress: bool) -> RunResult:
    _record_environment(fed)
    total = fed.config.federation.rounds
    bar = progress_bar("[bold]{task.description}", "stats", enabled=progress)
    fed.progress = bar if progress else None
    with bar:
        task = bar.add_task(fed.config.name, total=total, completed=fed.round, stats="")
        while not fed.done:  # the configured rounds, or until defense.dp.max_epsilon
            rec = fed.run_round()
            bar.update(task, advance=1, stats=_stats(rec))
    result = fed.finish()
    if result.budget_stop is not None:
        ran = (
            f"{fed.round} of {total} rounds ran; the results are those of round {fed.round}"
            if fed.round
            else f"no round of {total} ran; the model is the initial one"
        )
        log.warning("%s: %s %s", fed.config.name, result.budget_stop.sentence(), ran)
    if result.run_dir is not None and wants_privacy_report(fed.config):
        from privfl.report.privacy import write_run_report  # deferred: matplotlib

        write_run_report(result.run_dir)  # from the run folder only, after every finisher
    return result


def _record_environment(fed: Federation) -> None:
    """Add this process's record to the run folder's ``environment.json`` (a list: a resumed
    run adds one for the rounds it runs). A file that is not such a list (a folder from
    someone else) is started afresh: provenance never stops a run."""
    if fed.folder is None:
        return
    try:
        records = fed.folder.read_json(RunFile.ENVIRONMENT, default=[])
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        records = []
    if not isinstance(records, list):
        records = []
    records.append(environment(fed.device, fed.round + 1))
    fed.folder.write_json(RunFile.ENVIRONMENT, records)


def wants_privacy_report(config: Config) -> bool:
    """A run writes ``report.md`` when it has a DP defense, an audit, or SecAgg+ allowed below
    its safe degree (the report says so)."""
    secagg = config.defense.secagg
    insecure_secagg = secagg is not None and secagg.allow_insecure
    return config.defense.dp is not None or config.audit is not None or insecure_secagg


def _stats(rec: dict) -> str:
    parts = []
    if rec.get("train_loss") is not None:
        parts.append(f"loss {rec['train_loss']:.3f}")
    if rec.get("test_accuracy") is not None:
        parts.append(f"acc {rec['test_accuracy']:.3f}")
    if rec.get("dropped"):
        parts.append(f"dropped {len(rec['dropped'])}")
    return "  ".join(parts)


__all__ = ["resume", "run", "wants_privacy_report", "warnings_once_per_run"]
