"""Tidy tables built from run folders: one row per attack observation, joined with its model.

Every function here reads files only. Rows are plain dicts; a table is a list of rows.

The attack table has the columns of ``robustness.csv`` (``model, attack, loss, eps, n, n_correct,
robust_acc, mean_linf, mean_l2, ..., queries, noise_mode, success_prob, norm, source``: one
schema for both suites; rate and MLP runs written before it get ``noise_mode`` ``none`` and the
``source`` it gives them) plus the fields of the attacked training run:

==================  ======================================================================
``model_kind``      the trained model (``rate``, ``mlp``, ``spiking``)
``width``, ``k``    ``model.width`` and ``model.k`` (None where the model has none)
``ltd``, ``granule``  ``model.ltd`` and ``model.granule``
``task``            ``task.name``
``seed``            the training run's seed (``meta.json``); the CSV's own ``seed`` column
                    (the attack's seed) becomes ``attack_seed``
``test_accuracy``   of the training run
``clean_accuracy``  of the attack run (its ``metrics.json``)
``attack_run``, ``train_run``  folders relative to the results root
``config_label``    the model's configuration in words, e.g. ``width=2000, ltd=ma, k=4``
==================  ======================================================================

Rows without a ``norm`` column are L-inf (rate and MLP attacks are L-inf only).
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from analysis.stats import MODEL_FIELDS, k_effect, ltd_effect, mean_ci, width_effect
from analysis.runs import all_runs, experiment_of, is_attack_run, is_training_run, resolve_source_run, run_label
from core.runs import load_run, read_csv

log = logging.getLogger(__name__)

__all__ = ["MODEL_FIELDS", "EPS_TOL", "Study", "load_study", "model_fields", "config_label", "attack_table",
           "training_table", "eps_equal", "filter_rows", "group_rows", "run_metric", "metric_records",
           "reference_config", "headline_table", "mechanism_table"]

EPS_TOL = 1e-6


def eps_equal(a: float, b: float) -> bool:
    return abs(float(a) - float(b)) <= EPS_TOL


def model_fields(run: dict) -> dict:
    """The mechanism fields of a training run: model_kind, width, k, ltd, granule, task, seed.

    ``k`` is None for a dense (``fc``) rate granule layer, whose fan-in is every input.
    """
    cfg = run["config"]
    model = cfg.get("model") or {}
    k = None if model.get("granule") == "fc" else model.get("k")
    return {
        "model_kind": cfg.get("model_kind"),
        "width": model.get("width"),
        "k": k,
        "ltd": model.get("ltd"),
        "granule": model.get("granule"),
        "task": (cfg.get("task") or {}).get("name"),
        "seed": run["meta"].get("seed"),
    }


def config_label(row: dict) -> str:
    """``width=2000, ltd=ma, k=4, granule=random, task=digits`` (fields that are None are left out)."""
    return ", ".join(f"{f}={row[f]}" for f in MODEL_FIELDS if row.get(f) is not None)


class Study:
    """Every completed run under a results root, sorted into training and attack runs.

    Attributes
    ----------
    root : the results root.
    training : completed training runs (``load_run`` dicts with ``"fields"`` added).
    attacks : completed attack runs, each with ``"train"`` (its training run or None) and ``"fields"``.
    skipped : runs that did not complete (``status`` running, failed or unreadable).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        done, self.skipped = all_runs(self.root)
        self.training: list[dict] = []
        self.attacks: list[dict] = []
        by_path = {}
        for run in done:
            if is_training_run(run):
                run["fields"] = model_fields(run)
                self.training.append(run)
                by_path[Path(run["path"]).resolve()] = run
        for run in done:
            if not is_attack_run(run):
                continue
            src = resolve_source_run(run, self.root)
            train = None
            if src is not None:
                train = by_path.get(src.resolve())
                if train is None:
                    info = load_run(src)
                    if info["meta"].get("status") == "completed":
                        info["fields"] = model_fields(info)
                        train = info
            if train is None:
                log.warning("attack run %s: training run %s not found or not completed",
                            run["path"], run["config"].get("source_run"))
            run["train"] = train
            fields = dict(train["fields"]) if train else {f: None for f in ("width", "k", "ltd", "granule", "task", "seed")}
            fields["model_kind"] = (train["fields"]["model_kind"] if train else None) or run["config"].get("model_kind")
            run["fields"] = fields
            self.attacks.append(run)

    def label(self, run: dict) -> str:
        return run_label(run, self.root)

    def experiments(self) -> set[str]:
        return {experiment_of(r) for r in self.training + self.attacks}


