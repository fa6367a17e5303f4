"""Figures (PNG, matplotlib's Agg backend) from tables and arrays read by the other modules.

Each ``plot_*`` function takes plain rows or arrays, writes one PNG atomically and returns its path
(None when it has nothing to draw). Nothing here reads run folders itself.
"""
from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from analysis.spikes import CONDITIONS, class_rates, psth
from analysis.stats import collapse_seeds, mean_ci
from analysis.tables import eps_equal, group_rows
from core.runs import atomic_write_bytes

__all__ = ["plot_robustness_curves", "plot_mechanism", "plot_decision", "plot_transfer", "plot_fidelity",
           "plot_rasters", "plot_psth", "plot_coding", "plot_trial_rasters", "plot_trial_psth", "plot_trial_class_rates", "plot_pc_classes", "plot_learning_curves", "plot_gallery",
           "image_shape"]

POP_NAMES = {"mf": "mossy fibres", "grc": "granule cells", "goc": "Golgi cells", "mli": "interneurons (MLI)", "pc": "Purkinje cells",
             "cf": "climbing fibres"}
KIND_COLOURS = {"rate": "tab:blue", "mlp": "tab:gray", "spiking": "tab:red", "surrogate": "tab:orange"}
LINESTYLES = ["-", "--", ":", "-."]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _grid(n: int, ncols: int = 4, size: tuple[float, float] = (3.3, 2.7)):
    plt = _plt()
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def image_shape(d: int) -> tuple[int, int]:
    """Square image shape for ``d`` pixels (64 -> 8x8, 196 -> 14x14, 784 -> 28x28), else one row."""
    side = int(round(math.sqrt(d)))
    return (side, side) if side * side == d else (1, d)


