"""Statistics of the three mechanisms (width, LTD, K) over seeds, from per-run metric records.

A *record* is one attack run's value of a metric at one eps (see
:func:`analysis.tables.metric_records`): fields ``model_kind, width, k, ltd, granule, task, seed,
value``. Records with the same configuration and seed (an attack repeated on one trained model) are
averaged first, so each trained model counts once.

Tests, one family per mechanism and model kind:

width
    Least-squares regression of the metric on ``log10(width)`` (``scipy.stats.linregress``) within
    each stratum of the other settings (ltd, k, granule, task) in which the width varies. Effect =
    slope per decade of width with its 95% CI (t distribution, n - 2 dof); ``statistic`` is
    Pearson's r, whose two-sided p equals that of the slope. Needs >= 5 runs at >= 3 widths: two
    widths cannot tell a trend from a step, and with fewer points the CI is uninformative.
LTD
    Paired comparison of LTD on (``ltd`` = ``ma`` for the rate model, ``cf`` for the spiking
    network; any value other than ``none``) against off (``none``), pairs matched on seed, width,
    k, granule and task, so that each pair shares its granule layer and training data order.
    Effect = mean difference on - off with its 95% CI; the paired t-test is the primary test (each
    value is an accuracy over hundreds of images, so differences are close to normal). Cohen's
    d_z = mean(d) / sd(d) is the effect size. The Wilcoxon signed-rank test is added as a
    distribution-free check only from 6 pairs on: below that its smallest attainable two-sided p
    (exact null distribution: 2 / 2**n) is >= 0.0625, so it could never reject at 0.05.
    Needs >= 3 pairs (two give a t-test with one degree of freedom).
K
    Spearman rank correlation of the metric with K within each stratum of (width, ltd, granule,
    task): K sweeps are few and not evenly spaced, and the question is monotonic (does sparser
    input help?), not linear. Effect = rho with a 95% CI from Fisher's z with the Spearman variance
    1.06 / (n - 3) (Fieller, Hartley & Pearson 1957). Needs >= 5 runs at >= 3 values of K.

Every result is a row of :data:`MECHANISM_COLUMNS`; when a test cannot be run, ``note`` says why,
e.g. ``not enough runs (have 2, need 3)``.
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np
from scipy import stats


__all__ = ["censored_median", "MECHANISM_COLUMNS", "MIN_WIDTH_RUNS", "MIN_WIDTH_LEVELS", "MIN_LTD_PAIRS", "MIN_WILCOXON_PAIRS",
           "MIN_K_RUNS", "MIN_K_LEVELS", "mean_ci", "collapse_seeds", "level_table", "width_effect",
           "ltd_effect", "k_effect", "not_enough", "MODEL_FIELDS"]

MECHANISM_COLUMNS = ["model_kind", "mechanism", "metric", "eps", "n", "effect", "ci_low", "ci_high", "statistic",
                     "p_value", "test", "note"]
# the fields that define a configuration in a record (tables.py builds records with them)
MODEL_FIELDS = ("width", "k", "ltd", "granule", "task")
MIN_WIDTH_RUNS, MIN_WIDTH_LEVELS = 5, 3
MIN_LTD_PAIRS, MIN_WILCOXON_PAIRS = 3, 6
MIN_K_RUNS, MIN_K_LEVELS = 5, 3
NAN = math.nan


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its ``level`` confidence interval (Student t over the values): ``(mean, low, high)``.

    One value gives ``(value, nan, nan)``; no values give three nans.
    """
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return NAN, NAN, NAN
    m = float(x.mean())
    if x.size == 1:
        return m, NAN, NAN
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, m - half, m + half


