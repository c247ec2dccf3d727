"""A suite's outcome: one record per cell (shared by the runner, the table and the figures)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from privfl.suites.cell import CellStatus
from privfl.suites.spec import Cell, Suite


@dataclass
class CellRecord:
    """One cell's outcome: the grid point, its status and figures, and where its run is.

    ``seeded_noise``: the cell runs DP whose noise follows the config's seed
    (``defense.dp.secure_rng = false``), so anyone holding its config.toml can strip it."""

    cell: Cell
    status: CellStatus
    reason: str = ""
    key: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    run_dir: str | None = None
    seeded_noise: bool = False


@dataclass
class SuiteRun:
    """A finished suite: one record per cell, and how many runs this call made or reused."""

    suite: Suite
    out: Path
    records: list[CellRecord]
    ran: int  # configs run by this call
    cached: int  # configs found in the cache
    seconds: float  # wall-clock of this call
    workers: int

    @property
    def errors(self) -> list[CellRecord]:
        """Cells that ended in an unexpected exception (a bug)."""
        return [r for r in self.records if r.status is CellStatus.ERROR]


__all__ = ["CellRecord", "SuiteRun"]
