"""``docs/spikes.md``: the spike-domain attacks (``cereb attack --set attack.domain=spikes``) of every
network they were run on, from the run folders or from the tidy tables committed beside the page.

``docs/spikes_runs.csv`` holds one row per attack run and method (:data:`RUN_COLUMNS`: the network,
the budgets, the fraction flipped, the censored medians of the edits, the natural variability);
``docs/spikes_images.csv`` one row per run, image and method (:data:`IMAGE_COLUMNS`). ``cereb report
DIR --spikes`` adds the runs under DIR (a run already in the tables is replaced) and rebuilds the
page and its figures from the tables alone, so a fresh clone can rebuild it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from analysis.stats import censored_median
from core.runs import atomic_write_text, read_csv, write_csv

log = logging.getLogger(__name__)

__all__ = ["RUN_COLUMNS", "IMAGE_COLUMNS", "collect", "merge", "write", "read_table"]

RUN_COLUMNS = ["attack_run", "train_run", "width", "k", "ltd", "seed", "test_accuracy", "images", "attacked",
               "natural_variability_median", "pixel_edits_median", "method", "flipped_frozen", "median_edits_frozen",
               "success_fresh_mean", "median_edits_fresh", "queries_median", "spike_budget", "silence_budget_ms",
               "spike_queries", "fresh_repeats", "wall_s", "git_commit", "platform"]
IMAGE_COLUMNS = ["attack_run", "image", "label", "method", "edits", "fooled_frozen", "success_fresh",
                 "natural_variability", "pixel_edits"]
METHODS = ("gradient", "gradient-eot", "search", "search-eot", "shift")


def read_table(path: Path, columns: list[str]) -> list[dict]:
    """A committed table (empty when the file does not exist); a file without ``columns`` is an error."""
    if not Path(path).is_file():
        return []
    rows = read_csv(path)
    missing = [c for c in columns if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path} is not a spike-domain table: it lacks the columns {', '.join(missing)}")
    return rows


def collect(root: str | Path) -> tuple[list[dict], list[dict]]:
    """``(runs, images)`` rows of every completed spike-domain attack run under ``root``."""
    from analysis.tables import Study

    study = Study(root)
    runs, images = [], []
    for arun in study.attacks:
        path = Path(arun["path"])
        if not (path / "robustness_spikes.csv").is_file():
            continue
        train, f, m = arun["train"], arun["fields"], arun["metrics"]
        acfg = (arun["config"].get("attack") or {})
        label = study.label(arun)
        if train is None:  # its training run is not under root: the network as the attack run recorded it
            f = {"width": m.get("network_width"), "k": m.get("network_k"), "ltd": m.get("network_ltd"),
                 "seed": m.get("network_seed")}
        base = {"attack_run": label, "train_run": study.label(train) if train else "",
                "width": f.get("width"), "k": "dense" if f.get("k") in (None, "") else f.get("k"), "ltd": f.get("ltd"),
                "seed": f.get("seed"), "test_accuracy": m.get("source_test_accuracy"),
                "images": m.get("spike_images"), "attacked": m.get("spike_attacked"),
                "spike_budget": acfg.get("spike_budget"),
                "silence_budget_ms": acfg.get("silence_budget_ms"), "spike_queries": acfg.get("spike_queries"),
                "fresh_repeats": acfg.get("fresh_repeats"), "wall_s": arun["meta"].get("wall_s"),
                "git_commit": (arun["meta"].get("git_commit") or "")[:10],
                "platform": arun["meta"].get("platform") or ""}
        table = read_csv(path / "robustness_spikes.csv")
        var = {r["image"]: r for r in read_csv(path / "spike_variability.csv")} \
            if (path / "spike_variability.csv").is_file() else {}
        # the summaries, from the run's tables (not its metrics): one definition for every run
        attacked = [var[i] for i in sorted({r["image"] for r in table}) if i in var]
        base["natural_variability_median"] = float(np.median([_num(v["natural_variability"]) for v in attacked])) \
            if attacked else float("nan")
        base["pixel_edits_median"] = censored_median([_num(v["pixel_edits"]) for v in attacked],
                                                     [np.isfinite(_num(v["pixel_eps"])) for v in attacked]) \
            if attacked and any(_num(e) > 0 for e in acfg.get("eps", ())) else float("nan")
        for method in dict.fromkeys(r["method"] for r in table):
            sel = [r for r in table if r["method"] == method]
            fooled = [int(_num(r["fooled_frozen"])) == 1 for r in sel]
            fresh = [_num(r["success_fresh"]) for r in sel]
            has_fresh = any(np.isfinite(fresh))
            runs.append({**base, "method": method, "flipped_frozen": float(np.mean(fooled)),
                         "median_edits_frozen": censored_median([r["edits"] for r in sel], fooled),
                         "success_fresh_mean": float(np.nanmean(fresh)) if has_fresh else "",
                         "median_edits_fresh": censored_median([r["edits"] for r in sel], [f > 0.5 for f in fresh])
                         if has_fresh else "",
                         "queries_median": float(np.median([r["queries"] for r in sel]))})
        for r in table:
            v = var.get(r["image"], {})
            images.append({"attack_run": label, "image": r["image"], "label": v.get("label", ""),
                           "method": r["method"], "edits": r["edits"], "fooled_frozen": r["fooled_frozen"],
                           "success_fresh": r["success_fresh"], "natural_variability": v.get("natural_variability", ""),
                           "pixel_edits": v.get("pixel_edits", "")})
    return runs, images


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows of runs that ``new`` does not hold, then ``new``."""
    fresh = {r["attack_run"] for r in new}
    return [r for r in old if r["attack_run"] not in fresh] + list(new)


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(v, digits: int = 0) -> str:
    x = _num(v)
    if np.isnan(x):
        return "-"
    return "inf" if np.isinf(x) else f"{x:.{digits}f}"