# ----------------------------------------------------------------------------- robustness
def _band(ax, xs: list[float], groups: list[list[float]], label: str, **style) -> None:
    stats_ = [mean_ci(g) for g in groups]
    m = np.array([s[0] for s in stats_])
    lo = np.array([s[1] for s in stats_])
    hi = np.array([s[2] for s in stats_])
    line, = ax.plot(xs, m, marker="o", markersize=3, label=label, **style)
    ok = ~np.isnan(lo)
    if ok.any():
        ax.fill_between(np.asarray(xs)[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.2, linewidth=0)


def plot_robustness_curves(rows: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Robust accuracy against eps, one panel per (attack, loss, norm), one line per evaluated model.

    ``rows`` are attack-table rows (already restricted to the configurations to show). Lines are the
    mean over attack runs with a 95% CI band when there are several runs.
    """
    rows = [r for r in rows if not math.isnan(r["robust_acc"]) and not math.isnan(r["eps"])]
    if not rows:
        return None
    panels = group_rows(rows, lambda r: (r["attack"], r.get("loss"), r["norm"]))
    keys = sorted(panels, key=lambda k: (k[2] != "linf", k[0], str(k[1])))
    fig, axes = _grid(len(keys))
    for ax, key in zip(axes, keys):
        lines = group_rows(panels[key], lambda r: (r["model_kind"], r["model"], r.get("source") or "",
                                                   r.get("noise_mode") or ""))
        for n, ((kind, model, source, noise), g) in enumerate(sorted(lines.items())):
            eps = sorted({round(r["eps"], 9) for r in g})
            vals = [[r["robust_acc"] for r in g if eps_equal(r["eps"], e)] for e in eps]
            label = kind if model == kind else f"{kind}: on {model}"
            if source and source not in (kind, model, "none"):
                label += f" (from {source})"
            if noise:
                label += f", {noise} noise"
            _band(ax, eps, vals, label, color=KIND_COLOURS.get(model if model == "surrogate" else kind),
                  linestyle=LINESTYLES[n % len(LINESTYLES)])
        attack, loss, norm = key
        ax.set_title(f"{attack}" + (f" / {loss}" if loss not in (None, "", "none") else "") + f" ({norm})", fontsize=9)
        ax.set_xlabel(f"eps ({norm})", fontsize=8)
        ax.set_ylabel("robust accuracy", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper right")
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_mechanism(records: list[dict], mechanism: str, path: str | Path, eps_focus: float = 0.1) -> Path | None:
    """One mechanism's effect per model kind: top, the metric against eps per level (mean and 95% CI
    band over seeds); bottom, the metric at ``eps_focus`` against the level, seeds as dots and the
    mean with its 95% CI as error bars. Lines of one colour share a level; line styles separate
    strata of the other settings (e.g. LTD on and off in a width sweep).

    ``records`` are metric records at several eps (see :func:`analysis.tables.metric_records`).
    """
    records = [r for r in collapse_seeds(records) if r.get(mechanism) is not None]
    others = [f for f in ("width", "k", "ltd", "granule", "task") if f != mechanism]
    def varies(kind: str) -> bool:
        groups: dict[tuple, set] = defaultdict(set)
        for r in records:
            if r["model_kind"] == kind:
                groups[tuple(r.get(f) for f in others)].add(r[mechanism])
        return any(len(v) >= 2 for v in groups.values())

    kinds = [k for k in sorted({r["model_kind"] for r in records}) if varies(k)]
    if not kinds:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.6 * len(kinds), 6.4), squeeze=False)
    for col, kind in enumerate(kinds):
        mine = [r for r in records if r["model_kind"] == kind]
        strata = sorted({tuple(r.get(f) for f in others) for r in mine}, key=str)
        # only strata in which the mechanism varies (e.g. not the K sweep's single-width runs in a width figure)
        strata = [s for s in strata
                  if len({r[mechanism] for r in mine if tuple(r.get(f) for f in others) == s}) >= 2]
        mine = [r for r in mine if tuple(r.get(f) for f in others) in strata]
        levels = sorted({r[mechanism] for r in mine}, key=lambda v: (v != "none", isinstance(v, str), v))
        cmap = plt.get_cmap("viridis")
        colour = {lv: cmap(0.1 + 0.8 * j / max(1, len(levels) - 1)) for j, lv in enumerate(levels)}
        top, bottom = axes[0][col], axes[1][col]
        for s_idx, stratum in enumerate(strata):
            ls = LINESTYLES[s_idx % len(LINESTYLES)]
            tag = ", ".join(f"{f}={v}" for f, v in zip(others, stratum) if v is not None and len({r.get(f) for r in mine}) > 1)
            in_s = [r for r in mine if tuple(r.get(f) for f in others) == stratum]
            for lv in levels:
                g = [r for r in in_s if r[mechanism] == lv]
                if not g:
                    continue
                eps = sorted({round(r["eps"], 9) for r in g})
                vals = [[r["value"] for r in g if eps_equal(r["eps"], e)] for e in eps]
                _band(top, eps, vals, f"{mechanism}={lv}" + (f" | {tag}" if tag else ""), color=colour[lv], linestyle=ls)
            focus = [r for r in in_s if eps_equal(r["eps"], eps_focus)]
            if not focus:
                continue
            xs_levels = [lv for lv in levels if any(r[mechanism] == lv for r in focus)]
            pos = {lv: (float(lv) if mechanism != "ltd" else levels.index(lv)) for lv in levels}
            offset = (s_idx - (len(strata) - 1) / 2) * (0.04 if mechanism != "width" else 0.02)
            xs, ms, errs = [], [], []
            for lv in xs_levels:
                vals = [r["value"] for r in focus if r[mechanism] == lv]
                x = pos[lv] * (10 ** offset) if mechanism == "width" else pos[lv] + offset
                bottom.scatter([x] * len(vals), vals, s=10, color=colour[lv], alpha=0.6)
                m, lo, hi = mean_ci(vals)
                xs.append(x)
                ms.append(m)
                errs.append((m - lo) if not math.isnan(lo) else 0.0)
            bottom.errorbar(xs, ms, yerr=errs, color="k", linestyle=ls, marker="s", markersize=4, capsize=3,
                            label=tag or None)
        top.set_title(f"{kind}: {mechanism}", fontsize=9)
        top.set_xlabel("eps (L-inf)", fontsize=8)
        top.set_ylabel(records[0]["metric"] + " robust accuracy" if records[0]["metric"] != "clean" else "clean accuracy",
                       fontsize=8)
        top.set_ylim(-0.02, 1.02)
        top.legend(fontsize=6)
        bottom.set_title(f"eps = {eps_focus:g}; dots: seeds, squares: mean, bars: 95% CI", fontsize=8)
        bottom.set_xlabel({"width": "granule cells (log scale)", "k": "K (mossy fibres per granule cell)",
                           "ltd": "LTD"}.get(mechanism, mechanism), fontsize=8)
        bottom.set_ylabel("robust accuracy", fontsize=8)
        if mechanism == "width":
            bottom.set_xscale("log")
            bottom.minorticks_off()
            bottom.set_xticks([float(v) for v in levels], [f"{v:,}" for v in levels])
        if mechanism == "ltd":
            bottom.set_xticks(range(len(levels)), [str(v) for v in levels])
        if bottom.get_legend_handles_labels()[1]:
            bottom.legend(fontsize=6)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- decision-based
def _ecdf(ax, values: np.ndarray, total: int, label: str) -> None:
    v = np.sort(values[np.isfinite(values)])
    if total == 0:
        return
    y = np.arange(1, v.size + 1) / total
    ax.step(np.concatenate([[0.0], v]), np.concatenate([[0.0], y]), where="post", label=f"{label} (n={total})")


def plot_decision(decisions: dict[str, dict[str, np.ndarray]], path: str | Path) -> Path | None:
    """Minimal perturbations of the decision-based attacks: ECDFs of L2 and L-inf, histogram of queries.

    ``decisions`` maps attack name -> arrays ``l2``, ``linf``, ``queries``, ``success`` (pooled over
    runs). Failed attacks count in the denominator, so an ECDF ending below 1 shows the failure rate.
    """
    if not decisions:
        return None
    fig, axes = _grid(3, 3, (3.6, 2.8))
    for name, d in sorted(decisions.items()):
        ok = d["success"].astype(bool)
        _ecdf(axes[0], np.where(ok, d["l2"], np.inf), ok.size, name)
        _ecdf(axes[1], np.where(ok, d["linf"], np.inf), ok.size, name)
        q = d["queries"][ok] if ok.any() else d["queries"]
        if q.size:
            axes[2].hist(q, bins=20, alpha=0.5, label=name)
    for ax, xl in zip(axes, ["minimal L2 perturbation", "minimal L-inf perturbation", "queries per image"]):
        ax.set_xlabel(xl, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("fraction of images fooled", fontsize=8)
    axes[2].set_ylabel("images", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_transfer(matrix: np.ndarray, sources: Sequence[str], targets: Sequence[str], path: str | Path,
                  title: str = "") -> Path | None:
    """Heatmap of success rates, ``matrix`` of shape ``(len(sources), len(targets))`` (nan: not run)."""
    if matrix.size == 0:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.3 * len(targets) + 2.5, 0.8 * len(sources) + 1.8))
    im = ax.imshow(np.ma.masked_invalid(matrix), vmin=0, vmax=1, cmap="magma")
    for a in range(len(sources)):
        for b in range(len(targets)):
            v = matrix[a, b]
            ax.text(b, a, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="w" if np.isnan(v) or v < 0.6 else "k", fontsize=9)
    ax.set_xticks(range(len(targets)), targets, fontsize=8)
    ax.set_yticks(range(len(sources)), sources, fontsize=8)
    ax.set_xlabel("target (evaluated on)", fontsize=8)
    ax.set_ylabel("source (gradients from)", fontsize=8)
    fig.colorbar(im, ax=ax, label="success rate")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_fidelity(fid: dict[str, np.ndarray], path: str | Path) -> Path | None:
    """Surrogate against spiking rates per population (and class scores), with Pearson r and agreement."""
    pops = [p for p in ("grc", "goc", "mli", "pc") if f"spiking_{p}" in fid and f"surrogate_{p}" in fid]
    has_scores = "spiking_scores" in fid and "surrogate_scores" in fid
    n = len(pops) + has_scores
    if n == 0:
        return None
    fig, axes = _grid(n, 4, (3.2, 3.0))
    panels = [(p, f"{POP_NAMES[p]} rate (Hz)") for p in pops] + ([("scores", "class score (Hz)")] if has_scores else [])
    for ax, (key, name) in zip(axes, panels):
        s = np.asarray(fid[f"spiking_{key}"], dtype=float).ravel()
        g = np.asarray(fid[f"surrogate_{key}"], dtype=float).ravel()
        if s.size > 20000:
            idx = np.random.default_rng(0).choice(s.size, 20000, replace=False)
            s_plot, g_plot = s[idx], g[idx]
        else:
            s_plot, g_plot = s, g
        ax.scatter(g_plot, s_plot, s=3, alpha=0.3)
        hi = float(max(np.nanmax(s), np.nanmax(g), 1e-9))
        ax.plot([0, hi], [0, hi], "k--", linewidth=0.8)
        r = float(np.corrcoef(g, s)[0, 1]) if np.std(g) > 0 and np.std(s) > 0 else math.nan
        title = f"{name}\nr = {r:.3f}"
        if key == "scores":
            agree = float(np.mean(np.argmax(fid["spiking_scores"], 1) == np.argmax(fid["surrogate_scores"], 1)))
            title += f", class agreement = {agree:.3f}"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("surrogate", fontsize=8)
        ax.set_ylabel("spiking", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- spikes
def plot_rasters(spikes: dict, path: str | Path, max_cells: int = 200) -> Path | None:
    """Rasters per population (rows) for the clean input and its adversarial (columns)."""
    pops = spikes["pops"]
    if not pops:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(pops), 2, figsize=(9, 1.7 * len(pops) + 0.6), squeeze=False, sharex=True)
    titles = {"clean": f"clean (label {spikes.get('label')}, predicted {spikes.get('pred_clean')})",
              "adv": f"adversarial (predicted {spikes.get('pred_adv')})"}
    for row, pop in enumerate(pops):
        n = spikes["n"][pop]
        shown = min(n, max_cells)
        for col, cond in enumerate(CONDITIONS):
            ax = axes[row][col]
            i, t = spikes["trains"][cond][pop]
            keep = i < shown
            ax.scatter(t[keep], i[keep], s=4, marker="|", color="k", linewidths=0.6)
            ax.set_ylim(-0.5, shown - 0.5)
            ax.set_xlim(0, float(spikes["window_ms"]))
            if col == 0:
                ax.set_ylabel(f"{pop}\n" + (f"first {shown}/{n}" if shown < n else f"{n} cells"), fontsize=7)
            if row == 0:
                ax.set_title(titles[cond], fontsize=9)
            ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("time (ms)", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_psth(spikes: dict, path: str | Path, bin_ms: float = 5.0) -> Path | None:
    """PSTHs (mean rate per cell) per population, clean and adversarial overlaid."""
    pops = spikes["pops"]
    if not pops:
        return None
    fig, axes = _grid(len(pops), 5, (2.8, 2.4))
    window = float(spikes["window_ms"])
    for ax, pop in zip(axes, pops):
        for cond, colour in zip(CONDITIONS, ("tab:blue", "tab:red")):
            centres, rate = psth(spikes["trains"][cond][pop][1], spikes["n"][pop], window, bin_ms)
            ax.step(centres, rate, where="mid", color=colour, label="clean" if cond == "clean" else "adversarial")
        ax.set_title(POP_NAMES.get(pop, pop), fontsize=9)
        ax.set_xlabel("time (ms)", fontsize=8)
        ax.set_ylabel("rate per cell (Hz)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def plot_coding(summary: list[dict], path: str | Path) -> Path | None:
    """Coding level and population sparseness per population, clean against adversarial (bars)."""
    if not summary:
        return None
    pops = list(dict.fromkeys(r["population"] for r in summary))
    fig, axes = _grid(3, 3, (3.4, 2.8))
    x = np.arange(len(pops))
    for ax, key, name in zip(axes, ("coding_level", "sparseness", "mean_rate_hz"),
                             ("coding level (fraction spiking)", "population sparseness (Treves-Rolls)",
                              "mean rate (Hz)")):
        for off, cond, colour in ((-0.2, "clean", "tab:blue"), (0.2, "adv", "tab:red")):
            vals = [next((r[key] for r in summary if r["population"] == p and r["condition"] == cond), np.nan)
                    for p in pops]
            ax.bar(x + off, vals, width=0.4, color=colour, label="clean" if cond == "clean" else "adversarial")
        ax.set_xticks(x, pops, fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_pc_classes(spikes: dict, n_classes: int, path: str | Path, start_ms: float = 0.0) -> Path | None:
    """Mean Purkinje rate per class for the clean input and its adversarial, and the change."""
    if "pc" not in spikes["pops"]:
        return None
    n_pc, window = spikes["n"]["pc"], float(spikes["window_ms"])
    rates = {c: class_rates(*spikes["trains"][c]["pc"], n_pc, n_classes, window, start_ms) for c in CONDITIONS}
    fig, axes = _grid(2, 2, (4.2, 2.9))
    x = np.arange(n_classes)
    axes[0].bar(x - 0.2, rates["clean"], 0.4, color="tab:blue", label="clean")
    axes[0].bar(x + 0.2, rates["adv"], 0.4, color="tab:red", label="adversarial")
    axes[0].set_ylabel("Purkinje rate (Hz)", fontsize=8)
    axes[0].legend(fontsize=6)
    diff = rates["adv"] - rates["clean"]
    axes[1].bar(x, diff, color=["tab:red" if d > 0 else "tab:blue" for d in diff])
    axes[1].axhline(0, color="k", linewidth=0.6)
    axes[1].set_ylabel("adversarial - clean (Hz)", fontsize=8)
    marks = []
    for key, what in (("label", "label"), ("pred_clean", "clean prediction"), ("pred_adv", "adversarial prediction")):
        if spikes.get(key) is not None:
            marks.append(f"{what} {spikes[key]}")
    for ax in axes:
        ax.set_xticks(x, [str(c) for c in range(n_classes)], fontsize=7)
        ax.set_xlabel("class of the Purkinje cells", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_title("; ".join(marks), fontsize=8)
    axes[1].set_title("rate change under attack", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- trials (cereb simulate)
def _trial_title(trials: dict, k: int) -> str:
    q = int(trials["trial_input"][k])
    label = int(trials["trial_label"][k])
    return (f"input {q} ({trials['input_condition'][q]}" + (f", label {label}" if label >= 0 else "")
            + f") trial {int(trials['trial_repeat'][k])}: predicted {int(trials['trial_predicted'][k])}")


def _shown_trials(trials: dict, max_trials: int) -> list[int]:
    """The first trial of each input (up to ``max_trials``); with one input, its repeats."""
    inputs = np.asarray(trials["trial_input"])
    firsts = [int(np.flatnonzero(inputs == q)[0]) for q in dict.fromkeys(inputs.tolist())]
    return (firsts if len(firsts) > 1 else list(range(len(inputs))))[:max_trials]


def plot_trial_rasters(trials: dict, path: str | Path, max_cells: int = 200, max_trials: int = 4) -> Path | None:
    """Rasters per population (rows) for the first trial of each input (columns, up to ``max_trials``)."""
    pops = trials["pops"]
    shown = _shown_trials(trials, max_trials)
    if not pops or not shown:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(pops), len(shown), figsize=(3.6 * len(shown) + 0.6, 1.7 * len(pops) + 0.6),
                             squeeze=False, sharex=True)
    window = float(trials["window_ms"])
    for row, pop in enumerate(pops):
        n = trials["n"][pop]
        cells = min(n, max_cells)
        for col, k in enumerate(shown):
            ax = axes[row][col]
            i, t = trials["trains"][pop][k]
            keep = np.asarray(i) < cells
            ax.scatter(np.asarray(t)[keep], np.asarray(i)[keep], s=4, marker="|", color="k", linewidths=0.6)
            ax.set_ylim(-0.5, max(cells, 1) - 0.5)
            ax.set_xlim(0, window)
            if col == 0:
                ax.set_ylabel(f"{pop}\n" + (f"first {cells}/{n}" if cells < n else f"{n} cells"), fontsize=7)
            if row == 0:
                ax.set_title(_trial_title(trials, k), fontsize=7)
            if pop == "cf" and not trials.get("olive"):
                ax.text(0.5, 0.5, "olive off: climbing fibres silent", transform=ax.transAxes, ha="center",
                        va="center", fontsize=7, color="tab:gray")
            ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("time (ms)", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_trial_psth(trials: dict, path: str | Path, bin_ms: float = 5.0, max_inputs: int = 6) -> Path | None:
    """PSTHs (mean rate per cell, averaged over each input's trials) per population, one line per input."""
    pops = trials["pops"]
    if not pops:
        return None
    fig, axes = _grid(len(pops), 3, (3.2, 2.5))
    window = float(trials["window_ms"])
    inputs = np.asarray(trials["trial_input"])
    for ax, pop in zip(axes, pops):
        for q in list(dict.fromkeys(inputs.tolist()))[:max_inputs]:
            ks = np.flatnonzero(inputs == q)
            rates = [psth(trials["trains"][pop][k][1], trials["n"][pop], window, bin_ms) for k in ks]
            ax.step(rates[0][0], np.mean([r[1] for r in rates], axis=0), where="mid",
                    label=f"input {q} ({trials['input_condition'][q]}), {len(ks)} trials")
        off = pop == "cf" and not trials.get("olive")
        ax.set_title(POP_NAMES.get(pop, pop) + (" (olive off)" if off else ""), fontsize=9)
        ax.set_xlabel("time (ms)", fontsize=8)
        ax.set_ylabel("rate per cell (Hz)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=5)
    fig.tight_layout()
    return _save(fig, path)


def plot_trial_class_rates(trials: dict, path: str | Path, max_inputs: int = 8) -> Path | None:
    """Mean Purkinje rate per class in the readout period (the class scores), averaged over each
    input's trials (bars) with the trial-to-trial standard deviation (error bars)."""
    scores = np.asarray(trials["scores_hz"], dtype=float)
    if scores.ndim != 2 or scores.shape[1] == 0:
        return None
    inputs = np.asarray(trials["trial_input"])
    shown = list(dict.fromkeys(inputs.tolist()))[:max_inputs]
    fig, axes = _grid(len(shown), 4, (3.2, 2.5))
    classes = np.arange(scores.shape[1])
    for ax, q in zip(axes, shown):
        s = scores[inputs == q]
        label = int(trials["input_label"][q])
        colours = ["tab:green" if c == label else "tab:gray" for c in classes]
        ax.bar(classes, s.mean(axis=0), yerr=s.std(axis=0) if len(s) > 1 else None, color=colours, capsize=2)
        preds = np.argmax(s, axis=1)
        ax.set_title(f"input {q} ({trials['input_condition'][q]}" + (f", label {label}" if label >= 0 else "")
                     + f")\npredicted {', '.join(str(int(p)) for p in preds[:10])}", fontsize=7)
        ax.set_xticks(classes, [str(c) for c in classes], fontsize=7)
        ax.set_xlabel("class", fontsize=8)
        ax.set_ylabel("Purkinje rate (Hz)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- training, images
def plot_learning_curves(curves: list[dict], path: str | Path) -> Path | None:
    """Test accuracy per epoch, one panel per model kind, one line per training run.

    ``curves``: dicts with ``model_kind``, ``label``, ``epoch`` (list), ``accuracy`` (list) and
    optionally ``train_accuracy`` (list, drawn dashed).
    """
    if not curves:
        return None
    kinds = sorted({c["model_kind"] for c in curves})
    fig, axes = _grid(len(kinds), 3, (4.2, 3.0))
    for ax, kind in zip(axes, kinds):
        mine = [c for c in curves if c["model_kind"] == kind]
        for c in mine:
            line, = ax.plot(c["epoch"], c["accuracy"], marker="o", markersize=2.5, linewidth=1,
                            label=c["label"] if len(mine) <= 8 else None)
            if c.get("train_accuracy") is not None:
                ax.plot(c["epoch"], c["train_accuracy"], linestyle="--", linewidth=0.8, color=line.get_color())
        ax.set_title(f"{kind} ({len(mine)} run{'s' if len(mine) != 1 else ''}); solid: test, dashed: train",
                     fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if len(mine) <= 8:
            ax.legend(fontsize=5)
    fig.tight_layout()
    return _save(fig, path)


def plot_gallery(x_clean: np.ndarray, x_adv: np.ndarray, captions: Sequence[str], path: str | Path,
                 title: str = "") -> Path | None:
    """Rows of (clean image, adversarial image, perturbation); ``x_*`` of shape ``(n, D)``."""
    n = len(x_clean)
    if n == 0:
        return None
    plt = _plt()
    shape = image_shape(x_clean.shape[1])
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.0 * n + 0.4), squeeze=False)
    for j in range(n):
        delta = (x_adv[j] - x_clean[j]).reshape(shape)
        lim = float(np.max(np.abs(delta))) or 1e-9
        for col, (img, cmap, vmin, vmax) in enumerate(((x_clean[j].reshape(shape), "gray", 0, 1),
                                                       (x_adv[j].reshape(shape), "gray", 0, 1),
                                                       (delta, "RdBu_r", -lim, lim))):
            ax = axes[j][col]
            im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal" if shape[0] > 1 else "auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 2:
                fig.colorbar(im, ax=ax, fraction=0.046)
        axes[j][0].set_ylabel(captions[j], fontsize=7)
        axes[j][2].set_title(f"perturbation: L-inf {lim:.3f}, L2 {float(np.linalg.norm(delta)):.3f}", fontsize=7)
    axes[0][0].set_title("clean", fontsize=8)
    axes[0][1].set_title("adversarial", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _num_or_nan(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def draw_spike_edits(ax, rows: list[dict], variability: list[dict]) -> None:
    """On ``ax``: per method of ``rows`` (``image, method, edits, fooled_frozen``), the fraction of
    attacked images flipped on the frozen trial with at most x spike edits (an image never flipped
    never counts), beside the distributions of ``natural_variability`` and ``pixel_edits`` of
    ``variability`` (one row per image) over the same images."""
    attacked = {r["image"] for r in rows}
    n = max(1, len(attacked))
    top = 1.0
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        edits = np.sort([_num_or_nan(r["edits"]) for r in sel if int(_num_or_nan(r["fooled_frozen"])) == 1])
        if len(edits):
            ax.step(np.concatenate([[0], edits]), np.arange(len(edits) + 1) / len(sel), where="post",
                    label=f"{method} (flipped {len(edits)}/{len(sel)})")
            top = max(top, float(edits.max()))
    for key, label, style in (("natural_variability", "natural variability (two draws)", "k--"),
                              ("pixel_edits", "pixel adversarial (surrogate PGD)", "k:")):
        vals = np.sort([x for x in (_num_or_nan(v[key]) for v in variability if v["image"] in attacked)
                        if np.isfinite(x)])
        if len(vals):
            ax.plot(np.concatenate([[0], vals]), np.arange(len(vals) + 1) / n, style, drawstyle="steps-post",
                    label=f"{label}, {len(vals)}/{n}")
            top = max(top, float(vals.max()))
    ax.set_xlim(0, top * 1.05)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("spikes (edits to the mossy-fibre trains; or count differences)")
    ax.set_ylabel(f"fraction of the {n} attacked images")
    ax.legend(fontsize=7, loc="lower right")


def plot_spike_edits(rows: list[dict], variability: list[dict], path: str | Path) -> Path | None:
    """Spike-domain attacks (``robustness_spikes.csv``, ``spike_variability.csv``): :func:`draw_spike_edits`."""
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    draw_spike_edits(ax, rows, variability)
    fig.tight_layout()
    return _save(fig, path)


def plot_spike_example(ex: dict, path: str | Path) -> Path | None:
    """One image's mossy-fibre spikes on the frozen trial, clean and with the adversarial edits
    (delivered spikes red, silenced intervals shaded), and its Purkinje spikes under each."""
    if "clean_mf_i" not in ex:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    window = float(ex["window_ms"])
    titles = {"clean": f"clean (label {int(ex['label'])}, predicted {int(ex['pred_clean'])})",
              "adv": f"with the edits ({ex.get('method', '')}; predicted {int(ex['pred_adv'])})"}
    for col, cond in enumerate(("clean", "adv")):
        ax = axes[0][col]
        ax.scatter(ex[f"{cond}_mf_t_ms"], ex[f"{cond}_mf_i"], s=5, marker="|", color="k", linewidths=0.6)
        if cond == "adv":
            for f, a, b in zip(ex["edit_silenced_fibre"], ex["edit_silenced_start_ms"], ex["edit_silenced_stop_ms"]):
                ax.fill_between([a, b], f - 0.45, f + 0.45, color="tab:blue", alpha=0.35, linewidth=0)
            ax.scatter(ex["edit_inserted_t_ms"], ex["edit_inserted_fibre"], s=9, marker="|", color="tab:red",
                       linewidths=1.0)
        ax.set_ylim(-0.5, int(ex["n_mf"]) - 0.5)
        ax.set_title(titles[cond], fontsize=9)
        ax.set_ylabel("mossy fibre" if col == 0 else "", fontsize=8)
        pc = axes[1][col]
        pc.scatter(ex[f"{cond}_pc_t_ms"], ex[f"{cond}_pc_i"], s=4, marker="|", color="k", linewidths=0.6)
        pc.set_ylim(-0.5, int(ex["n_pc"]) - 0.5)
        pc.set_xlim(0, window)
        pc.set_xlabel("time (ms)", fontsize=8)
        pc.set_ylabel("Purkinje cell" if col == 0 else "", fontsize=8)
        for a in (ax, pc):
            a.tick_params(labelsize=6)
    fig.tight_layout()
    return _save(fig, path)
