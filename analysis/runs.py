"""Selecting run folders by their configuration, and telling training runs from attack runs.

A results root holds experiment folders (``rate/``, ``spiking/``, ``attack-rate/``,
``study-NAME/``, ...), each holding run folders. An attack run names the training run it attacked
in ``config.json["source_run"]``, a path relative to the results root it was written under (the
grandparent of the attack run's folder).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core.config import flatten
from core.runs import find_runs, load_run

log = logging.getLogger(__name__)

__all__ = ["select_runs", "latest_run", "all_runs", "experiment_of", "is_training_run", "is_attack_run",
           "resolve_source_run", "run_label"]


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


def all_runs(root: str | Path) -> tuple[list[dict], list[dict]]:
    """Every run folder under ``root``: ``(completed, not_completed)``, each sorted by path.

    Folders whose ``meta.json`` or ``config.json`` cannot be read count as not completed (with a
    ``"error"`` key) so that the report can list them.
    """
    done, other = [], []
    for path in find_runs(root):
        try:
            info = load_run(path)
        except Exception as exc:  # a corrupt run folder must not stop the report
            log.warning("cannot read run folder %s: %s", path, exc)
            other.append({"path": path, "config": {}, "meta": {"status": "unreadable"}, "metrics": {},
                          "error": str(exc)})
            continue
        (done if info["meta"].get("status") == "completed" else other).append(info)
    return done, other


def experiment_of(run: dict) -> str:
    """The experiment a run belongs to (``meta.json["experiment"]``, else its parent folder's name)."""
    return str(run["meta"].get("experiment") or Path(run["path"]).parent.name)


def is_attack_run(run: dict) -> bool:
    """True for runs that attacked a trained model (they name a ``source_run``)."""
    return "source_run" in run["config"] or experiment_of(run).startswith("attack-")


def is_training_run(run: dict) -> bool:
    """True for runs that trained a model: a ``model_kind`` and a ``model`` section, no source run."""
    cfg = run["config"]
    exp = experiment_of(run)
    return ("model_kind" in cfg and isinstance(cfg.get("model"), dict) and not is_attack_run(run)
            and not exp.startswith("study-"))


def resolve_source_run(attack_run: dict, root: str | Path | None = None) -> Path | None:
    """The folder of the training run that ``attack_run`` attacked, or None if it cannot be found.

    ``source_run`` is tried relative to the attack run's own results root (two levels up), then
    relative to ``root``, then as given (absolute, or relative to the working directory); finally a
    folder with the same name under ``root`` is accepted, so that a moved results tree still joins.
    """
    src = attack_run["config"].get("source_run")
    if not src:
        return None
    src_path = Path(src)
    candidates = [Path(attack_run["path"]).parent.parent / src_path]
    if root is not None:
        candidates.append(Path(root) / src_path)
    candidates.append(src_path)
    for cand in candidates:
        if (cand / "meta.json").is_file():
            return cand
    if root is not None:
        for cand in Path(root).rglob(src_path.name):
            if (cand / "meta.json").is_file():
                return cand
    return None


def run_label(run: dict, root: str | Path | None = None) -> str:
    """A short name for a run: ``experiment/folder`` (relative to ``root`` when possible)."""
    path = Path(run["path"])
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return f"{path.parent.name}/{path.name}"
