"""The report: ``report.md`` with tables, statistics and figures, built from run folders only.

:func:`write_report` reads every run folder under a results root (a demo, a study, or loose runs),
writes figures to ``figures/`` and tables (``mechanisms.csv``, ``robustness_table.csv``) next to the
report, exports spike trains and stimulus tables to ``export/``, and writes ``report.md``. A
section whose inputs are absent is replaced by one line saying so.
"""
from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from analysis import export as export_mod
from analysis import figures as fig
from analysis.runs import experiment_of
from analysis.spikes import load_spikes, spike_summary
from analysis.stats import MECHANISM_COLUMNS, level_table, mean_ci
from analysis.tables import (METRICS, Study, attack_table, eps_equal, group_rows, headline_table, load_study,
                             mechanism_table, metric_records, reference_config, training_table)
from core.errors import CerebError
from core.runs import atomic_write_text, load_npz, read_csv, write_csv

log = logging.getLogger(__name__)

__all__ = ["HEADLINE_EPS", "TRANSFER_EPS", "TRANSFER_ATTACKS", "write_report", "check_findings"]

HEADLINE_EPS = (0.1, 0.2)
TRANSFER_EPS = 0.1
# Attacks whose rows on the spiking network are transfers (gradients from another model).
TRANSFER_ATTACKS = ("pgd", "fgsm", "transfer-rate", "transfer-mlp")
GALLERY_PREFERENCE = ("strong", "hybrid", "pgd", "fgsm", "transfer")
GALLERY_IMAGES = 4


# ----------------------------------------------------------------------------- formatting
def _f(v, digits: int = 3) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "–"
        if v != 0 and (abs(v) < 10 ** -digits or abs(v) >= 1e5):
            return f"{v:.{max(1, digits - 1)}e}"
        return f"{v:.{digits}f}"
    return str(v)


def _pm(m: float, half: float, digits: int = 3) -> str:
    return _f(m, digits) if math.isnan(half) else f"{_f(m, digits)} ± {_f(half, digits)}"


