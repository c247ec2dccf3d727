"""The ``privfl`` command line: ``privfl run | bench | calibrate | report | config | data``.

Exit status: 0 on success, 2 on a bad config or input (one line, no traceback), 1 on an
internal error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler

from privfl.errors import PrivflError

app = typer.Typer(
    help="privfl: federated learning with privacy attacks and defenses measured on the same run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Data sets: download the real ones, inspect partitions.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
config_app = typer.Typer(
    help="Configs: the reference of every key, resolved configs.", no_args_is_help=True
)
app.add_typer(config_app, name="config")

_err = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a value: section.key=value (value read as TOML)"),
]


def _fail(e: PrivflError) -> NoReturn:
    _err.print(f"[bold red]error:[/] {e}", soft_wrap=True, highlight=False, markup=True)
    raise typer.Exit(2)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=_err, show_path=False)],
        force=True,
    )


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="experiment TOML file")] = None,
    set_: SetOption = None,
    out: Annotated[Path, typer.Option(help="parent folder of the run folder")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option(help="continue the run in this folder")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run folder")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log at INFO level")] = False,
) -> None:
    """Run an experiment and write its folder OUT/<name>/."""
    _setup_logging(verbose)
    from privfl.api import resume as resume_run
    from privfl.api import run as start_run

    try:
        if resume is not None:
            if config is not None or set_:
                raise PrivflError(
                    "--resume takes no CONFIG or --set: the run folder's config.toml is used"
                )
            result = resume_run(resume, progress=not quiet)
        elif config is None:
            raise PrivflError("give a CONFIG file, or --resume RUN_DIR")
        else:
            result = start_run(
                config, out=out, overrides=set_ or [], overwrite=overwrite, progress=not quiet
            )
    except PrivflError as e:
        _fail(e)
    last = result.metrics[-1] if result.metrics else {}
    acc = last.get("test_accuracy")
    _err.print(
        f"[green]done[/] {result.config.name}: {len(result.metrics)} rounds"
        + (f", test accuracy {acc:.4f}" if acc is not None else "")
        + f" -> {result.run_dir}",
        highlight=False,
    )


@app.command()
def bench(
    suite: Annotated[Path, typer.Argument(help="suite TOML file (benchmarks/suites/*.toml)")],
    set_: SetOption = None,
    out: Annotated[
        Path | None, typer.Option(help="folder of the suite's results [runs/suites/NAME]")
    ] = None,
    workers: Annotated[int, typer.Option(help="worker processes (0: in this process)")] = 2,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log at INFO level")] = False,
) -> None:
    """Run a suite (attacks x defenses x parameters x seeds, one run a cell); rerunning the
    same command resumes it, running only the cells not finished yet."""
    _setup_logging(verbose)
    from privfl.suites import INDEX_HTML, load_suite, run_suite

    try:
        spec = load_suite(suite, set_ or [])
        result = run_suite(
            spec, out or Path("runs/suites") / spec.name, workers=workers, progress=not quiet
        )
    except PrivflError as e:
        _fail(e)
    _err.print(
        f"[green]done[/] {spec.name}: {len(result.records)} cells, {result.ran} run, "
        f"{result.cached} cached",
        highlight=False,
    )
    typer.echo(str(result.out / INDEX_HTML))
    if result.errors:
        _err.print(f"[bold red]{len(result.errors)} cell(s) crashed[/]: see the log above")
        raise typer.Exit(1)


@app.command()
def calibrate(
    target_epsilon: Annotated[float, typer.Option(help="the epsilon to reach")],
    delta: Annotated[float, typer.Option(help="the delta of the guarantee, in (0, 1)")],
    sample_rate: Annotated[float, typer.Option(help="Poisson sampling rate q, in (0, 1]")],
    steps: Annotated[int, typer.Option(help="steps of the mechanism (local steps, or rounds)")],
    accountant: Annotated[str, typer.Option(help="rdp, prv or gdp (Opacus)")] = "rdp",
) -> None:
    """Print the noise multiplier that reaches TARGET_EPSILON at DELTA after STEPS steps."""
    from privfl.accounting import ACCOUNTANT_NOTES, calibrate_noise, check_accountant, epsilon_of

    try:
        name = check_accountant(accountant)
        sigma = calibrate_noise(
            target_epsilon=target_epsilon,
            delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=name,
        )
        eps = epsilon_of(((sigma, sample_rate, steps),), delta=delta, accountant=name)
    except PrivflError as e:
        _fail(e)
    typer.echo(f"accountant {name.value}: {ACCOUNTANT_NOTES[name]}")
    typer.echo(f"epsilon {eps:.4f} at delta {delta:g} (sample rate {sample_rate:g}, {steps} steps)")
    typer.echo(f"noise multiplier: {sigma:.6f}")


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="run folders (runs/NAME)")],
    out: Annotated[
        Path | None,
        typer.Option(help="folder of the comparison report of several runs [PARENT/comparison]"),
    ] = None,
) -> None:
    """(Re)write the privacy-budget report of each run; with several runs, also compare their
    accuracy against epsilon."""
    from privfl.report import write_comparison_report, write_run_report

    try:
        for run_dir in runs:
            md, page = write_run_report(run_dir)
            typer.echo(f"{md}\n{page}")
        if len(runs) > 1:
            md, page = write_comparison_report(runs, out or runs[0].parent / "comparison")
            typer.echo(f"{md}\n{page}")
    except PrivflError as e:
        _fail(e)


@config_app.command("reference")
def config_reference() -> None:
    """Print every config section and key with its type, default and meaning (Markdown)."""
    from privfl.reference import config_reference as reference

    typer.echo(reference(), nl=False)


@config_app.command("show")
def config_show(
    config: Annotated[Path, typer.Argument(help="experiment TOML file")],
    set_: SetOption = None,
) -> None:
    """Print the resolved config (every default written out), as a run would save it."""
    import tomli_w

    from privfl.config import load_config

    try:
        cfg = load_config(config, set_ or [])
    except PrivflError as e:
        _fail(e)
    typer.echo(tomli_w.dumps(cfg.to_toml_dict()), nl=False)


@data_app.command("summary")
def data_summary(
    config: Annotated[Path, typer.Argument(help="experiment TOML file")],
    set_: SetOption = None,
    rows: Annotated[
        int, typer.Option("--rows", min=1, help="client rows to show; the rest in one row")
    ] = 40,
) -> None:
    """Partition a config's data and print per-client example and label counts (a full
    label histogram when it fits the terminal, else each client's most frequent labels)."""
    from privfl.config import load_config
    from privfl.data.federated import build_federated_data
    from privfl.data.summary_table import summary_table

    try:
        cfg = load_config(config, set_ or [])
        data = build_federated_data(cfg.data, cfg.seed)
    except PrivflError as e:
        _fail(e)
    counts = data.label_counts()
    console = Console()
    title = f"{cfg.data.name}: {cfg.data.partition} partition, {data.num_clients} clients"
    console.print(summary_table(counts, title=title, width=console.width, max_rows=rows))
    s = data.summary(counts)
    console.print(
        f"examples per client: min {s['min']}, mean {s['mean']:.1f}, max {s['max']}\n"
        f"classes per client: mean {s['classes_per_client_mean']:.2f} of {counts.shape[1]}"
    )


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="mnist or cifar10")],
    dir: Annotated[Path, typer.Option("--dir", help="folder to download into")],
    mirror: Annotated[
        str | None, typer.Option(help="base address replacing the canonical one")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Download a data set from its canonical address and check every file's SHA-256."""
    _setup_logging(False)
    from privfl.data.fetch import fetch_dataset

    try:
        paths = fetch_dataset(name, dir, mirror=mirror, progress=not quiet)
    except PrivflError as e:
        _fail(e)
    for p in paths:
        typer.echo(str(p))


__all__ = ["app"]
