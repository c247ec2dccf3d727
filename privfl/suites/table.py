"""A suite's figures per cell and per group of seeds: derived figures (accuracy drop,
overheads against the baseline column), ``results.csv`` and the mean ± std table."""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from privfl.suites.cell import CellStatus, Metric
from privfl.suites.records import CellRecord, SuiteRun

#: How each figure is printed in tables and heatmaps.
FORMATS: dict[Metric, str] = {
    Metric.ACCURACY: ".3f",
    Metric.ACCURACY_DROP: "+.3f",
    Metric.ATTACK_SUCCESS: ".2f",
    Metric.PSNR: ".1f",
    Metric.SSIM: ".3f",
    Metric.LABEL_ACCURACY: ".2f",
    Metric.PERPLEXITY: ".2f",
    Metric.TOKEN_RECALL: ".2f",
    Metric.MEMBERSHIP_AUC: ".3f",
    Metric.MEMBERSHIP_TPR: ".3f",
    Metric.EPSILON: ".3g",
    Metric.BYTES_UP: ".3g",
    Metric.BYTES_OVERHEAD: ".2f",
    Metric.SECONDS: ".2f",
    Metric.SECONDS_OVERHEAD: ".2f",
    Metric.FED_ACCURACY_MEAN: ".3f",
    Metric.FED_ACCURACY_STD: ".3f",
    Metric.FED_ACCURACY_WORST10: ".3f",
    Metric.FED_ACCURACY_JAIN: ".3f",
}


#: Marks a row whose DP noise is seeded (see :data:`SEEDED_NOISE_NOTE`).
SEEDED_MARK = "†"
SEEDED_NOISE_NOTE = (
    f"{SEEDED_MARK} DP noise seeded by the config's `seed` (`defense.dp.secure_rng = false`): "
    "reproducible from the cell's config.toml, so its guarantee holds only against someone "
    "without that file. Research figures, not a release: set `defense.dp.secure_rng = true`."
)


def _point(r: CellRecord) -> tuple:
    return (r.cell.attack, r.cell.defense, r.cell.params, r.cell.seed)


def derive(run: SuiteRun) -> None:
    """Add the figures that compare a cell with another, in place:

    - ``accuracy_drop``: the baseline attack's accuracy (same defense, parameters and seed)
      minus this cell's, unless the run measured it itself against its clean twin;
    - ``bytes_overhead``, ``seconds_overhead``: this cell's over the baseline defense's (same
      attack, parameters and seed); 1 on the baseline column itself.
    """
    spec = run.suite.spec
    ok = {_point(r): r for r in run.records if r.status is CellStatus.OK}
    for r in ok.values():
        a, d, p, s = _point(r)
        m = r.metrics
        base_a = ok.get((spec.baseline_attack, d, p, s))
        if m.get(Metric.ACCURACY_DROP) is None and base_a is not None and a != base_a.cell.attack:
            m[Metric.ACCURACY_DROP] = _diff(base_a.metrics.get(Metric.ACCURACY), m[Metric.ACCURACY])
        base_d = ok.get((a, spec.baseline_defense, p, s))
        if base_d is not None:
            for num, ratio in (
                (Metric.BYTES_UP, Metric.BYTES_OVERHEAD),
                (Metric.SECONDS, Metric.SECONDS_OVERHEAD),
            ):
                m[ratio] = _ratio(m.get(num), base_d.metrics.get(num))


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def write_csv(run: SuiteRun, path: Path) -> Path:
    """One row per cell: the grid point, status, reason, every :class:`Metric`, run folder."""
    names = list(run.suite.spec.parameters)
    header = [
        "attack",
        "defense",
        *names,
        "seed",
        "status",
        "reason",
        *Metric,
        "run_dir",
        "seeded_noise",
    ]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([str(h) for h in header])
        for r in run.records:
            params = dict(r.cell.params)
            w.writerow(
                [
                    r.cell.attack,
                    r.cell.defense,
                    *(params[n] for n in names),
                    r.cell.seed,
                    r.status.value,
                    r.reason,
                    *("" if r.metrics.get(m) is None else repr(r.metrics[m]) for m in Metric),
                    _relative(r.run_dir, run.out),
                    str(r.seeded_noise).lower(),
                ]
            )
    return path


