"""Mechanism verdicts: does width, LTD or sparse connectivity make a model more robust?

Pure statistics on per-run *records* (one trained network = one record; fields ``model_kind,
width, k, ltd, seed``, ``robust`` = robust accuracy and ``clean`` = clean accuracy, both in
[0, 1]). The trained network (its seed) is the unit of analysis, never the image: the images of
one network share its weights and noise, so they are not independent replicates of the question.

Every verdict is oriented so that a positive effect means *the feature helps*:

width
    Least-squares regression of robust accuracy on ``log2(width)`` over the width sweep (every
    run at the reference K and LTD setting). Effect = the fitted difference between the widest
    and the narrowest width of the sweep (slope x log2(max / min)), its 95% interval and the
    slope's t-test (n - 2 degrees of freedom).
ltd
    Paired comparison of LTD on against off at the reference width and K, pairs matched on seed
    (one pair shares its granule layer, its inputs and their order). Effect = mean difference
    on - off; paired t-test (n - 1 degrees of freedom).
k (sparse connectivity)
    Regression of robust accuracy on ``log2(K)`` over the K sweep (reference width and LTD
    setting; the dense layer has K = the number of inputs). Effect = the fitted difference
    between the sparsest and the densest K (so positive = sparser is more robust); the slope's
    t-test.
spiking - rate
    The two models at the same width, K and LTD setting (each model's own LTD): Welch's t-test of
    the two groups of seeds. Effect = mean(spiking) - mean(rate).

The clean-accuracy effect of the same contrast is computed alongside each row (same test), so
that a robustness gain bought with clean accuracy is visible.

**Multiple comparisons.** The robust-accuracy tests of one findings table form one family; their
p-values are adjusted by Holm's step-down method (controls the family-wise error rate at 5%
under any dependence; Holm 1979). The verdict uses the adjusted p-value.

**Power.** For each row, ``mde`` is the smallest absolute effect (same units as ``effect``)
that its test would detect with 80% power at two-sided alpha 0.05, given the row's observed
standard error and degrees of freedom (noncentral t). A row that is not significant reads
"no detectable effect (could detect >= X points)": the study cannot rule out an effect below X.
:func:`planned_mde` gives the same figure for a design before it runs (an assumed seed-to-seed
standard deviation), which is how ``studies/answer_digits.yaml`` is sized.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from scipy import optimize, stats

__all__ = ["ALPHA", "POWER", "VERDICT_COLUMNS", "mde", "planned_mde", "holm", "width_verdict", "ltd_verdict",
           "k_verdict", "model_contrast", "confounded", "verdict_text", "verdict_table"]

ALPHA = 0.05
POWER = 0.8
NAN = math.nan
VERDICT_COLUMNS = ["model_kind", "mechanism", "manipulation", "contrast", "n", "effect", "ci_low", "ci_high", "test",
                   "df", "statistic", "p_value", "p_holm", "mde", "clean_effect", "clean_ci_low", "clean_ci_high",
                   "confounded", "verdict", "note"]


# ----------------------------------------------------------------------------- power
def _power(nc: float, df: float, alpha: float) -> float:
    crit = stats.t.ppf(1 - alpha / 2, df)
    p = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    if math.isnan(p):  # scipy's noncentral t fails far in the tail: the normal approximation there
        p = float(stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc))
    return p


def mde(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest |effect| a two-sided t-test with standard error ``se`` and ``df`` degrees of
    freedom detects with probability ``power`` (noncentral t); nan when it cannot be computed."""
    if not (se > 0 and math.isfinite(se) and df >= 1):
        return NAN
    nc = optimize.brentq(lambda d: _power(d, df, alpha) - power, 1e-6, 100.0)
    return float(nc * se)


def planned_mde(design: str, sd: float, n: int, *, levels: Sequence[float] | None = None,
                alpha: float = ALPHA, power: float = POWER) -> float:
    """The minimal detectable effect of a design before it runs, for a seed-to-seed SD ``sd``.

    ``design``: ``paired`` (``n`` pairs, ``sd`` = SD of the paired differences), ``two-sample``
    (``n`` seeds per group, ``sd`` per group) or ``trend`` (``n`` seeds at each of ``levels``, the
    x values on a log2 scale are taken from them, ``sd`` = residual SD; the effect is the fitted
    difference between the extreme levels).
    """
    if design == "paired":
        return mde(sd / math.sqrt(n), n - 1, alpha, power)
    if design == "two-sample":
        return mde(sd * math.sqrt(2.0 / n), 2 * n - 2, alpha, power)
    if design == "trend":
        if not levels or len(levels) < 3:
            raise ValueError("a trend design needs >= 3 levels")
        x = np.repeat(np.log2(np.asarray(levels, dtype=float)), n)
        span = float(x.max() - x.min())
        se_slope = sd / math.sqrt(float(((x - x.mean()) ** 2).sum()))
        return mde(se_slope * span, x.size - 2, alpha, power)
    raise ValueError(f"unknown design {design!r} (paired, two-sample, trend)")