def _table(headers: list[str], rows: Iterable[Iterable]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")
    return out + [""]


def _figure(path: Path | None, base: Path, caption: str) -> list[str]:
    if path is None:
        return []
    rel = os.path.relpath(path, base)
    return [f"![{path.stem}]({rel})", "", f"*{caption}*", ""]


def _skip(what: str) -> list[str]:
    return [f"_{what}_", ""]


def _latest(runs: list[dict]) -> dict | None:
    return max(runs, key=lambda r: (r["meta"].get("start") or "", str(r["path"]))) if runs else None


def _with_file(runs: Iterable[dict], pattern: str) -> list[dict]:
    return [r for r in runs if any(Path(r["path"]).glob(pattern))]


# ----------------------------------------------------------------------------- checks
def check_findings(run_rows: list[dict]) -> list[str]:
    """Problems the robustness rows of one attack run show by themselves, in plain words.

    * on the spiking network, a transfer attack (``pgd``/``fgsm`` from the surrogate,
      ``transfer-rate``, ``transfer-mlp``) leaving lower robust accuracy than the strongest
      ``hybrid`` attack at the same eps (frozen noise): "transfer stronger than hybrid: evaluation
      unreliable";
    * random ``noise`` leaving lower robust accuracy than every gradient attack on the same model at
      the same eps: the gradient attacks are broken or masked.
    """
    out = []
    linf = [r for r in run_rows if r["norm"] == "linf" and not math.isnan(r["robust_acc"])]
    by_eps = group_rows(linf, lambda r: (round(r["eps"], 9), r.get("noise_mode") or ""))
    for (eps, noise), g in sorted(by_eps.items()):
        if eps == 0:
            continue
        spk = [r for r in g if r["model"] == "spiking"]
        hybrid = [r["robust_acc"] for r in spk if r["attack"] == "hybrid"]
        transfer = [r for r in spk if r["attack"] in TRANSFER_ATTACKS]
        # only frozen noise: the hybrid examples are found against one noise realisation, so under
        # fresh noise they are expected to lose more than transfer examples; that is a finding, not
        # a sign of a broken evaluation
        if hybrid and transfer and noise in ("", "frozen"):
            best = min(transfer, key=lambda r: r["robust_acc"])
            if best["robust_acc"] < min(hybrid):
                out.append(f"transfer stronger than hybrid: evaluation unreliable (eps {eps:g}"
                           + (f", {noise} noise" if noise else "") + f": {best['attack']}/{best.get('loss')} leaves "
                           f"{best['robust_acc']:.3f}, hybrid {min(hybrid):.3f})")
        for model in sorted({r["model"] for r in g}):
            mine = [r for r in g if r["model"] == model]
            noise_acc = [r["robust_acc"] for r in mine if r["attack"] == "noise"]
            grad = [r["robust_acc"] for r in mine if r["attack"] not in ("noise", "worst")
                    and not str(r["attack"]).startswith(("hsja", "boundary"))]
            if noise_acc and grad and min(noise_acc) < min(grad):
                out.append(f"random noise stronger than every gradient attack on {model} at eps {eps:g} "
                           f"({min(noise_acc):.3f} < {min(grad):.3f}): gradient attacks unreliable")
    return out


# ----------------------------------------------------------------------------- sections
def _header(study: Study, rows: list[dict]) -> list[str]:
    lines = ["# Report: cerebellar mechanisms and adversarial robustness", "",
             f"Built from the run folders under `{study.root}` only (every number and figure below can be "
             f"remade from those files with `cereb report`).", "",
             f"- training runs: {len(study.training)}; attack runs: {len(study.attacks)} "
             f"({len({r['attack_run'] for r in rows})} with a robustness table)"]
    if study.skipped:
        names = ", ".join(f"`{study.label(r)}` ({r['meta'].get('status')})" for r in study.skipped[:10])
        more = f" and {len(study.skipped) - 10} more" if len(study.skipped) > 10 else ""
        lines.append(f"- skipped {len(study.skipped)} run(s) that did not complete: {names}{more}")
    missing = [r for r in study.attacks if r["train"] is None]
    if missing:
        lines.append(f"- {len(missing)} attack run(s) whose training run was not found; their model settings are unknown")
    return lines + [""]


def _models_section(train_rows: list[dict]) -> list[str]:
    lines = ["## Trained models", ""]
    if not train_rows:
        return lines + _skip("No completed training runs.")
    groups = group_rows(train_rows, lambda r: (r["model_kind"], r["config_label"]))
    body = []
    for (kind, label), g in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        t, tlo, _ = mean_ci([_num(r.get("test_accuracy")) for r in g])
        tr = mean_ci([_num(r.get("train_accuracy")) for r in g])[0]
        body.append([kind, label, len(g), _pm(t, t - tlo if not math.isnan(tlo) else math.nan), _f(tr)])
    lines += _table(["model", "configuration", "seeds", "test accuracy (mean ± 95% CI)", "train accuracy"], body)
    spk = [r for r in train_rows if r["model_kind"] == "spiking"]
    if spk:
        keys = [("grc_coding_level", "granule coding level (fraction of granule cells spiking per input)", 3),
                ("grc_rate_hz", "granule rate (Hz)", 1), ("goc_rate_hz", "Golgi rate (Hz)", 1),
                ("pc_rate_hz", "Purkinje rate on test inputs (Hz)", 1),
                ("pc_spontaneous_rate_hz", "Purkinje spontaneous rate (Hz)", 1)]
        lines += ["Spiking network biology (test set, plasticity off; mean over the spiking runs):", ""]
        for key, name, d in keys:
            vals = [_num(r.get(key)) for r in spk]
            if any(not math.isnan(v) for v in vals):
                lines.append(f"- {name}: {_f(mean_ci(vals)[0], d)}")
        lines.append("")
    return lines


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _headline_section(rows: list[dict]) -> list[str]:
    lines = ["## Headline: clean and robust accuracy", ""]
    if not rows:
        return lines + _skip("No attack runs with a robustness table; nothing to summarise.")
    table = headline_table(rows, HEADLINE_EPS)
    lines += ["Robust accuracy = fraction of test images still classified correctly under the attack at that "
              "eps (in the attack's norm; pixel values in [0, 1]). Mean over attack runs, ± half-width of "
              "the 95% CI when there are several. For each model the configuration with the most runs is shown ("
              "ties go to the newest); the mechanism section compares configurations.", ""]
    if any(r.get("noise_mode") == "fresh" for r in rows):
        lines += ["Threat model of the spiking network: a real cerebellum draws new mossy-fibre noise on every "
                  "trial, so its headline rows are *fresh noise*: each adversarial example is shown again on "
                  "fresh-noise trials (`fresh_repeats` per image), the network's decision on an image is the "
                  "majority over them (a tie counts against the network), and robust accuracy is the fraction of "
                  "all attacked images whose majority decision is correct (the rate model's denominator), with "
                  "the exact 95% interval (image as the unit) in `robustness.csv` and the fresh-noise clean "
                  "baseline at eps 0. The attacks themselves search the *frozen-noise* network (every query in "
                  "one fixed noise realisation); those rows stay beside the fresh ones as a diagnostic.", ""]
    heads = ["model", "configuration", "evaluated on", "attack", "loss", "norm", "gradients from", "clean"]
    heads += [f"robust @ eps {e:g}" for e in HEADLINE_EPS] + ["runs"]
    body = []
    for r in table:
        cells = [r["model_kind"], r["config"], r["model"], r["attack"], r["loss"] or "–", r["norm"],
                 r["source"] or "–", _f(r["clean"])]
        cells += [_pm(r[f"robust@{e:g}"], r[f"robust@{e:g}_ci"]) for e in HEADLINE_EPS]
        cells.append(r["n_runs"])
        if r["noise_mode"] in ("frozen", "fresh"):
            cells[3] += f" ({r['noise_mode']} noise)"
        body.append(cells)
    return lines + _table(heads, body)


CHECKS_LIST_ALL = 12  # up to this many attack runs, every run gets its own line


def _run_outcome(run: dict, run_rows: list[dict]) -> tuple[str, list[str]]:
    """``(status, problems)`` of one attack run: status is ``passed``, ``failed``, ``warnings`` or ``none``."""
    m = run["metrics"]
    msgs = [str(s) for s in (m.get("check_messages") or [])]
    # runs with paired per-image checks (metrics["checks"]) have compared their attacks image by
    # image already; the row-level findings would compare two independent numbers instead
    extra = [] if m.get("checks") else check_findings(run_rows)
    passed = m.get("checks_passed")
    if passed is False:
        return "failed", (msgs or ["checks failed (no message recorded)"]) + extra
    if msgs or extra:
        return "warnings", msgs + extra
    return ("passed", []) if passed is True else ("none", [])


CHECK_NAMES = {"dominance": "PGD not weaker than FGSM", "gradient_masking": "noise not beating a gradient attack",
               "budget": "broken at L-inf 0.5", "zero_gradients": "non-zero input gradients"}


def _check_tally(checks: list) -> str:
    """'PGD not weaker than FGSM 6/6, ...': passed / run per check of a run's paired checks."""
    runs: dict[str, list[bool]] = defaultdict(list)
    for c in checks:
        runs[str(c.get("check"))].append(bool(c.get("passed")))
    return ", ".join(f"{CHECK_NAMES.get(k, k)} {sum(v)}/{len(v)}" for k, v in runs.items())


def _checks_section(study: Study, rows: list[dict]) -> list[str]:
    lines = ["## Attack checks", "",
             "Rate-model runs compare their attacks image by image (exact McNemar test at 5%, so a "
             "one-image difference is not a failure): PGD against FGSM with the same loss, uniform noise "
             "against every gradient attack (gradient masking), the strong evaluation at L-inf 0.5 (attack "
             "too weak) and the fraction of all-zero input gradients; each run lists how many passed.", ""]
    if not study.attacks:
        return lines + _skip("No attack runs; no checks to report.")
    by_run = group_rows(rows, lambda r: r["attack_run"])
    counts: dict[str, int] = defaultdict(int)
    list_all = len(study.attacks) <= CHECKS_LIST_ALL
    for run in sorted(study.attacks, key=lambda r: str(r["path"])):
        label = study.label(run)
        f = run["fields"]
        what = ", ".join([str(f["model_kind"])] + [f"{k}={f[k]}" for k in ("width", "k", "ltd") if f.get(k) is not None]
                         + [f"seed {f.get('seed')}"])
        status, problems = _run_outcome(run, by_run.get(label, []))
        counts[status] += 1
        tally = _check_tally(run["metrics"].get("checks") or [])
        if status == "passed":
            if list_all:
                lines.append(f"- `{label}` ({what}): checks passed{f' ({tally})' if tally else ''}.")
        elif status == "none":
            lines.append(f"- `{label}` ({what}): no self-checks recorded.")
        else:
            head = "checks failed" if status == "failed" else (
                "checks passed, but" if run["metrics"].get("checks_passed") is True else "warnings")
            lines.append(f"- `{label}` ({what}): {head}{f' ({tally})' if tally else ''}:")
            lines += [f"    - {p}" for p in problems]
    bad = counts["failed"] + counts["warnings"]
    summary = (f"{bad} of {len(study.attacks)} attack run(s) have failed checks or warnings; their robust accuracies "
               f"may be overestimates (attacks too weak)." if bad else
               f"All {counts['passed']} attack run(s) with self-checks passed them.")
    if not list_all and counts["passed"]:
        summary += f" {counts['passed']} run(s) not listed: checks passed."
    return lines + ["", summary, ""]


def _curves_section(rows: list[dict], fig_dir: Path, base: Path) -> list[str]:
    lines = ["## Robustness curves", ""]
    if not rows:
        return lines + _skip("No attack runs with a robustness table; no curves.")
    refs = {k: reference_config(rows, k) for k in {r["model_kind"] for r in rows}}
    sel = [r for r in rows if refs.get(r["model_kind"]) == r["config_label"]]
    p = fig.plot_robustness_curves(sel, fig_dir / "robustness_curves.png")
    shown = "; ".join(f"{k}: {v}" for k, v in sorted(refs.items(), key=lambda kv: str(kv[0])))
    return lines + _figure(p, base, "Robust accuracy against the perturbation size eps, one panel per attack, loss "
                                    "and norm; rate, MLP and spiking models on the same axes (a spiking row 'on "
                                    "surrogate' is the white-box attack on the differentiable twin). Mean over runs, "
                                    f"band = 95% CI over runs. Configurations: {shown}.")


def _mechanism_section(rows: list[dict], fig_dir: Path, base: Path) -> list[str]:
    lines = ["## Mechanisms: width, LTD, K", ""]
    if not rows:
        return lines + _skip("No attack runs with a robustness table; no mechanism statistics.")
    mech = mechanism_table(rows, eps_list=HEADLINE_EPS)
    write_csv(base / "mechanisms.csv", mech, MECHANISM_COLUMNS)
    lines += ["Metrics: " + "; ".join(f"**{k}** = {v}" for k, v in METRICS.items()) + ". "
              "Each trained model counts once (several attack runs on one model are averaged). "
              "All tests are in `mechanisms.csv`; the methods are in the docstring of `analysis/stats.py`.", ""]
    worst = metric_records(rows, "worst", HEADLINE_EPS[0])
    levels = level_table(worst)
    if levels:
        lines += [f"Worst-case robust accuracy at eps {HEADLINE_EPS[0]:g}, mean and 95% CI over seeds:", ""]
        lines += _table(["model", "configuration", "seeds", "mean", "95% CI"],
                        [[r["model_kind"], r["config_label"], r["n_seeds"], _f(r["mean"]),
                          "–" if math.isnan(r["ci_low"]) else f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]"]
                         for r in levels])
    body = []
    for r in mech:
        if r["metric"] != "worst" and (not r["test"] or r["note"].startswith(("not enough", "all "))):
            continue  # untestable rows of the secondary metrics: in mechanisms.csv only
        body.append([r["model_kind"], r["mechanism"], r["metric"], _f(r["eps"], 2), r["n"], r["test"] or "–",
                     _f(r["effect"]), "–" if math.isnan(r["ci_low"]) else f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]",
                     _f(r["statistic"]), _f(r["p_value"]), r["note"]])
    lines += ["Tests (width: slope of the metric per decade of granule cells; LTD: on minus off; K: Spearman rho; "
              "rows of the pgd_mse and clean metrics only where a test ran):", ""]
    lines += _table(["model", "mechanism", "metric", "eps", "n", "test", "effect", "95% CI", "statistic", "p", "note"], body)
    all_eps = sorted({round(r["eps"], 9) for r in rows if r["norm"] == "linf" and not math.isnan(r["eps"])})
    records = [rec for e in all_eps for rec in metric_records(rows, "worst", e)]
    captions = {"width": "Worst-case robust accuracy by number of granule cells",
                "ltd": "Worst-case robust accuracy with LTD on and off",
                "k": "Worst-case robust accuracy by K, the mossy fibres per granule cell"}
    drew = False
    for mechanism, caption in captions.items():
        p = fig.plot_mechanism(records, mechanism, fig_dir / f"mechanism_{mechanism}.png", HEADLINE_EPS[0])
        if p is not None:
            drew = True
            lines += _figure(p, base, f"{caption}. Top: against eps, mean and 95% CI band over seeds (line style: "
                                      f"other settings). Bottom: at eps {HEADLINE_EPS[0]:g}, seeds as dots, mean ± "
                                      "95% CI.")
    if not drew:
        lines += _skip("No mechanism varies across the runs here; no mechanism figures.")
    return lines