def _network(r: dict) -> str:
    return f"w={r['width']}, K={r['k']}, LTD {r['ltd']}"


def write(runs: list[dict], images: list[dict], docs: str | Path) -> Path:
    """Write ``spikes_runs.csv``, ``spikes_images.csv``, ``spikes.md`` and its figure into ``docs``."""
    docs = Path(docs)
    docs.mkdir(parents=True, exist_ok=True)
    write_csv(docs / "spikes_runs.csv", runs, RUN_COLUMNS)
    write_csv(docs / "spikes_images.csv", images, IMAGE_COLUMNS)
    by_run: dict[str, list[dict]] = {}
    for r in runs:
        by_run.setdefault(r["attack_run"], []).append(r)
    def k_key(k):
        return (1, 0.0) if str(k) == "dense" else (0, _num(k))

    order = sorted(by_run, key=lambda a: (-_num(by_run[a][0]["images"]), _num(by_run[a][0]["width"]),
                                          k_key(by_run[a][0]["k"]), str(by_run[a][0]["ltd"]), str(by_run[a][0]["seed"]),
                                          a))
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    lines = ["# Spike-domain attacks: how many spikes change a cerebellar decision", "",
             "Generated by `cereb report DIR --spikes` from the attack runs under DIR and the rows of "
             "`docs/spikes_runs.csv` and `docs/spikes_images.csv` that no new run replaces; do not edit by hand.", "",
             "An experimenter can add spikes to identified mossy fibres or silence them, on top of whatever the fibres "
             "fire on a trial; `cereb attack --run SPIKING_RUN --set attack.domain=spikes` searches for the smallest "
             "such edit that changes the network's decision (threat model, methods and budgets: README, \"Attacks in "
             "the spike domain\", and `attacks/spikes.py`). Edits = spikes delivered + spikes of the frozen trial "
             "silenced (`shift`: spikes of that trial moved in time, a frozen-trial diagnostic). An image is "
             "flipped when another class's Purkinje score is strictly higher; only images the network classifies "
             "correctly with a clear winner on the frozen trial are attacked. Medians are over every attacked image, "
             "an image not flipped counting as infinitely many edits (`inf`: fewer than half flipped); fresh: the "
             "same edits flip the decision on more than half of the fresh-noise trials.", "",
             "The natural variability is what two Poisson draws of the same image differ by (sum over fibres of the "
             "absolute difference in spike counts over the window); pixel edits are the spikes a pixel adversarial "
             "(surrogate PGD, the smallest eps that flips the frozen trial) changes on that trial.", "",
             "One row per attacked network (one trained seed, a few dozen test images each): the table describes "
             "each network; it does not test a mechanism, which needs several seeds per setting "
             "(`docs/findings.md`).", ""]
    if not runs:
        lines += ["No spike-domain attack runs yet."]
        out = docs / "spikes.md"
        atomic_write_text(out, "\n".join(lines) + "\n")
        return out
    head = ["network", "seed", "clean acc.", "images", "attacked", "natural variability", "pixel edits"]
    head += [f"{m}: flipped, median edits frozen" + ("" if m == "shift" else "; fresh") for m in methods]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in order:
        r0 = by_run[a][0]
        cells = [_network(r0), str(r0["seed"]), _fmt(r0["test_accuracy"], 3), str(r0["images"]), str(r0["attacked"]),
                 _fmt(r0["natural_variability_median"], 1), _fmt(r0["pixel_edits_median"], 1)]
        for m in methods:
            r = next((x for x in by_run[a] if x["method"] == m), None)
            if r is None:
                cells.append("-")
                continue
            cell = f"{_fmt(r['flipped_frozen'], 2)}, {_fmt(r['median_edits_frozen'], 1)}"
            if m != "shift":
                cell += f"; {_fmt(r['median_edits_fresh'], 1)}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Runs (wall time on the machine its `meta.json` names): "
              + ", ".join(f"`{a}` ({by_run[a][0]['wall_s'] and _fmt(by_run[a][0]['wall_s'])} s on "
                          f"{by_run[a][0].get('platform') or 'an unrecorded machine'}, commit "
                          f"{by_run[a][0]['git_commit']})" for a in order) + ".", ""]
    lines += _answer(by_run, order)
    p = _plot(by_run, order, images, docs / "spikes_edits.png")
    if p is not None:
        lines += ["", f"![spike edits]({p.name})", "",
                  f"Left: for the network with the most attacked images (`{order[0]}`), the fraction of attacked "
                  "images flipped with at most x edits, per method, beside the natural variability and the pixel "
                  "adversarials' spike changes. Right: per network, the median edits to flip the frozen trial "
                  "(`gradient`) and the fresh-noise decision (`gradient-eot`), against the natural variability."]
    out = docs / "spikes.md"
    atomic_write_text(out, "\n".join(lines).rstrip() + "\n")
    return out


