"""Write a finished suite's files: ``results.csv`` (one row a cell), ``table.md`` (mean ± std
over seeds), ``plots/*.png`` (heatmaps, accuracy against epsilon) and a self-contained
``index.html`` (the same table, the PNGs embedded as base64)."""

from __future__ import annotations

from pathlib import Path

from privfl.report.document import (
    Alert,
    Bullets,
    Document,
    Heading,
    Image,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from privfl.runfolder import RunFile
from privfl.suites.cell import CellStatus, Metric
from privfl.suites.figures import AGAINST_EPSILON, HEATMAPS, against_epsilon, heatmap
from privfl.suites.records import SuiteRun
from privfl.suites.table import SEEDED_NOISE_NOTE, derive, table_rows, write_csv

RESULTS_CSV = "results.csv"
TABLE_MD = "table.md"
INDEX_HTML = "index.html"
PLOTS = "plots"


def write_outputs(run: SuiteRun) -> dict[str, Path]:
    """Compute the derived figures and write every output file of ``run`` into ``run.out``;
    returns their paths by name."""
    derive(run)
    out = run.out
    plots = out / PLOTS
    plots.mkdir(parents=True, exist_ok=True)
    paths = {RESULTS_CSV: write_csv(run, out / RESULTS_CSV)}
    header, rows = table_rows(run)
    table = Table(header, rows)

    notes = [Paragraph(SEEDED_NOISE_NOTE)] if any(r.seeded_noise for r in run.records) else []
    md = Document(f"Suite {run.suite.name}")
    md.add(Paragraph(_summary(run)), table, *notes)
    (out / TABLE_MD).write_text(to_markdown(md, out))
    paths[TABLE_MD] = out / TABLE_MD

    images = []
    for metric in HEATMAPS:
        p = heatmap(run, metric, plots / f"heatmap_{metric.value}.png")
        if p is not None:
            images.append(Image(p, f"heatmap of {metric.value}"))
    curves = {
        metric: against_epsilon(
            run, metric, plots / f"{metric.value.split('_at_')[0]}_vs_epsilon.png"
        )
        for metric in AGAINST_EPSILON
    }

    page = Document(f"Suite {run.suite.name}")
    if run.suite.spec.description:
        page.add(Paragraph(run.suite.spec.description))
    page.add(Bullets(_facts(run)))
    for r in run.errors:
        page.add(Alert(f"cell {r.cell.slug} crashed: {r.reason} (a bug: see the log)"))
    for metric, curve in curves.items():
        if curve is not None:
            what = AGAINST_EPSILON[metric]
            page.add(Heading(f"{what[0].upper()}{what[1:]} against epsilon"), Image(curve, what))
    if images:
        page.add(
            Heading("Attack x defense"),
            Paragraph(
                "Grey cells: the config rejects the combination (invalid) or the figure does "
                "not apply. Overheads are against the `"
                + run.suite.spec.baseline_defense
                + "` column; the accuracy drop against the `"
                + run.suite.spec.baseline_attack
                + "` row unless the run measured it against its clean twin."
            ),
            *images,
        )
    page.add(Heading("Results (mean ± std over seeds)"), table, *notes)
    reports = _reports(run)
    if reports:
        page.add(Heading("Privacy reports of the cells"), Bullets(tuple(reports)))
    # wide tables scroll sideways instead of running off the page
    html = to_html(page).replace("<table>", '<div style="overflow-x:auto"><table>')
    (out / INDEX_HTML).write_text(html.replace("</table>", "</table></div>"))
    paths[INDEX_HTML] = out / INDEX_HTML
    return paths


def _summary(run: SuiteRun) -> str:
    n = len(run.records)
    invalid = sum(r.status is CellStatus.INVALID for r in run.records)
    return (
        f"{n} cells ({invalid} invalid), {run.ran} runs made and {run.cached} reused from "
        f"the cache; base config `{run.suite.spec.base}`; seeds {run.suite.spec.seeds}."
    )


def _facts(run: SuiteRun) -> tuple[str, ...]:
    spec = run.suite.spec
    facts = [
        _summary(run),
        f"attacks: {', '.join(spec.attacks)}; defenses: {', '.join(spec.defenses)}",
        f"this call: {run.seconds:.0f} s with {run.workers} worker(s)",
    ]
    if spec.parameters:
        facts.append(
            "parameters: "
            + "; ".join(f"{k} in {', '.join(map(str, v))}" for k, v in spec.parameters.items())
        )
    common = [*spec.set, *run.suite.extra]
    if common:
        facts.append("every cell: `" + " ".join(f"--set {s}" for s in common) + "`")
    secs = [r.metrics.get(Metric.SECONDS) for r in run.records if r.status is CellStatus.OK]
    total = sum(s for s in secs if s is not None)
    facts.append(f"rounds' wall-clock time summed over cells: {total:.0f} s")
    return tuple(facts)


def _reports(run: SuiteRun) -> list[str]:
    seen, out = set(), []
    for r in run.records:
        if r.run_dir is None or r.run_dir in seen:
            continue
        seen.add(r.run_dir)
        report = Path(r.run_dir) / RunFile.REPORT_HTML.value
        if report.is_file():
            rel = report.resolve().relative_to(run.out.resolve()).as_posix()
            out.append(f"{r.cell.attack} / {r.cell.defense} {r.cell.params_label}: `{rel}`")
    return out


__all__ = ["INDEX_HTML", "PLOTS", "RESULTS_CSV", "TABLE_MD", "write_outputs"]