def _decision_section(study: Study, fig_dir: Path, base: Path) -> list[str]:
    lines = ["## Decision-based attacks (spiking network)", ""]
    runs = _with_file(study.attacks, "decision_*.npz")
    if not runs:
        return lines + _skip("No decision_*.npz files; section skipped.")
    pooled: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for f in sorted(Path(run["path"]).glob("decision_*.npz")):
            d = load_npz(f)
            name = f.stem[len("decision_"):]
            n = len(d["l2"])
            # only images the network classified correctly are attacked; the others count nowhere
            keep = (np.asarray(d["pred_clean"]) == np.asarray(d["y"])) if "pred_clean" in d and "y" in d \
                else np.ones(n, bool)
            for key in ("l2", "linf", "queries"):
                pooled[name][key].append(np.asarray(d[key], dtype=float)[keep])
            for key, fill in (("success", True), ("tied", False), ("silent", False)):
                pooled[name][key].append(np.asarray(d.get(key, np.full(n, fill)), dtype=bool)[keep])
            pooled[name]["success_prob"].append(np.asarray(d.get("success_prob", np.full(n, np.nan)), dtype=float)[keep])
    arrays = {k: {kk: np.concatenate(vv) for kk, vv in v.items()} for k, v in pooled.items()}
    p = fig.plot_decision(arrays, fig_dir / "decision.png")
    body = []
    for name, d in sorted(arrays.items()):
        ok = d["success"]
        med = lambda a: float(np.median(a[ok])) if ok.any() else math.nan
        frac = lambda a: float(a[ok].mean()) if ok.any() else math.nan
        body.append([name, ok.size, _f(float(ok.mean()) if ok.size else math.nan), _f(med(d["l2"])),
                     _f(med(d["linf"])), _f(med(d["queries"]), 0),
                     _f(float(np.nanmean(d["success_prob"][ok])) if ok.any() and np.isfinite(d["success_prob"][ok]).any() else math.nan),
                     _f(frac(d["tied"])), _f(frac(d["silent"]))])
    lines += [f"Pooled over {len(runs)} run(s); images = test images the spiking network classified correctly "
              "(frozen noise), the only ones attacked.", ""]
    lines += _table(["attack", "images", "fooled", "median L2", "median L-inf", "median queries",
                     "mean success under fresh noise", "fooled on a tie", "fooled by silence"], body)
    lines += ["", "Class scores are Purkinje spike counts, so they tie; the prediction is the lowest class index "
              "among the tied top scores (an all-silent readout predicts class 0). *Fooled on a tie*: fraction of "
              "the adversarials whose top score is shared by two or more classes (a decision-based attack stops at "
              "the boundary, which for counts is a tie); *fooled by silence*: no Purkinje cell fired at all. "
              "Counting those as errors favours the attacker: with ties broken against it the minimal perturbations "
              "would be slightly larger.", ""]
    return lines + _figure(p, base, "Minimal adversarial perturbations found by the decision-based attacks (the "
                                    "spiking network decides; frozen noise): ECDFs of L2 and L-inf size over the "
                                    "correctly classified images (an ECDF ending below 1 shows images never fooled), "
                                    "and queries per image.")