MIN_ATTACKED = 10  # networks with fewer attacked images are left out of the reading's ranges


def _answer(by_run: dict, order: list[str]) -> list[str]:
    """The plain-words reading, computed from the table (networks with at least ``MIN_ATTACKED``
    attacked images)."""
    out = []
    few = [a for a in order if _num(by_run[a][0]["attacked"]) < MIN_ATTACKED]
    order = [a for a in order if a not in few]
    for method, what in (("gradient", "on the frozen trial"), ("gradient-eot", "under fresh noise")):
        key = "median_edits_frozen" if method == "gradient" else "median_edits_fresh"
        vals = [(a, _num(next((r[key] for r in by_run[a] if r["method"] == method), np.nan)),
                 _num(by_run[a][0]["natural_variability_median"])) for a in order]
        vals = [(a, e, n) for a, e, n in vals if not np.isnan(e) and n > 0]
        if not vals:
            continue
        finite = [(a, e, n) for a, e, n in vals if np.isfinite(e)]
        ratio = [e / n for _, e, n in finite]
        text = (f"`{method}` {what}: the median number of spike edits to flip a decision is finite for "
                f"{len(finite)} of {len(vals)} networks")
        if len(finite) == 1:
            text += (f": {finite[0][1]:.0f} spikes, {ratio[0]:.2f} times the natural variability of its input "
                     f"({finite[0][2]:.0f} spikes)")
        elif finite:
            text += (f", from {min(e for _, e, _ in finite):.0f} to {max(e for _, e, _ in finite):.0f} spikes, "
                     f"{min(ratio):.2f} to {max(ratio):.2f} times the natural variability of the same networks' "
                     f"input")
        out.append(text + ".")
    if few:
        out.append(f"Left out of these ranges: {len(few)} network(s) with fewer than {MIN_ATTACKED} attacked images ("
                   + "; ".join(f"{_network(by_run[a][0])}, seed {by_run[a][0]['seed']}: {by_run[a][0]['attacked']}"
                               for a in few) + ").")
    if out:
        out = ["Reading the table:", ""] + [f"- {t}" for t in out]
    return out


def _plot(by_run: dict, order: list[str], images: list[dict], path: Path) -> Path | None:
    from analysis.figures import _plt, _save, draw_spike_edits

    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6))
    mine = [r for r in images if r["attack_run"] == order[0]]
    per_image = {}
    for r in mine:
        per_image.setdefault(r["image"], r)
    draw_spike_edits(ax, mine, list(per_image.values()))
    labels, frozen, fresh, nat = [], [], [], []
    for a in order:
        rs = {r["method"]: r for r in by_run[a]}
        labels.append(f"{_network(by_run[a][0])}\nseed {by_run[a][0]['seed']}")
        frozen.append(_num(rs.get("gradient", {}).get("median_edits_frozen")))
        fresh.append(_num(rs.get("gradient-eot", {}).get("median_edits_fresh")))
        nat.append(_num(by_run[a][0]["natural_variability_median"]))
    y = np.arange(len(labels))
    cap = np.nanmax([v for v in (*frozen, *fresh, *nat) if np.isfinite(v)] + [1.0]) * 1.15
    for vals, off, lab, col in ((frozen, -0.2, "gradient (frozen)", "tab:blue"),
                                (fresh, 0.2, "gradient-eot (fresh)", "tab:orange")):
        v = np.array(vals)
        bx.barh(y + off, np.where(np.isinf(v), cap, np.nan_to_num(v, nan=0.0)), height=0.38, color=col, label=lab,
                alpha=0.85)  # inf (fewer than half flipped): a bar to the edge, marked; not run: no bar
        for yy, vv in zip(y + off, v):
            if np.isinf(vv):
                bx.text(cap, yy, " inf", va="center", fontsize=6)
    bx.scatter(nat, y, marker="|", s=200, color="k", label="natural variability", zorder=3)
    bx.set_yticks(y)
    bx.set_yticklabels(labels, fontsize=6)
    bx.invert_yaxis()
    bx.set_xlabel("median spike edits to flip (or spikes)")
    bx.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    fig.tight_layout()
    return _save(fig, path)
