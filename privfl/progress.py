"""The progress bar of long work (a run's rounds, a suite's cells), on stderr through rich."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(title: str, field: str, *, enabled: bool) -> Progress:
    """A bar showing ``title``, done / total, the task's field ``field`` (a short status the
    caller updates), elapsed and remaining time; ``enabled=False`` draws nothing."""
    return Progress(
        TextColumn(title),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{{task.fields[{field}]}}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


__all__ = ["progress_bar"]