def _transfer_section(study: Study, fig_dir: Path, base: Path, eps: float = TRANSFER_EPS) -> list[str]:
    lines = ["## Transfer", ""]
    runs = _with_file(study.attacks, "transfer.csv")
    if not runs:
        return lines + _skip("No transfer.csv files; section skipped.")
    per_run: dict[tuple, list[float]] = defaultdict(list)
    which: dict[tuple, set] = defaultdict(set)
    for run in runs:
        best: dict[tuple, float] = {}
        for r in read_csv(Path(run["path"]) / "transfer.csv"):
            if not eps_equal(_num(r["eps"]), eps):
                continue
            key = (str(r["source"]), str(r["target"]))
            v = _num(r["success_rate"])
            if not math.isnan(v) and v >= best.get(key, -1.0):
                best[key] = v
            which[key].add(f"{r['attack']}/{r['loss']}")
        for key, v in best.items():
            per_run[key].append(v)
    if not per_run:
        return lines + _skip(f"transfer.csv has no rows at eps {eps:g}; section skipped.")
    sources = sorted({k[0] for k in per_run})
    targets = sorted({k[1] for k in per_run})
    mat = np.full((len(sources), len(targets)), np.nan)
    for (s, t), v in per_run.items():
        mat[sources.index(s), targets.index(t)] = float(np.mean(v))
    p = fig.plot_transfer(mat, sources, targets, fig_dir / "transfer.png", f"transfer success rate, eps {eps:g} (L-inf)")
    lines += _table(["source", "target", "success rate", "runs", "attacks (strongest taken per run)"],
                    [[s, t, _f(float(np.mean(v))), len(v), ", ".join(sorted(which[(s, t)]))]
                     for (s, t), v in sorted(per_run.items())])
    return lines + _figure(p, base, f"Success rate (among images the target classified correctly) of adversarials "
                                    f"made with the source model's gradients and evaluated on the target, eps {eps:g}.")


