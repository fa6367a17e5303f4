"""The demo report: the full report of :mod:`analysis.report` for the demo's results root."""
from __future__ import annotations

from pathlib import Path

from analysis.report import write_report

__all__ = ["write_demo_report"]


def write_demo_report(root: str | Path) -> Path:
    """Write ``<root>/report.md`` from the runs found under ``root``; returns its path."""
    return write_report(root)
