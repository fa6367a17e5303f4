"""Selecting run folders by their configuration."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import flatten
from core.runs import find_runs, load_run

__all__ = ["select_runs", "latest_run"]


def select_runs(root: str | Path, experiment: str | None = None, *, completed_only: bool = True,
                **filters: Any) -> list[dict]:
    """Run folders under ``root[/experiment]`` whose resolved config matches ``filters``.

    Filters name flattened config keys with ``__`` for dots, e.g. ``model__width=2000`` or
    ``model_kind="rate"``. Runs that did not complete are skipped unless ``completed_only`` is false.
    """
    out = []
    for path in find_runs(root, experiment):
        try:
            info = load_run(path)
        except Exception:
            continue
        if completed_only and info["meta"].get("status") != "completed":
            continue
        flat = flatten(info["config"])
        if all(flat.get(k.replace("__", ".")) == v for k, v in filters.items()):
            out.append(info)
    return out


def latest_run(root: str | Path, experiment: str | None = None, **filters: Any) -> dict | None:
    """The most recently started completed run matching ``filters`` (None if there is none)."""
    runs = select_runs(root, experiment, **filters)
    return max(runs, key=lambda r: r["meta"].get("start") or "") if runs else None