def load_study(root: str | Path) -> Study:
    """All completed runs under ``root`` (see :class:`Study`)."""
    return Study(root)


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def attack_table(study: Study) -> list[dict]:
    """One row per line of every completed attack run's ``robustness.csv`` (see the module doc)."""
    rows = []
    for run in study.attacks:
        path = Path(run["path"]) / "robustness.csv"
        if not path.is_file():
            log.info("attack run %s has no robustness.csv", run["path"])
            continue
        train = run["train"]
        base = dict(run["fields"])
        base.update(
            attack_run=study.label(run),
            train_run=study.label(train) if train else run["config"].get("source_run"),
            test_accuracy=_as_float((train or {}).get("metrics", {}).get("test_accuracy")),
            clean_accuracy=_as_float(run["metrics"].get("clean_accuracy")),
            checks_passed=run["metrics"].get("checks_passed"),
            experiment=experiment_of(run),
        )
        base["config_label"] = config_label(base)
        for line in read_csv(path):
            row = dict(line)
            row["attack_seed"] = row.pop("seed", None)
            row.update(base)
            row["eps"] = _as_float(row.get("eps"))
            row["robust_acc"] = _as_float(row.get("robust_acc"))
            row["norm"] = row.get("norm") or "linf"
            row["model"] = row.get("model") or base["model_kind"]
            if not row.get("noise_mode") and base["model_kind"] != "spiking":
                # rate / MLP runs written before the one schema (attacks.specs.stamp): what it writes now
                row["noise_mode"] = "none"
                row["source"] = row.get("source") or {"noise": "none", "square": "none", "worst": "all"}.get(
                    row.get("attack"), row["model"])
            rows.append(row)
    return rows


def training_table(study: Study) -> list[dict]:
    """One row per completed training run: its fields, config label, metrics and folder."""
    rows = []
    for run in study.training:
        row = dict(run["fields"])
        row["config_label"] = config_label(row)
        row["run"] = study.label(run)
        for key, value in run["metrics"].items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                row.setdefault(key, value)
        rows.append(row)
    return rows


def filter_rows(rows: Iterable[dict], **conditions: Any) -> list[dict]:
    """Rows whose fields equal ``conditions`` (an ``eps`` condition matches within ``EPS_TOL``)."""
    out = []
    for row in rows:
        ok = True
        for key, want in conditions.items():
            have = row.get(key)
            if key == "eps":
                ok = not math.isnan(_as_float(have)) and eps_equal(have, want)
            else:
                ok = have == want
            if not ok:
                break
        if ok:
            out.append(row)
    return out


def group_rows(rows: Iterable[dict], key: Callable[[dict], Any]) -> dict[Any, list[dict]]:
    """Rows grouped by ``key(row)``, groups in order of first appearance."""
    out: dict[Any, list[dict]] = defaultdict(list)
    for row in rows:
        out[key(row)].append(row)
    return dict(out)


# ----------------------------------------------------------------------------- per-run metrics
METRICS = {
    "worst": "worst-case robust accuracy (L-inf): the 'worst' row if present, else the minimum over "
             "every L-inf attack evaluated on the trained model",
    "pgd_mse": "robust accuracy under PGD with the MSE loss (the seed paper's attack)",
    "clean": "clean accuracy of the attacked model",
}


def run_metric(rows: list[dict], metric: str, eps: float) -> float:
    """One attack run's value of ``metric`` at ``eps`` (nan if its rows do not give it).

    ``rows`` are the attack-table rows of a single attack run. ``metric`` is one of
    :data:`METRICS`: ``worst`` uses the ``worst`` row when the run wrote one (the per-image worst
    case over attacks) and otherwise the minimum robust accuracy over L-inf attacks evaluated on
    the trained model itself (an upper bound on the per-image worst case); ``pgd_mse`` the PGD/MSE
    row on the trained model; ``clean`` the run's clean accuracy (``eps`` ignored).
    """
    if not rows:
        return math.nan
    kind = rows[0]["model_kind"]
    if metric == "clean":
        val = rows[0]["clean_accuracy"]
        if math.isnan(val):
            zero = [r["robust_acc"] for r in rows if eps_equal(r["eps"], 0.0) and r["model"] == kind]
            val = max(zero) if zero else math.nan
        return val
    own = [r for r in rows if r["model"] == kind and r["norm"] == "linf" and eps_equal(r["eps"], eps)]
    if metric == "worst":
        worst = [r["robust_acc"] for r in own if r["attack"] == "worst"]
        vals = worst or [r["robust_acc"] for r in own]
    elif metric == "pgd_mse":
        vals = [r["robust_acc"] for r in own if r["attack"] == "pgd" and r.get("loss") == "mse"]
    else:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    vals = [v for v in vals if not math.isnan(v)]
    return min(vals) if vals else math.nan