# ----------------------------------------------------------------------------- multiple comparisons
def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan entries stay nan and do not count)."""
    idx = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    order = sorted(idx, key=lambda i: p_values[i])
    m = len(order)
    out = [NAN] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


# ----------------------------------------------------------------------------- tests
def _row(model_kind: str, mechanism: str, manipulation: str, contrast: str, n: int, **values) -> dict:
    row = {c: NAN for c in VERDICT_COLUMNS}
    row.update(model_kind=model_kind, mechanism=mechanism, manipulation=manipulation, contrast=contrast, n=n,
               test="", verdict="", note="")
    row.update(values)
    return row


def _trend(x: np.ndarray, y: np.ndarray, span: float) -> dict:
    """Slope test of y on x, the effect scaled to ``span`` (x units between the two settings)."""
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        return {}
    res = stats.linregress(x, y)
    df = n - 2
    se = float(res.stderr) * abs(span)
    eff = float(res.slope) * span
    if se == 0:
        return {"effect": eff, "ci_low": eff, "ci_high": eff, "df": df, "statistic": NAN, "p_value": NAN, "se": 0.0}
    half = float(stats.t.ppf(0.975, df)) * se
    return {"effect": eff, "ci_low": eff - half, "ci_high": eff + half, "df": df,
            "statistic": float(res.slope / res.stderr), "p_value": float(res.pvalue), "se": se}


def _paired(d: np.ndarray) -> dict:
    n = len(d)
    if n < 2:
        return {}
    m = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return {"effect": m, "ci_low": m, "ci_high": m, "df": n - 1, "statistic": NAN, "p_value": NAN, "se": 0.0}
    half = float(stats.t.ppf(0.975, n - 1)) * se
    return {"effect": m, "ci_low": m - half, "ci_high": m + half, "df": n - 1, "statistic": m / se,
            "p_value": float(2 * stats.t.sf(abs(m / se), n - 1)), "se": se}


def _welch(a: np.ndarray, b: np.ndarray) -> dict:
    if len(a) < 2 or len(b) < 2:
        return {}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    m = float(a.mean() - b.mean())
    if se == 0:
        return {"effect": m, "ci_low": m, "ci_high": m, "df": len(a) + len(b) - 2, "statistic": NAN,
                "p_value": NAN, "se": 0.0}
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df)) * se
    t = m / se
    return {"effect": m, "ci_low": m - half, "ci_high": m + half, "df": float(df), "statistic": t,
            "p_value": float(2 * stats.t.sf(abs(t), df)), "se": se}


def _fill(row: dict, robust: dict, clean: dict, test: str, why_not: str) -> dict:
    if not robust:
        row["note"] = why_not
        return row
    se = robust.pop("se")
    row.update(robust, test=test, mde=mde(se, robust["df"]) if se > 0 else NAN)
    if clean:
        row.update(clean_effect=clean["effect"], clean_ci_low=clean["ci_low"], clean_ci_high=clean["ci_high"])
    return row


def _values(recs: Iterable[dict], field: str) -> np.ndarray:
    return np.asarray([float(r[field]) for r in recs], dtype=float)


def _sweep_verdict(records: Sequence[dict], model_kind: str, manipulation: str, field: str, plural: str,
                   sparse_is_on: bool) -> dict:
    """Regression on log2(``field``); the effect is the fitted difference between the extreme
    settings, oriented "feature on minus off": widest - narrowest, or sparsest - densest."""
    levels = sorted({float(r[field]) for r in records})
    name = "width" if field == "width" else "K"
    ends = (levels[0], levels[-1]) if sparse_is_on else (levels[-1], levels[0])
    contrast = f"{name} {int(ends[0])} vs {int(ends[1])}" if len(levels) >= 2 else name
    row = _row(model_kind, field, manipulation, contrast, len(records))
    if len(levels) < 3 or len(records) < 4:
        return _fill(row, {}, {}, "", f"needs >= 3 {plural} and >= 4 runs (have {len(levels)} and {len(records)})")
    x = np.log2(_values(records, field))
    span = math.log2(ends[0] / ends[1])
    return _fill(row, _trend(x, _values(records, "robust"), span), _trend(x, _values(records, "clean"), span),
                 f"linear regression on log2({name}), slope t-test", "")


def width_verdict(records: Sequence[dict], model_kind: str, manipulation: str) -> dict:
    """Width: regression on log2(width) over ``records`` (the width sweep of one model)."""
    return _sweep_verdict(records, model_kind, manipulation, "width", "widths", sparse_is_on=False)


def k_verdict(records: Sequence[dict], model_kind: str, manipulation: str) -> dict:
    """Sparse connectivity: regression on log2(K); effect = sparsest minus densest (fitted)."""
    return _sweep_verdict(records, model_kind, manipulation, "k", "values of K", sparse_is_on=True)


def ltd_verdict(on: Sequence[dict], off: Sequence[dict], model_kind: str, manipulation: str) -> dict:
    """LTD on - off, paired on seed."""
    off_by_seed = {r["seed"]: r for r in off}
    pairs = [(r, off_by_seed[r["seed"]]) for r in on if r["seed"] in off_by_seed]
    row = _row(model_kind, "ltd", manipulation, "LTD on vs off", len(pairs))
    if len(pairs) < 3:
        return _fill(row, {}, {}, "", f"needs >= 3 seed-matched on/off pairs (have {len(pairs)})")
    d = np.asarray([a["robust"] - b["robust"] for a, b in pairs])
    dc = np.asarray([a["clean"] - b["clean"] for a, b in pairs])
    return _fill(row, _paired(d), _paired(dc), "paired t-test (pairs matched on seed)", "")


def model_contrast(spiking: Sequence[dict], rate: Sequence[dict], contrast: str, manipulation: str) -> dict:
    """Spiking minus rate at one matched configuration: Welch's t-test over seeds."""
    row = _row("spiking - rate", "model", manipulation, contrast, len(spiking) + len(rate))
    if len(spiking) < 2 or len(rate) < 2:
        return _fill(row, {}, {}, "", f"needs >= 2 seeds of each model (have {len(spiking)} and {len(rate)})")
    return _fill(row, _welch(_values(spiking, "robust"), _values(rate, "robust")),
                 _welch(_values(spiking, "clean"), _values(rate, "clean")), "Welch t-test (seeds as units)", "")


