"""The comparison report of several runs: accuracy against epsilon."""

from __future__ import annotations

from pathlib import Path

from privfl.report.document import Alert, Bullets, Document, Heading, Image, Paragraph, Table
from privfl.report.plots import plot_accuracy_vs_epsilon
from privfl.report.privacy import write_document
from privfl.report.runfiles import RunFiles, fmt


def _unit(mode: str) -> str:
    return "per example" if mode == "sample" else "per user"


def write_comparison_report(run_dirs: list[str | Path], out_dir: str | Path) -> tuple[Path, Path]:
    """Accuracy against epsilon over several runs, into ``out_dir/report.{md,html}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [RunFiles.load(d) for d in run_dirs]
    doc = Document(f"Privacy-utility comparison of {len(runs)} runs")
    rows = []
    by_mode: dict[str, list[tuple[float, float, str]]] = {}
    for r in runs:
        dp = r.config.defense.dp
        sig = sorted({e.noise_multiplier for e in r.ledger.events})
        rows.append(
            (
                r.config.name,
                dp.mode if dp else "none",
                ", ".join(f"{s:.3g}" for s in sig) or "-",
                fmt(r.epsilon) if r.ledger.events else "no guarantee",
                f"{r.ledger_json['delta']:g}" if r.ledger_json.get("delta") else "-",
                str(r.ledger_json.get("accountant", "-")) if r.ledger.events else "-",
                fmt(r.final_accuracy, 4),
            )
        )
        if dp is not None and r.ledger.events and r.final_accuracy is not None:
            by_mode.setdefault(dp.mode, []).append((r.epsilon, r.final_accuracy, r.config.name))
    doc.add(
        Table(
            ("run", "DP mode", "sigma", "epsilon", "delta", "accountant", "accuracy"), tuple(rows)
        ),
    )
    if by_mode:
        (out / "plots").mkdir(exist_ok=True)
        series = []
        for mode, pts in by_mode.items():
            pts.sort()
            series.append((f"{mode} ({_unit(mode)})", [p[0] for p in pts], [p[1] for p in pts]))
        names = [(p[0], p[1], p[2]) for pts in by_mode.values() for p in pts]
        img = plot_accuracy_vs_epsilon(
            series,
            out / "plots" / "accuracy_vs_epsilon.png",
            title="final test accuracy vs epsilon",
            labels=names,
        )
        doc.add(Heading("Accuracy vs epsilon"), Image(img, "accuracy vs epsilon"))
        if (
            len(by_mode) > 1
            or len({r.ledger_json.get("delta") for r in runs if r.ledger.events}) > 1
        ):
            doc.add(
                Alert(
                    "these runs protect different units (an example vs a user) or use different "
                    "deltas: their epsilons are not directly comparable."
                )
            )
    unguarded = [r.config.name for r in runs if not r.ledger.events]
    if unguarded:
        doc.add(Paragraph(f"Runs without DP (no epsilon, not plotted): {', '.join(unguarded)}."))
    if any(str(r.ledger_json.get("accountant")) == "gdp" for r in runs if r.ledger.events):
        doc.add(Alert("some runs use the GDP accountant, an approximation and not a bound."))
    doc.add(Bullets(tuple(f"{r.config.name}: `{r.path}`" for r in runs)))
    return write_document(doc, out)


__all__ = ["write_comparison_report"]