def _relative(run_dir: str | None, base: Path) -> str:
    if run_dir is None:
        return ""
    try:
        return Path(run_dir).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(run_dir)


@dataclass(frozen=True)
class Group:
    """The cells of one grid point over its seeds."""

    attack: str
    defense: str
    params_label: str
    records: tuple[CellRecord, ...]

    @property
    def status(self) -> CellStatus:
        """The worst status among the seeds (error, failed, invalid, ok)."""
        order = [CellStatus.ERROR, CellStatus.FAILED, CellStatus.INVALID, CellStatus.OK]
        return min((r.status for r in self.records), key=order.index)

    @property
    def seeded_noise(self) -> bool:
        """Any of the seeds ran DP with seeded noise (reproducible from its config)."""
        return any(r.seeded_noise for r in self.records)

    @property
    def defense_text(self) -> str:
        """The defense, marked with :data:`SEEDED_MARK` when its DP noise is seeded."""
        return f"{self.defense} {SEEDED_MARK}" if self.seeded_noise else self.defense

    @property
    def reason(self) -> str:
        bad = [r.reason for r in self.records if r.status is self.status]
        return bad[0] if bad else ""

    def values(self, metric: Metric) -> list[float]:
        """The finite values of ``metric`` over the seeds that ran."""
        out = []
        for r in self.records:
            v = r.metrics.get(metric) if r.status is CellStatus.OK else None
            if v is not None and not math.isnan(v):
                out.append(float(v))
        return out

    def mean_std(self, metric: Metric) -> tuple[float, float, int] | None:
        """Mean, sample standard deviation (0 for one seed) and count, or None."""
        v = self.values(metric)
        if not v:
            return None
        if any(math.isinf(x) for x in v):
            return (math.inf, 0.0, len(v))
        return (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))

    def text(self, metric: Metric) -> str:
        """``"0.912 ± 0.004"`` (several seeds), ``"0.912"`` (one), ``""`` (none)."""
        ms = self.mean_std(metric)
        if ms is None:
            return ""
        mean, std, n = ms
        fmt = FORMATS[metric]
        return format(mean, fmt) + (f" ± {std:{fmt.lstrip('+')}}" if n > 1 else "")

    @property
    def status_text(self) -> str:
        s = self.status
        if s is CellStatus.OK:
            return s.value
        reason = self.reason if len(self.reason) <= 160 else self.reason[:157] + "..."
        return f"{s.value}: {reason}"  # results.csv has the whole reason


def groups(run: SuiteRun) -> list[Group]:
    """The grid points in suite order, each with its seeds' records."""
    by: dict[tuple[str, str, str], list[CellRecord]] = {}
    for r in run.records:
        by.setdefault((r.cell.attack, r.cell.defense, r.cell.params_label), []).append(r)
    return [Group(a, d, p, tuple(rs)) for (a, d, p), rs in by.items()]


def present_metrics(run: SuiteRun) -> list[Metric]:
    """The metrics that at least one cell has."""
    return [m for m in Metric if any(r.metrics.get(m) is not None for r in run.records)]


def table_rows(run: SuiteRun) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """Header and rows of the mean ± std table (one row per attack, defense, parameters)."""
    metrics = present_metrics(run)
    has_params = bool(run.suite.spec.parameters)
    header = (
        "attack",
        "defense",
        *(("parameters",) if has_params else ()),
        "status",
        *(m.value for m in metrics),
        "seeds",
    )
    rows = []
    for g in groups(run):
        rows.append(
            (
                g.attack,
                g.defense_text,
                *((g.params_label,) if has_params else ()),
                g.status_text,
                *(g.text(m) for m in metrics),
                str(len(g.records)),
            )
        )
    return header, tuple(rows)


__all__ = [
    "FORMATS",
    "SEEDED_MARK",
    "SEEDED_NOISE_NOTE",
    "Group",
    "derive",
    "groups",
    "present_metrics",
    "table_rows",
    "write_csv",
]
