"""Reports of a run folder: the privacy-budget report (Markdown + self-contained HTML + PNG)."""

from privfl.report.comparison import write_comparison_report
from privfl.report.privacy import build_run_report, write_run_report
from privfl.report.runfiles import RunFiles

__all__ = [
    "RunFiles",
    "build_run_report",
    "write_comparison_report",
    "write_run_report",
]