def _fidelity_section(study: Study, fig_dir: Path, base: Path) -> list[str]:
    lines = ["## Surrogate fidelity", ""]
    run = _latest(_with_file(study.attacks, "fidelity.npz"))
    if run is None:
        return lines + _skip("No fidelity.npz; section skipped.")
    fid = load_npz(Path(run["path"]) / "fidelity.npz")
    p = fig.plot_fidelity(fid, fig_dir / "fidelity.png")
    m = run["metrics"]
    lines += [f"From `{study.label(run)}`: class agreement {_f(_num(m.get('fidelity_agreement')))}, "
              f"r(granule) {_f(_num(m.get('fidelity_r_grc')))}, r(Golgi) {_f(_num(m.get('fidelity_r_goc')))}, "
              f"r(Purkinje) {_f(_num(m.get('fidelity_r_pc')))}, readout R² {_f(_num(m.get('fidelity_readout_r2')))}.", ""]
    return lines + _figure(p, base, "Rates predicted by the differentiable surrogate against the spiking network's "
                                    "rates for the same inputs, per cell and input; dashed: identity.")


def _n_classes(run: dict, spikes: dict) -> int | None:
    n_pc = spikes["n"].get("pc")
    if not n_pc:
        return None
    model = ((run.get("train") or {}).get("config") or {}).get("model") or {}
    per = model.get("pc_per_class")
    if per and n_pc % int(per) == 0:
        return n_pc // int(per)
    fid = Path(run["path"]) / "fidelity.npz"
    if fid.is_file():
        scores = load_npz(fid).get("spiking_scores")
        if scores is not None and scores.ndim == 2 and n_pc % scores.shape[1] == 0:
            return int(scores.shape[1])
    return 10 if n_pc % 10 == 0 else None


