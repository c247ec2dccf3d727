"""What the reports read from a run folder: config, metrics, ledger, partition, audit,
threat models."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privfl.config import Config, load_config
from privfl.errors import RunFolderError
from privfl.ledger import Ledger
from privfl.runfolder import RunFile, RunFolder


@dataclass
class RunFiles:
    """What the report reads from one run folder."""

    path: Path
    config: Config
    metrics: list[dict[str, Any]]
    ledger: Ledger
    ledger_json: dict[str, Any]
    partition: dict[str, Any] | None
    audit: dict[str, Any] | None
    threats: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunFiles:
        """Read ``run_dir``; a RunFolderError when it is not a finished run folder."""
        folder = RunFolder(run_dir)
        for name in (RunFile.CONFIG, RunFile.LEDGER):
            if not folder.file(name).exists():
                raise RunFolderError(f"{run_dir} has no {name.value}: not a finished run folder")
        ledger_json = folder.read_json(RunFile.LEDGER)
        return cls(
            path=Path(run_dir),
            config=load_config(folder.file(RunFile.CONFIG)),
            metrics=folder.read_jsonl(RunFile.METRICS),
            ledger=Ledger.from_json(ledger_json),
            ledger_json=ledger_json,
            partition=folder.read_json(RunFile.PARTITION),
            audit=folder.read_json(RunFile.AUDIT),
            threats=folder.read_json(RunFile.THREATS, []),
        )

    @property
    def epsilon(self) -> float:
        """The headline epsilon (``inf`` without any guarantee); when the configured accountant
        failed (``epsilon_error``), the worst party's RDP figure."""
        lj = self.ledger_json
        if lj.get("epsilon") is None and lj.get("epsilon_error"):
            return as_float(lj["epsilon_by_accountant"]["rdp"])
        return as_float(lj.get("epsilon"))

    @property
    def final_accuracy(self) -> float | None:
        accs = [m["test_accuracy"] for m in self.metrics if m.get("test_accuracy") is not None]
        return accs[-1] if accs else None


def as_float(x: Any) -> float:
    """A ledger.json epsilon as a float: None (no guarantee) and ``"inf"`` are infinite.

    >>> as_float(2.5), as_float("inf"), as_float(None)
    (2.5, inf, inf)
    """
    return math.inf if x is None or x == "inf" else float(x)


def fmt(x: float | None, digits: int = 3) -> str:
    """An epsilon or accuracy for a report: ``n/a``, ``infinite (no guarantee)`` or fixed.

    >>> fmt(2.50287), fmt(0.91234, 4), fmt(None), fmt(math.inf)
    ('2.503', '0.9123', 'n/a', 'infinite (no guarantee)')
    """
    if x is None:
        return "n/a"
    return "infinite (no guarantee)" if math.isinf(x) else f"{x:.{digits}f}"


__all__ = ["RunFiles", "as_float", "fmt"]