def censored_median(values: Iterable[float], reached: Iterable[bool]) -> float:
    """The median of right-censored counts: the smallest ``x`` such that at least half of the items
    reached their goal with at most ``x`` (the lower median, items that never reached it counting as
    infinite). ``inf`` when fewer than half reached it; NaN for no items."""
    v = np.where(np.asarray(list(reached), bool), np.asarray(list(values), float), np.inf)
    if not len(v):
        return float("nan")
    return float(np.sort(v)[(len(v) - 1) // 2])


def not_enough(have: int, need: int, what: str = "runs") -> str:
    """The note written where a test needs more data: ``not enough runs (have 2, need 3)``."""
    return f"not enough {what} (have {have}, need {need})"


def _key(rec: dict) -> tuple:
    return (rec["model_kind"], rec.get("metric"), rec.get("eps"), *(rec.get(f) for f in MODEL_FIELDS), rec.get("seed"))


def collapse_seeds(records: Iterable[dict]) -> list[dict]:
    """Average records sharing model kind, metric, eps, configuration and seed (one trained model, one value)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        groups[_key(rec)].append(rec)
    out = []
    for g in groups.values():
        rec = dict(g[0])
        rec["value"] = float(np.mean([r["value"] for r in g]))
        rec["n_attack_runs"] = len(g)
        out.append(rec)
    return out


def level_table(records: Iterable[dict]) -> list[dict]:
    """Mean and 95% CI over seeds of each configuration: one row per (model_kind, metric, eps, config)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in collapse_seeds(records):
        groups[(rec["model_kind"], rec["metric"], rec["eps"], *(rec.get(f) for f in MODEL_FIELDS))].append(rec)
    out = []
    for key, g in groups.items():
        m, lo, hi = mean_ci([r["value"] for r in g])
        row = {"model_kind": key[0], "metric": key[1], "eps": key[2]}
        row.update({f: v for f, v in zip(MODEL_FIELDS, key[3:])})
        row.update(config_label=g[0]["config_label"], n_seeds=len(g), mean=m, ci_low=lo, ci_high=hi,
                   seeds=" ".join(str(r["seed"]) for r in sorted(g, key=lambda r: (r["seed"] is None, r["seed"]))))
        out.append(row)
    out.sort(key=lambda r: (r["model_kind"], r["metric"], r["eps"], str(r["task"]), str(r["ltd"]),
                            r["width"] or 0, r["k"] or 0))
    return out


def _result(records: Sequence[dict], mechanism: str, n: int, **values) -> dict:
    rec = records[0] if records else {}
    row = {"model_kind": rec.get("model_kind"), "mechanism": mechanism, "metric": rec.get("metric"),
           "eps": rec.get("eps"), "n": n, "effect": NAN, "ci_low": NAN, "ci_high": NAN, "statistic": NAN,
           "p_value": NAN, "test": "", "note": ""}
    row.update(values)
    return row


def _strata(records: list[dict], field: str) -> dict[tuple, list[dict]]:
    others = [f for f in MODEL_FIELDS if f != field]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        groups[tuple(rec.get(f) for f in others)].append(rec)
    return dict(groups)


def _stratum_text(rec: dict, field: str) -> str:
    return ", ".join(f"{f}={rec[f]}" for f in MODEL_FIELDS if f != field and rec.get(f) is not None)


def _sweep(records: list[dict], field: str, min_runs: int, min_levels: int, plural: str, test) -> list[dict]:
    """Run ``test`` in every stratum where ``field`` varies, or say why there is nothing to test."""
    records = [r for r in collapse_seeds(records) if r.get(field) is not None]
    if not records:
        return []
    strata = _strata(records, field)
    varying = {k: g for k, g in strata.items() if len({r[field] for r in g}) >= 2}
    if not varying:
        biggest = max(strata.values(), key=len)
        return [_result(biggest, field, len(biggest), note=f"{not_enough(1, min_levels, plural)}: "
                        f"{field} never varies ({_stratum_text(biggest[0], field)})")]
    out = []
    for g in varying.values():
        levels = len({r[field] for r in g})
        where = _stratum_text(g[0], field)
        if len(g) < min_runs:
            out.append(_result(g, field, len(g), note=f"{not_enough(len(g), min_runs)}; {where}"))
        elif levels < min_levels:
            out.append(_result(g, field, len(g), note=f"{not_enough(levels, min_levels, plural)}; {where}"))
        else:
            out.extend(test(g, where))
    return out


def _width_test(g: list[dict], where: str) -> list[dict]:
    x = np.log10([float(r["width"]) for r in g])
    y = np.asarray([r["value"] for r in g], dtype=float)
    if np.ptp(y) == 0:
        return [_result(g, "width", len(g), effect=0.0, test="linregress",
                        note=f"all values equal ({y[0]:.4g}); no test; {where}")]
    res = stats.linregress(x, y)
    half = float(stats.t.ppf(0.975, len(g) - 2) * res.stderr)
    return [_result(g, "width", len(g), effect=float(res.slope), ci_low=float(res.slope - half),
                    ci_high=float(res.slope + half), statistic=float(res.rvalue), p_value=float(res.pvalue),
                    test="linregress",
                    note=f"slope per decade of width; statistic = Pearson r; "
                         f"widths {sorted({r['width'] for r in g})}; {where}")]


def width_effect(records: Iterable[dict], min_runs: int = MIN_WIDTH_RUNS,
                 min_levels: int = MIN_WIDTH_LEVELS) -> list[dict]:
    """Regression of the metric on log10(width), per stratum (see the module docstring)."""
    return _sweep(list(records), "width", min_runs, min_levels, "widths", _width_test)


def _k_test(g: list[dict], where: str) -> list[dict]:
    k = np.asarray([float(r["k"]) for r in g])
    y = np.asarray([r["value"] for r in g], dtype=float)
    if np.ptp(y) == 0:
        return [_result(g, "k", len(g), effect=0.0, test="spearman",
                        note=f"all values equal ({y[0]:.4g}); no test; {where}")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.spearmanr(k, y)
    rho, p = float(res.statistic), float(res.pvalue)
    n = len(g)
    z = math.atanh(max(-1 + 1e-12, min(1 - 1e-12, rho)))
    half = 1.959963984540054 * math.sqrt(1.06 / (n - 3)) if n > 3 else math.inf
    return [_result(g, "k", n, effect=rho, ci_low=math.tanh(z - half), ci_high=math.tanh(z + half), statistic=rho,
                    p_value=p, test="spearman",
                    note=f"rank correlation with K; K values {sorted({r['k'] for r in g})}; {where}")]


def k_effect(records: Iterable[dict], min_runs: int = MIN_K_RUNS, min_levels: int = MIN_K_LEVELS) -> list[dict]:
    """Spearman correlation of the metric with K, per stratum (see the module docstring)."""
    return _sweep(list(records), "k", min_runs, min_levels, "values of K", _k_test)


def ltd_effect(records: Iterable[dict], min_pairs: int = MIN_LTD_PAIRS,
               wilcoxon_min: int = MIN_WILCOXON_PAIRS) -> list[dict]:
    """Paired LTD on - off comparison (paired t-test, Cohen's d_z, Wilcoxon from 6 pairs on)."""
    records = [r for r in collapse_seeds(records) if r.get("ltd") is not None]
    if not records:
        return []
    match = [f for f in MODEL_FIELDS if f != "ltd"] + ["seed"]
    off = {tuple(r.get(f) for f in match): r for r in records if r["ltd"] == "none"}
    on_values = sorted({r["ltd"] for r in records if r["ltd"] != "none"})
    if not off or not on_values:
        present = sorted({r["ltd"] for r in records})
        return [_result(records, "ltd", 0, note=f"{not_enough(0, min_pairs)}: on/off pairs; only ltd={present} ran")]
    out = []
    for on_value in on_values:
        pairs = [(r, off[key]) for r in records if r["ltd"] == on_value
                 and (key := tuple(r.get(f) for f in match)) in off]
        n = len(pairs)
        what = f"ltd {on_value} - none, paired on seed, width, k, granule, task"
        recs = [p[0] for p in pairs] or records
        if n < min_pairs:
            out.append(_result(recs, "ltd", n, note=f"{not_enough(n, min_pairs)}: on/off pairs; {what}"))
            continue
        d = np.asarray([a["value"] - b["value"] for a, b in pairs])
        m, lo, hi = mean_ci(d)
        sd = float(d.std(ddof=1))
        if sd == 0:
            out.append(_result(recs, "ltd", n, effect=m, ci_low=m, ci_high=m, test="paired t",
                               note=f"all {n} differences equal; no test; {what}"))
            continue
        t = stats.ttest_1samp(d, 0.0)
        dz = m / sd
        out.append(_result(recs, "ltd", n, effect=m, ci_low=lo, ci_high=hi, statistic=float(t.statistic),
                           p_value=float(t.pvalue), test="paired t", note=f"mean difference; {what}"))
        out.append(_result(recs, "ltd", n, effect=dz, test="cohen dz", note=f"mean(d) / sd(d); {what}"))
        if n >= wilcoxon_min:
            if np.all(d == 0):
                continue
            w = stats.wilcoxon(d)
            out.append(_result(recs, "ltd", n, effect=float(np.median(d)), statistic=float(w.statistic),
                               p_value=float(w.pvalue), test="wilcoxon", note=f"median difference; {what}"))
        else:
            out.append(_result(recs, "ltd", n, test="wilcoxon",
                               note=f"{not_enough(n, wilcoxon_min)}: pairs; below 6 pairs the signed-rank test "
                                    f"cannot reach p < 0.05; {what}"))
    return out