def _spikes_section(study: Study, fig_dir: Path, base: Path) -> list[str]:
    lines = ["## Spikes: one input and its adversarial", ""]
    run = _latest(_with_file(study.attacks, "spikes.npz"))
    if run is None:
        return lines + _skip("No spikes.npz; section skipped.")
    spikes = load_spikes(Path(run["path"]) / "spikes.npz")
    summary = spike_summary(spikes)
    lines += [f"From `{study.label(run)}`: label {spikes.get('label')}, predicted {spikes.get('pred_clean')} clean and "
              f"{spikes.get('pred_adv')} under attack; L-inf distance "
              f"{_f(float(np.max(np.abs(np.asarray(spikes['x_adv']) - np.asarray(spikes['x_clean'])))))}."]
    if bool(spikes.get("tied_adv", False)):
        lines += ["The adversarial's top class score is tied (no untied example was found); the prediction is the "
                  "lowest tied class index."]
    if "cf" in spikes["pops"]:
        same = spikes.get("olive_pc_matches")
        lines += ["Climbing fibres (cf, one per Purkinje cell): the same two inputs simulated again with the inferior "
                  "olive on, teaching towards the true label as in training, and plasticity off (the network under "
                  "attack has no olive). " + ("In that simulation every other population spiked exactly as shown."
                                              if same else "Its Purkinje spikes did NOT match the engine's: the "
                                              "climbing-fibre rows are not aligned with the others.")]
    lines += [""]
    lines += _table(["population", "condition", "cells", "spikes", "mean rate (Hz)", "coding level", "sparseness"],
                    [[r["population"], r["condition"], r["n_cells"], r["n_spikes"], _f(r["mean_rate_hz"], 2),
                      _f(r["coding_level"]), _f(r["sparseness"])] for r in summary])
    lines += _figure(fig.plot_rasters(spikes, fig_dir / "spikes_raster.png"), base,
                     "Spike rasters per population for the clean input (left) and its adversarial (right); granule "
                     "cells: the first 200" + ("; climbing fibres (cf): the same inputs with the olive on, see above."
                                               if "cf" in spikes["pops"] else "."))
    lines += _figure(fig.plot_psth(spikes, fig_dir / "spikes_psth.png"), base,
                     "Peri-stimulus time histograms (mean rate per cell, 5 ms bins), clean and adversarial.")
    lines += _figure(fig.plot_coding(summary, fig_dir / "spikes_coding.png"), base,
                     "Coding level (fraction of cells that spiked), population sparseness (Treves-Rolls, 1 = "
                     "sparsest) and mean rate per population, clean against adversarial.")
    n_classes = _n_classes(run, spikes)
    start = _num((((run.get("train") or {}).get("config") or {}).get("model") or {}).get("readout_start_ms"))
    if n_classes:
        p = fig.plot_pc_classes(spikes, n_classes, fig_dir / "spikes_pc_classes.png", 0.0 if math.isnan(start) else start)
        lines += _figure(p, base, "Mean Purkinje rate per class (read out after the readout start) for the clean "
                                  "input and its adversarial, and the change under attack (higher rate = more evidence "
                                  "for the class).")
    return lines


def _spike_domain_section(study: Study, fig_dir: Path, base: Path) -> list[str]:
    lines = ["## Spike-domain attacks: edits to the mossy-fibre spike trains", ""]
    run = _latest(_with_file(study.attacks, "robustness_spikes.csv"))
    if run is None:
        return lines + _skip("No robustness_spikes.csv (`cereb attack --set attack.domain=spikes`); section skipped.")
    path = Path(run["path"])
    rows = read_csv(path / "robustness_spikes.csv")
    var = read_csv(path / "spike_variability.csv") if (path / "spike_variability.csv").is_file() else []
    m, a = run["metrics"], (run.get("config") or {}).get("attack") or {}
    attacked = sorted({r["image"] for r in rows})
    lines += [f"From `{study.label(run)}`: {len(var) or '?'} test images, {len(attacked)} attacked (those the "
              f"network classifies correctly, with a clear winner, on the frozen trial: noise slot 0). What an "
              f"experimenter may do per image: deliver at most {a.get('spike_budget')} spikes on top of the fibres' "
              f"own firing (at most {_f(_num(a.get('spike_max_rate_hz')), 0)} Hz on a fibre) and silence at most "
              f"{_f(_num(a.get('silence_budget_ms')), 0)} fibre-ms; each method has {a.get('spike_queries')} network "
              f"simulations per image. An image is flipped when another class's Purkinje score is strictly higher "
              f"(a tie is not a flip); under fresh noise the same edits are applied to "
              f"{a.get('fresh_repeats')} new draws. `shift` moves one trial's own spikes in time: a frozen-trial "
              f"diagnostic, with no fresh-noise counterpart.", ""]
    table = []
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        fresh = m.get(f"spike_{method}_success_fresh_mean")
        table.append([method, len(sel), _f(float(np.mean([int(r["fooled_frozen"]) for r in sel]))),
                      _f(_num(m.get(f"spike_{method}_median_edits_frozen")), 1),
                      "-" if fresh is None else _f(_num(fresh)),
                      "-" if fresh is None else _f(_num(m.get(f"spike_{method}_median_edits_fresh")), 1),
                      _f(float(np.median([r["queries"] for r in sel])), 0)])
    lines += _table(["method", "attacked", "flipped (frozen)", "median edits (frozen)", "success (fresh, mean)",
                     "median edits (fresh)", "median queries"], table)
    lines += ["Medians are over every attacked image, an image not flipped counting as infinitely many edits "
                  "(`inf`: fewer than half were flipped); fresh: flipped on more than half of the fresh trials. "
                  "Edits = spikes delivered + spikes of the frozen trial silenced (shift: spikes moved).", ""]
    nat, pix = _num(m.get("natural_variability_median")), _num(m.get("pixel_edits_median"))
    lines += [f"Beside them: two Poisson draws of the same image differ by a median {_f(nat, 1)} spikes (sum over "
              f"fibres of the absolute difference in spike counts over the window), and a pixel adversarial "
              f"(surrogate PGD, the smallest eps that flips the frozen trial) changes a median {_f(pix, 1)} spikes of "
              f"that trial.", ""]
    runs = sorted(_with_file(study.attacks, "robustness_spikes.csv"), key=lambda r: str(r["path"]))
    if len(runs) > 1:
        lines += _spike_networks_table(study, runs)
    lines += _figure(fig.plot_spike_edits(rows, var, fig_dir / "spike_edits.png"), base,
                     "Fraction of the attacked images flipped with at most x spike edits, per method (frozen "
                     "trial), beside the natural variability and the pixel adversarials' spike changes.")
    if (path / "spike_example.npz").is_file():
        ex = load_npz(path / "spike_example.npz")
        ex = {k: (v.item() if getattr(v, "ndim", 1) == 0 else v) for k, v in ex.items()}
        lines += _figure(fig.plot_spike_example(ex, fig_dir / "spike_example.png"), base,
                         f"Test image {ex.get('image')}: mossy-fibre spikes on the frozen trial, clean (left) and "
                         "with the adversarial edits (right; red: delivered spikes, blue: silenced intervals), and "
                         "the Purkinje cells' spikes below. The stimulation protocol of every exported image is in "
                         "the run's `stimulation.csv` and `stimulation.nwb`.")
    return lines