def confounded(row: dict) -> bool:
    """True when the same contrast moves clean accuracy significantly (its 95% CI excludes 0) by at
    least half the robust-accuracy effect: the robustness difference is then (partly) a difference
    in how well the network classifies at all, e.g. a control that does not learn."""
    lo, hi, c = (_num(row.get(k)) for k in ("clean_ci_low", "clean_ci_high", "clean_effect"))
    eff = _num(row.get("effect"))
    if any(math.isnan(v) for v in (lo, hi, c, eff)):
        return False
    return (lo > 0 or hi < 0) and abs(c) >= 0.5 * abs(eff)


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return NAN


def verdict_text(row: dict, alpha: float = ALPHA) -> str:
    """One line: helps / hurts / no detectable effect at this power (with the minimal detectable effect)."""
    if not row.get("test"):
        return f"not tested: {row.get('note') or 'no runs'}"
    p = row.get("p_holm")
    if p is None or math.isnan(p):
        p = row.get("p_value")
    eff = row["effect"]
    what = {"width": "a wider granule layer", "ltd": "LTD", "k": "sparser connectivity"}.get(row["mechanism"])
    if p is not None and not math.isnan(p) and p < alpha:
        if what is None:
            return (f"the spiking network is {'more' if eff > 0 else 'less'} robust than the rate model "
                    f"({100 * eff:+.1f} points)")
        text = f"{'helps' if eff > 0 else 'hurts'}: {what} changes robust accuracy by {100 * eff:+.1f} points"
        if confounded(row):
            text += (f" (confounded: clean accuracy changes by {100 * _num(row['clean_effect']):+.1f} points as "
                     "well)")
        return text
    m = row.get("mde")
    bound = f"could detect >= {100 * m:.1f} points" if m is not None and not math.isnan(m) else "no power estimate"
    return f"no detectable effect at this power ({bound}; estimate {100 * eff:+.1f} points)"


def verdict_table(rows: list[dict], alpha: float = ALPHA) -> list[dict]:
    """Holm-adjust the family of ``rows`` (in place) and write each row's verdict; returns rows."""
    adj = holm([r.get("p_value", NAN) for r in rows])
    for row, p in zip(rows, adj):
        row["p_holm"] = p
        row["confounded"] = confounded(row)
        row["verdict"] = verdict_text(row, alpha)
    return rows