def metric_records(rows: list[dict], metric: str, eps: float) -> list[dict]:
    """One record per attack run: its model fields plus ``value`` = :func:`run_metric`."""
    out = []
    for run_rows in group_rows(rows, lambda r: r["attack_run"]).values():
        value = run_metric(run_rows, metric, eps)
        if math.isnan(value):
            continue
        rec = {k: run_rows[0][k] for k in ("model_kind", *MODEL_FIELDS, "seed", "attack_run", "train_run", "config_label")}
        rec.update(metric=metric, eps=float(eps) if metric != "clean" else 0.0, value=value)
        out.append(rec)
    return out


def reference_config(rows: list[dict], model_kind: str) -> str | None:
    """The configuration of ``model_kind`` with the most attack runs (ties: the latest run)."""
    runs = {}
    for r in rows:
        if r["model_kind"] == model_kind:
            runs.setdefault(r["attack_run"], r["config_label"])
    if not runs:
        return None
    counts: dict[str, list] = defaultdict(list)
    for run, label in runs.items():
        counts[label].append(Path(run).name)
    return max(counts, key=lambda lab: (len(counts[lab]), max(counts[lab])))


def headline_table(rows: list[dict], eps_list: Iterable[float] = (0.1, 0.2)) -> list[dict]:
    """Clean and robust accuracy per model and attack at each eps, for each kind's reference config.

    One row per (model_kind, evaluated model, attack, loss, norm, source, noise_mode): ``n_runs``, ``clean``
    (mean clean accuracy of those runs) and, for each eps, ``robust@<eps>`` (mean over runs) and
    ``robust@<eps>_ci`` (half-width of the 95% CI over runs; nan for a single run).
    """
    eps_list = list(eps_list)
    out = []
    for kind in sorted({r["model_kind"] for r in rows if r["model_kind"]}):
        ref = reference_config(rows, kind)
        sel = [r for r in rows if r["model_kind"] == kind and r["config_label"] == ref]
        groups = group_rows(sel, lambda r: (r["model"], r["attack"], r.get("loss"), r["norm"], r.get("source") or "",
                                           r.get("noise_mode") or ""))
        for (model, attack, loss, norm, source, noise_mode), g in groups.items():
            runs = sorted({r["attack_run"] for r in g})
            clean = [next(r["clean_accuracy"] for r in g if r["attack_run"] == run) for run in runs]
            row = {"model_kind": kind, "config": ref, "model": model, "attack": attack, "loss": loss, "norm": norm,
                   "source": source, "noise_mode": noise_mode, "n_runs": len(runs), "clean": mean_ci(clean)[0]}
            for eps in eps_list:
                vals = [r["robust_acc"] for r in g if eps_equal(r["eps"], eps)]
                m, lo, hi = mean_ci(vals)
                row[f"robust@{eps:g}"] = m
                row[f"robust@{eps:g}_ci"] = (hi - lo) / 2 if not math.isnan(lo) else math.nan
            out.append(row)
    return out


def mechanism_table(rows: list[dict], metrics: Sequence[str] = ("worst", "pgd_mse", "clean"),
                    eps_list: Sequence[float] = (0.1,)) -> list[dict]:
    """Every mechanism test for every model kind, metric and eps, from attack-table ``rows``
    (the tests: :mod:`analysis.stats`)."""
    out = []
    for metric in metrics:
        for eps in (eps_list if metric != "clean" else [0.0]):
            recs = metric_records(rows, metric, eps)
            for kind in sorted({r["model_kind"] for r in recs if r["model_kind"]}):
                mine = [r for r in recs if r["model_kind"] == kind]
                out += width_effect(mine) + ltd_effect(mine) + k_effect(mine)
    return out