def _spike_networks_table(study: Study, runs: list[dict]) -> list[str]:
    """One row per spike-domain attack run: the network (width, K, LTD, seed) and, per method, the
    fraction flipped on the frozen trial and the censored median of the edits (frozen; fresh)."""
    methods = list(dict.fromkeys(m for r in runs for m in ((r.get("config") or {}).get("attack") or {})
                                 .get("spike_methods", ())))
    head = ["network", "seed", "attacked", "natural variability", "pixel edits"]
    head += [f"{m}: flipped, edits (frozen; fresh)" for m in methods]
    table = []
    for r in runs:
        f, m = r["fields"], r["metrics"]
        k = f.get("k")
        net = f"w={f.get('width')}, K={'dense' if k in (None, '') else k}, LTD {f.get('ltd')}"
        row = [net, f.get("seed"), m.get("spike_attacked"), _f(_num(m.get("natural_variability_median")), 1),
               _f(_num(m.get("pixel_edits_median")), 1)]
        for meth in methods:
            if f"spike_{meth}_fooled_frozen" not in m:
                row.append("-")
                continue
            fresh = m.get(f"spike_{meth}_median_edits_fresh")
            row.append(f"{_f(_num(m[f'spike_{meth}_fooled_frozen']), 2)}, {_f(_num(m[f'spike_{meth}_median_edits_frozen']), 1)}"
                       + ("" if fresh is None else f"; {_f(_num(fresh), 1)}"))
        table.append(row)
    return ["Every network attacked in the spike domain (medians as above; natural variability and pixel edits: "
            "medians over its attacked images):", ""] + _table(head, table) + [""]


def _learning_section(study: Study, fig_dir: Path, base: Path) -> list[str]:
    lines = ["## Learning curves", ""]
    curves = []
    for run in sorted(study.training, key=lambda r: str(r["path"])):
        f = Path(run["path"]) / "learning_curve.csv"
        if not f.is_file():
            continue
        rows = read_csv(f)
        if not rows:
            continue
        test_key = next((k for k in ("test_accuracy", "eval_accuracy") if k in rows[0]), None)
        train_key = next((k for k in ("train_accuracy", "train_accuracy_online") if k in rows[0]), None)
        if test_key is None or "epoch" not in rows[0]:
            continue
        pts = [(_num(r["epoch"]), _num(r[test_key]), _num(r.get(train_key)) if train_key else math.nan) for r in rows]
        pts = [p for p in pts if not math.isnan(p[0]) and not math.isnan(p[1])]
        if not pts:
            continue
        fields = run["fields"]
        curves.append({"model_kind": fields["model_kind"], "label": f"{_short(fields)} s{fields.get('seed')}",
                       "epoch": [p[0] for p in pts], "accuracy": [p[1] for p in pts],
                       "train_accuracy": [p[2] for p in pts] if train_key else None})
    if not curves:
        return lines + _skip("No learning_curve.csv in the training runs; section skipped.")
    return lines + _figure(fig.plot_learning_curves(curves, fig_dir / "learning_curves.png"), base,
                           "Accuracy per epoch of every training run (spiking: evaluation with plasticity off, "
                           "dashed: online accuracy during training with plasticity on).")


def _short(fields: dict) -> str:
    return " ".join(f"{k[0]}{fields[k]}" if k != "ltd" else f"ltd={fields[k]}" for k in ("width", "k", "ltd")
                    if fields.get(k) is not None) or str(fields.get("model_kind"))


def _gallery_key(names: list[str]) -> str | None:
    for prefix in GALLERY_PREFERENCE:
        for name in names:
            if name.startswith(prefix):
                return name
    rest = [n for n in names if not n.startswith("noise")]
    return (rest or names or [None])[0]


def _gallery_section(study: Study, fig_dir: Path, base: Path) -> list[str]:
    lines = ["## Galleries", ""]
    drew = False
    by_exp = group_rows(_with_file(study.attacks, "adversarials.npz"), experiment_of)
    for exp, runs in sorted(by_exp.items()):
        run = _latest(runs)
        d = load_npz(Path(run["path"]) / "adversarials.npz")
        names = [k[: -len(".x_adv")] for k in d if k.endswith(".x_adv")]
        name = _gallery_key(names)
        if name is None:
            continue
        eps = np.asarray(d.get(f"{name}.eps", np.zeros(len(d[f"{name}.x_adv"]))), dtype=float)
        k = int(np.argmin(np.abs(eps - HEADLINE_EPS[0])))
        n = min(GALLERY_IMAGES, len(d["x_clean"]))
        caps = []
        for j in range(n):
            cap = f"label {int(d['y'][j])}" if "y" in d else f"image {j}"
            for key, what in ((f"{name}.pred_clean", "clean→"), (f"{name}.pred", "adv→"), (f"{name}.pred_adv", "adv→")):
                if key in d:
                    arr = d[key]
                    cap += f", {what}{int(arr[k][j] if arr.ndim == 2 else arr[j])}"
            caps.append(cap)
        p = fig.plot_gallery(d["x_clean"][:n], d[f"{name}.x_adv"][k][:n], caps, fig_dir / f"gallery_{exp}.png",
                             f"{exp}: {name} at eps {eps[k]:g}")
        drew |= p is not None
        lines += _figure(p, base, f"{exp} (`{study.label(run)}`): clean image, adversarial ({name}, eps {eps[k]:g}) "
                                  "and the perturbation (red: brighter, blue: darker).")
    run = _latest(_with_file(study.attacks, "decision_*.npz"))
    if run is not None:
        for f in sorted(Path(run["path"]).glob("decision_*.npz")):
            d = load_npz(f)
            name = f.stem[len("decision_"):]
            ok = np.flatnonzero(np.asarray(d.get("success", np.ones(len(d["x_adv"]), bool)), dtype=bool))[:GALLERY_IMAGES]
            if ok.size == 0:
                continue
            caps = [f"label {int(d['y'][j])}, clean→{int(d['pred_clean'][j])}, adv→{int(d['pred_adv'][j])}"
                    for j in ok]
            p = fig.plot_gallery(d["x_clean"][ok], d["x_adv"][ok], caps, fig_dir / f"gallery_{name}.png",
                                 f"{name}: minimal adversarials")
            drew |= p is not None
            lines += _figure(p, base, f"{name} (`{study.label(run)}`): clean image, the smallest adversarial the "
                                      "decision-based attack found, and the perturbation; predictions of the spiking "
                                      "network.")
    return lines if drew else lines + _skip("No adversarials.npz or decision_*.npz; section skipped.")


def _export_section(study: Study, export_dir: Path, base: Path) -> list[str]:
    lines = ["## Lab export", ""]
    written: list[Path] = []
    for run in sorted(study.attacks, key=lambda r: str(r["path"])):
        if run["fields"].get("model_kind") != "spiking":
            continue
        written += export_mod.export_run(run, export_dir / experiment_of(run) / Path(run["path"]).name,
                                         eps_list=HEADLINE_EPS[:1])
    if not written:
        return lines + _skip("No spiking attack runs with spikes or adversarials; nothing exported.")
    atomic_write_text(export_dir / "README.txt", (export_mod.__doc__ or "").strip() + "\n")
    lines += ["Spike trains (`.npz`: `<pop>_i`, `<pop>_t_ms`; Neo `.mat` when the optional `neo` package is installed) and "
              "mossy-fibre stimulus tables (`stimuli.csv`: `condition, fibre, t_start_ms, t_end_ms, rate_hz`) for "
              "taking an adversarial stimulus to a rig; formats in `export/README.txt`.", ""]
    if not any(p.name.endswith(".neo.mat") for p in written):
        lines += ["Neo files were not written: the optional package `neo` is not installed.", ""]
    lines += [f"- `{os.path.relpath(p, base)}`" for p in written]
    return lines + [""]


# ----------------------------------------------------------------------------- entry point
def write_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Write the report for every run folder under ``root``; returns the path of ``report.md``.

    Parameters
    ----------
    root : a results root (e.g. ``results/demo``) holding experiment folders of run folders.
    out : the Markdown file to write (default ``<root>/report.md``). Figures go to ``figures/``, tables
        (``mechanisms.csv``, ``robustness_table.csv``) and the lab export (``export/``) next to it.

    Raises
    ------
    CerebError : ``root`` does not exist or holds no run folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise CerebError(f"results directory {root} does not exist")
    study = load_study(root)
    if not (study.training or study.attacks or study.skipped):
        raise CerebError(f"no run folders under {root} (expected {root}/<experiment>/<run>/meta.json); "
                         "train or attack a model with --out pointing there first")
    out = Path(out) if out is not None else root / "report.md"
    base = out.parent
    fig_dir = base / "figures"
    rows = attack_table(study)
    if rows:
        write_csv(base / "robustness_table.csv", rows)
    lines = _header(study, rows)
    lines += _headline_section(rows)
    lines += _checks_section(study, rows)
    lines += _models_section(training_table(study))
    lines += _curves_section(rows, fig_dir, base)
    lines += _mechanism_section(rows, fig_dir, base)
    lines += _decision_section(study, fig_dir, base)
    lines += _transfer_section(study, fig_dir, base)
    lines += _fidelity_section(study, fig_dir, base)
    lines += _spikes_section(study, fig_dir, base)
    lines += _spike_domain_section(study, fig_dir, base)
    lines += _learning_section(study, fig_dir, base)
    lines += _gallery_section(study, fig_dir, base)
    lines += _export_section(study, base / "export", base)
    atomic_write_text(out, "\n".join(lines).rstrip() + "\n")
    log.info("report written to %s", out)
    return out
