"""The findings page: does the cerebellum's circuit make it robust? Spiking and rate, mechanism by mechanism.

``collect(root)`` reads every completed attack run under ``root`` (with its training run) into
one tidy row per trained network and attack run (:data:`RUN_COLUMNS`) and its robustness curve
(:data:`CURVE_COLUMNS`); ``merge`` keeps the rows of the committed tables that no new run
replaces (run folders do not outlive a machine; ``docs/findings_runs.csv`` does); ``verdicts``
turns the rows into the mechanism verdicts (:mod:`analysis.verdicts`); ``write`` writes the
tables, the figures and ``docs/findings.md``. Nothing is recomputed from a simulation: every
number comes from a run folder or from the committed tables, so ``cereb report ROOT --findings``
rebuilds the page.

The robust-accuracy metric of each model (the threat model):

spiking
    fresh-noise robust accuracy: per image, the majority decision over the attack run's
    ``fresh_repeats`` fresh-noise trials of the adversarial input; the fraction of all attacked
    images still correct, under the strongest attack at that eps (``fresh_noise_robust_acc``);
    clean = the fresh-noise clean baseline (``fresh_clean_accuracy``).
rate / mlp
    the per-image worst case over every attack of the suite (the paper's FGSM/PGD and the strong
    evaluation): ``robust_acc_worst``; clean = ``clean_accuracy``.

Both have the same denominator (all attacked images), so they share axes.
"""
from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from analysis import verdicts as vd

log = logging.getLogger(__name__)

__all__ = ["RUN_COLUMNS", "CURVE_COLUMNS", "EPS", "collect", "merge", "read_runs", "read_curves", "reference",
           "verdicts", "render", "write", "study_info", "merge_curves"]

EPS = 0.1
KEY = ("model_kind", "width", "k", "ltd", "granule", "task", "seed")
RUN_COLUMNS = list(KEY) + ["n_inputs", "batch_size", "test_accuracy", "clean", "robust", "strongest", "n_images",
                           "fresh_repeats", "checks_passed", "train_wall_s", "attack_wall_s", "config_hash",
                           "attack_run", "train_run", "brian2", "torch", "git_commit"]
CURVE_COLUMNS = list(KEY) + ["eps", "robust_acc", "attack", "attack_run"]
LTD_ON = {"spiking": "cf", "rate": "ma"}
MANIPULATION = {
    ("spiking", "width"): "number of granule cells (`model.width`)",
    ("spiking", "ltd"): "climbing-fibre-gated LTD at PF-PC synapses (`model.ltd=cf` vs `none`)",
    ("spiking", "k"): "mossy fibres per granule cell (`model.k`; coding level calibrated to 0.1)",
    ("rate", "width"): "granule units (`model.width`)",
    ("rate", "ltd"): "running-mean subtraction, the paper's LTD (`model.ltd=ma` vs `none`)",
    ("rate", "k"): "random fan-in K (`model.granule=random`; dense = `fc`)",
}
NUMERIC = ("width", "k", "seed", "n_inputs", "batch_size", "test_accuracy", "clean", "robust", "n_images",
           "fresh_repeats", "train_wall_s", "attack_wall_s")


def _n_inputs(task: dict) -> int | None:
    name = task.get("name")
    if name == "digits":
        return 64
    if name == "mnist":
        return int(task.get("image_size", 28)) ** 2
    if name == "patterns":
        return int(task.get("dim", 64))
    return None


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def collect(root: str | Path, eps_curve: Iterable[float] | None = None) -> tuple[list[dict], list[dict]]:
    """``(runs, curves)``: one row per completed attack run under ``root`` whose training run is
    found, and its robust accuracy at every eps it evaluated (see the module doc)."""
    from analysis.tables import Study, eps_equal
    from core.runs import read_csv

    study = Study(root)
    runs, curves = [], []
    for arun in study.attacks:
        train = arun["train"]
        if train is None:
            continue
        kind = train["fields"]["model_kind"]
        cfg = train["config"]
        model, task = cfg.get("model") or {}, cfg.get("task") or {}
        n_in = _n_inputs(task)
        k = model.get("k")
        if kind != "spiking" and model.get("granule") == "fc":
            k = n_in  # a dense granule layer: every input
        m = arun["metrics"]
        if kind == "spiking":
            robust = m.get(f"fresh_noise_robust_acc_eps{EPS:g}")
            clean = m.get("fresh_clean_accuracy")
            strongest = m.get(f"fresh_noise_strongest_eps{EPS:g}")
        else:
            robust = m.get(f"robust_acc_worst_eps{EPS:g}")
            clean = m.get("clean_accuracy")
            strongest = "worst (per image, every attack)"
        if robust is None or clean is None:
            log.info("attack run %s has no %s metric at eps %g; skipped", arun["path"], kind, EPS)
            continue
        meta = arun["meta"]
        versions = meta.get("versions") or {}
        row = {
            "model_kind": kind, "width": model.get("width"), "k": k, "ltd": model.get("ltd"),
            "granule": model.get("granule") or "random", "task": task.get("name"), "seed": train["meta"].get("seed"),
            "n_inputs": n_in, "batch_size": (cfg.get("train") or {}).get("batch_size"),
            "test_accuracy": train["metrics"].get("test_accuracy"), "clean": clean, "robust": robust,
            "strongest": strongest, "n_images": (arun["config"].get("attack") or {}).get("n"),
            "fresh_repeats": (arun["config"].get("attack") or {}).get("fresh_repeats") if kind == "spiking" else None,
            "checks_passed": m.get("checks_passed"), "train_wall_s": train["meta"].get("wall_s"),
            "attack_wall_s": meta.get("wall_s"), "config_hash": train["meta"].get("config_hash"),
            "attack_run": study.label(arun), "train_run": study.label(train),
            "brian2": versions.get("brian2"), "torch": versions.get("torch"), "git_commit": (meta.get("git_commit") or "")[:10],
        }
        runs.append(row)
        path = Path(arun["path"]) / "robustness.csv"
        if not path.is_file():
            continue
        table = read_csv(path)
        if kind == "spiking":
            own = [r for r in table if r.get("noise_mode") == "fresh" and (r.get("norm") or "linf") == "linf"]
        else:
            own = [r for r in table if r.get("attack") == "worst"]
        by_eps: dict[float, list[dict]] = defaultdict(list)
        for r in own:
            by_eps[round(_num(r["eps"]), 6)].append(r)
        for e, rs in sorted(by_eps.items()):
            if eps_curve is not None and not any(eps_equal(e, c) for c in eps_curve):
                continue
            best = min(rs, key=lambda r: _num(r["robust_acc"]))
            curves.append({**{c: row[c] for c in KEY}, "eps": e, "robust_acc": _num(best["robust_acc"]),
                           "attack": best["attack"], "attack_run": row["attack_run"]})
    return runs, curves


def study_info(root: str | Path) -> dict | None:
    """The newest completed study run under ``root``: its command, configuration hash, jobs and wall
    time (``None`` when the runs were not made by ``cereb study``)."""
    from analysis.runs import all_runs, experiment_of

    done, _ = all_runs(root)
    studies = sorted((r for r in done if experiment_of(r).startswith("study-")), key=lambda r: Path(r["path"]).name)
    if not studies:
        return None
    r = studies[-1]
    argv = list(r["meta"].get("argv") or [])
    if argv:
        argv[0] = "cereb"
    held = None
    table = Path(r["path"]) / "study.csv"
    if table.is_file():
        with table.open(newline="") as fh:
            held = sum(row.get("status") == "committed" for row in csv.DictReader(fh))
    return {"name": experiment_of(r)[len("study-"):], "command": " ".join(argv), "hash": r["meta"].get("config_hash"),
            "n_jobs": r["metrics"].get("n_jobs"), "wall_s": r["metrics"].get("study_wall_s"),
            "start": r["meta"].get("start"), "end": r["meta"].get("end"), "n_held": held}


def _key(r: dict) -> tuple:
    return tuple(str(r[c]) for c in KEY)


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows that no ``new`` row replaces (same model, configuration and seed), then ``new``.
    Of several new rows of one configuration and seed (an attack run repeated), the newest wins."""
    fresh: dict[tuple, dict] = {}
    for r in sorted(new, key=lambda r: str(r.get("attack_run"))):
        fresh[_key(r)] = r
    rows = [r for r in old if _key(r) not in fresh] + list(fresh.values())
    return sorted(rows, key=lambda r: tuple((str(r[c]) if not isinstance(r[c], (int, float)) else f"{r[c]:012.3f}")
                                            for c in KEY))


def merge_curves(old: list[dict], new: list[dict], runs: list[dict]) -> list[dict]:
    """The curve points of the attack runs that ``runs`` keep."""
    keep = {str(r["attack_run"]) for r in runs}
    pts = {(str(p["attack_run"]), round(float(p["eps"]), 6)): p for p in list(old) + list(new)}
    return sorted((p for (run, _), p in pts.items() if run in keep),
                  key=lambda p: (p["model_kind"], str(p["attack_run"]), float(p["eps"])))


def _read(path: Path, columns: list[str]) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(columns) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} is not a findings table (missing columns: {', '.join(sorted(missing))})")
        out = []
        for r in reader:
            row = dict(r)
            for k in (*NUMERIC, "eps", "robust_acc"):
                if k in row:
                    v = _num(row[k])
                    row[k] = (int(v) if k in ("width", "k", "seed", "n_inputs", "batch_size", "n_images",
                                              "fresh_repeats") and not math.isnan(v) else v)
                    if k in ("k", "width", "batch_size", "n_images", "fresh_repeats", "n_inputs") and math.isnan(_num(v)):
                        row[k] = None
            out.append(row)
    return out


def read_runs(path: str | Path) -> list[dict]:
    """Rows of a ``findings_runs.csv``; [] when it does not exist."""
    return _read(Path(path), RUN_COLUMNS)


def read_curves(path: str | Path) -> list[dict]:
    """Rows of a ``findings_curves.csv``; [] when it does not exist."""
    return _read(Path(path), CURVE_COLUMNS)


# ----------------------------------------------------------------------------- the verdicts
def _config(r: dict) -> tuple:
    return (r["width"], r["k"], r["ltd"], r["granule"], r["task"])


def reference(rows: list[dict]) -> tuple | None:
    """The centre of a one-factor-at-a-time design: the configuration with the most other
    configurations that differ from it in exactly one of width, K and LTD (ties: most runs)."""
    configs: dict[tuple, int] = defaultdict(int)
    for r in rows:
        configs[_config(r)] += 1
    if not configs:
        return None

    def neighbours(c):  # configurations of the same task that differ from c in exactly one of width, K, LTD
        return sum(o[4] == c[4] and sum(a != b for a, b in zip(c[:3], o[:3])) == 1 for o in configs)

    return max(configs, key=lambda c: (neighbours(c), configs[c], str(c)))


def _one_per_seed(rows: list[dict]) -> list[dict]:
    """One record per trained network (a configuration attacked twice: its newest attack run)."""
    best: dict[tuple, dict] = {}
    for r in sorted(rows, key=lambda r: str(r["attack_run"])):
        best[_key(r)] = r
    return list(best.values())


def verdicts(rows: list[dict]) -> tuple[list[dict], dict]:
    """The verdict table (:data:`analysis.verdicts.VERDICT_COLUMNS`, Holm-adjusted over the whole
    family) and the reference configuration of each model kind."""
    rows = _one_per_seed(rows)
    out, refs = [], {}
    for kind in ("spiking", "rate"):
        mine = [r for r in rows if r["model_kind"] == kind]
        ref = reference(mine)
        if ref is None:
            continue
        refs[kind] = ref
        width, k, ltd, granule, task = ref
        wsweep = [r for r in mine if r["k"] == k and r["ltd"] == ltd and r["task"] == task
                  and (r["granule"] == granule)]
        out.append(vd.width_verdict(wsweep, kind, MANIPULATION[(kind, "width")]))
        on = [r for r in mine if r["width"] == width and r["k"] == k and r["granule"] == granule and r["task"] == task
              and r["ltd"] == LTD_ON[kind]]
        off = [r for r in mine if r["width"] == width and r["k"] == k and r["granule"] == granule and r["task"] == task
               and r["ltd"] == "none"]
        out.append(vd.ltd_verdict(on, off, kind, MANIPULATION[(kind, "ltd")]))
        ksweep = [r for r in mine if r["width"] == width and r["ltd"] == ltd and r["task"] == task and r["k"] is not None]
        out.append(vd.k_verdict(ksweep, kind, MANIPULATION[(kind, "k")]))
    if "spiking" in refs and "rate" in refs:
        sw, sk = refs["spiking"][:2]
        spk = [r for r in rows if r["model_kind"] == "spiking" and _config(r) == refs["spiking"]]
        rate = [r for r in rows if r["model_kind"] == "rate" and r["width"] == sw and r["k"] == sk
                and r["ltd"] == LTD_ON["rate"] and r["task"] == refs["spiking"][4]]
        out.append(vd.model_contrast(spk, rate, f"width {sw}, K {sk}, LTD on (each model's own)",
                                     "the spiking network against the rate model at matched width and K"))
    return vd.verdict_table(out), refs


# ----------------------------------------------------------------------------- the page
def _pct(v, digits: int = 1) -> str:
    v = _num(v)
    return "–" if math.isnan(v) else f"{100 * v:.{digits}f}"


def _p(v) -> str:
    v = _num(v)
    if math.isnan(v):
        return "–"
    return f"{v:.2g}" if v >= 1e-3 else f"{v:.1e}"


def _ref_text(ref: tuple | None) -> str:
    if ref is None:
        return "–"
    width, k, ltd, granule, task = ref
    return f"width {width}, K {k}, LTD {ltd}" + (f", granule {granule}" if granule not in (None, "random") else "")


def _design_lines(rows: list[dict]) -> list[str]:
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in _one_per_seed(rows):
        by[(r["model_kind"], *_config(r))].append(r)
    body = []
    for (kind, width, k, ltd, granule, task), rs in sorted(by.items(), key=lambda kv: (
            kv[0][0], _num(kv[0][1]), _num(kv[0][2]), str(kv[0][3]), str(kv[0][4]), str(kv[0][5]))):
        seeds = sorted(int(r["seed"]) for r in rs)
        clean = np.mean([r["clean"] for r in rs])
        rob = np.mean([r["robust"] for r in rs])
        body.append(f"| {kind} | {width} | {k} | {ltd} | {granule} | {len(rs)} ({', '.join(map(str, seeds))}) | "
                    f"{_pct(clean)} | {_pct(rob)} |")
    return ["| model | width | K | LTD | granule | seeds | clean % (mean) | robust % at eps 0.1 (mean) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |", *body]


def _answer(table: list[dict]) -> str:
    """The plain-words paragraph, composed from the verdict rows (no number is typed in)."""
    def row(kind, mech):
        return next((r for r in table if r["model_kind"] == kind and r["mechanism"] == mech), None)

    parts = []
    for kind, name in (("spiking", "In the spiking cerebellum"), ("rate", "In the rate model")):
        bits = []
        for mech, what in (("width", "a wider granule layer"), ("ltd", "LTD"), ("k", "sparser mossy-fibre input")):
            r = row(kind, mech)
            if r is None or not r["test"]:
                bits.append(f"{what} was not tested ({(r or {}).get('note') or 'no runs'})")
                continue
            if r["verdict"].startswith(("helps", "hurts")):
                bits.append(f"{what} {r['verdict'].split(':')[0]} ({100 * r['effect']:+.1f} points of robust accuracy, "
                            f"95% CI {100 * r['ci_low']:+.1f} to {100 * r['ci_high']:+.1f}, Holm p {_p(r['p_holm'])})"
                            + (f", but it changes clean accuracy by {100 * _num(r['clean_effect']):+.1f} points too, so "
                               "this is (partly) a difference in how well the network classifies at all"
                               if r.get("confounded") else ""))
            else:
                bits.append(f"{what} made no detectable difference ({100 * r['effect']:+.1f} points, 95% CI "
                            f"{100 * r['ci_low']:+.1f} to {100 * r['ci_high']:+.1f}; the study could detect "
                            f"{_pct(r['mde'])} points)")
        if bits:
            parts.append(f"{name}, " + "; ".join(bits) + ".")
    c = next((r for r in table if r["mechanism"] == "model"), None)
    if c is not None and c["test"]:
        if c["verdict"].startswith("the spiking"):
            parts.append(f"At matched width and K, {c['verdict']} (95% CI {100 * c['ci_low']:+.1f} to "
                         f"{100 * c['ci_high']:+.1f}; clean accuracy differs by {100 * _num(c['clean_effect']):+.1f} points).")
        else:
            parts.append(f"At matched width and K, the spiking network and the rate model are not detectably "
                         f"different in robust accuracy ({100 * c['effect']:+.1f} points; could detect "
                         f"{_pct(c['mde'])}).")
    names = {"width": "a wider granule layer", "ltd": "LTD", "k": "sparser mossy-fibre input"}
    mech = [r for r in table if r["mechanism"] != "model" and r["test"]]

    def listed(rs):
        items = [f"{names.get(r['mechanism'], r['mechanism'])} ({r['model_kind']})" for r in rs]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    helped = [r for r in mech if r["verdict"].startswith("helps") and not r.get("confounded")]
    hurt = [r for r in mech if r["verdict"].startswith("hurts") and not r.get("confounded")]
    mixed = [r for r in mech if r["verdict"].startswith(("helps", "hurts")) and r.get("confounded")]
    if not [r for r in table if r["test"]]:
        parts.append("No mechanism has enough runs to be tested yet.")
    else:
        if helped:
            parts.append("So, against the seed paper's null result, " + listed(helped)
                         + " made the model measurably more robust under this threat model"
                         + (f", and {listed(hurt)} made it less robust." if hurt else "."))
        else:
            parts.append("So the seed paper's answer stands for these networks: none of the three circuit features "
                         "made the model measurably more robust, beyond classifying better, under this threat model, "
                         "at the power stated" + (f"; {listed(hurt)} made it less robust." if hurt else "."))
        if mixed:
            parts.append(f"For {listed(mixed)}, robust accuracy moved together with clean accuracy: these settings "
                         "give a network that classifies better or worse, which is not shown to resist attack more "
                         "or less for a given accuracy.")
    if any(r["model_kind"] in ("spiking", "spiking - rate") and r["test"] for r in table):
        parts.append("The spiking network has no exact gradient: its robust accuracy is what the surrogate-gradient, "
                     "hybrid and noise-averaged attacks left, an upper bound, while the rate model's is the worst "
                     "case over white-box attacks; read the comparison between the two models with that in mind.")
    return " ".join(parts)


def render(rows: list[dict], curves: list[dict], *, figures: dict[str, str] | None = None,
           study: dict | None = None) -> str:
    """The text of ``findings.md`` from the tidy rows (and the study's cost, when given)."""
    table, refs = verdicts(rows)
    runs = _one_per_seed(rows)
    kinds = sorted({r["model_kind"] for r in runs})
    lines = ["# Findings: does the cerebellum's circuit make it robust to adversarial examples?", "",
             "*Generated by `cereb report ROOT --findings` from the committed tables `findings_runs.csv` and "
             "`findings_curves.csv` (and from the run folders under ROOT, merged into them); do not edit.*", "",
             "## The question", "",
             "Yuezhang, Li & Chen (PMLR 148, 2021) trained a rate model of the cerebellum (a fixed random granule "
             "layer, a linear Purkinje readout) on MNIST, attacked it with FGSM and PGD, and found that none of "
             "three circuit features (a wider granule layer, long-term depression at parallel-fibre-Purkinje "
             "synapses, sparse mossy-fibre connectivity) gave a significant gain in robustness. Does the answer "
             "hold for a spiking cerebellum (Brian2: mossy fibres, granule, Golgi, molecular-layer interneurons, "
             "Purkinje cells, climbing-fibre-driven plasticity), attacked as it really runs?", "",
             "## Threat model", "",
             f"L-inf perturbations of the input image, budget eps = {EPS:g} (pixels in [0, 1]). The spiking network "
             "draws new noise (Poisson mossy-fibre spikes, membrane noise) on every trial, so its robust accuracy "
             "is measured **under fresh noise**: per image, the network's decision is the majority over the attack "
             "run's fresh-noise trials of the adversarial input, and robust accuracy is the fraction of all "
             "attacked images whose majority decision is correct, under the strongest of its attacks (surrogate "
             "PGD, the hybrid, the noise-averaged EOT hybrid; see the README's attack section). Its clean accuracy "
             "is the same majority decision at eps 0. The rate model is deterministic; its robust accuracy is the "
             "per-image worst case over the seed paper's FGSM/PGD and the strong evaluation (margin and "
             "cross-entropy PGD with restarts). Both fractions have the same denominator, so they share axes. The "
             "trained network (its seed) is the unit of analysis.", ""]
    lines += ["## What was run", ""]
    if study:
        wall_s = _num(study.get("wall_s"))
        lines += [f"- Study: `{study.get('command', '')}`" + (f" (configuration hash `{study['hash']}`)"
                                                              if study.get("hash") else "")
                  + (f", {study['n_jobs']} jobs" if study.get("n_jobs") else "")
                  + (f" ({study['n_jobs'] - study['n_held']} run by this invocation, {study['n_held']} held by the "
                     "committed table from earlier sessions)" if study.get("n_held") and study.get("n_jobs") else "")
                  + (f", {wall_s / 3600:.2f} h wall time for this invocation ({study.get('start')} to "
                     f"{study.get('end')}; the machine time of every run is the next line)"
                     if not math.isnan(wall_s) else "") + "."]
    else:
        lines += ["- No completed `cereb study` folder under the results root: the runs were made job by job "
                  "(`cereb study FILE --job I`) or the study is still incomplete; the seeds per configuration are "
                  "in the table below. Rerun: `cereb study studies/answer_digits.yaml --out results/answer --skip-committed docs/findings_runs.csv`, then "
                  "`cereb report results/answer --findings`."]
    n_by = {kk: sum(r["model_kind"] == kk for r in runs) for kk in kinds}
    wall = sum(_num(r["train_wall_s"]) + _num(r["attack_wall_s"]) for r in runs
               if not math.isnan(_num(r["train_wall_s"]) + _num(r["attack_wall_s"])))
    versions = sorted({(str(r.get("brian2")), str(r.get("torch"))) for r in runs})
    commits = sorted({str(r.get("git_commit")) for r in runs if r.get("git_commit")})
    hashes = sorted({str(r.get("config_hash")) for r in runs if r.get("config_hash")})
    lines += [f"- {len(runs)} trained and attacked networks: " + ", ".join(f"{n_by[kk]} {kk}" for kk in kinds) + ".",
              f"- Machine time (training + attack, summed over runs, single-threaded workers): {wall / 3600:.2f} h.",
              "- Versions: " + "; ".join(f"brian2 {b}, torch {t}" for b, t in versions) + ". Commits: "
              + ", ".join(f"`{c}`" for c in commits) + ".",
              f"- Configuration hashes of the trained networks: {len(hashes)} distinct (column `config_hash` of "
              "`findings_runs.csv`).",
              "- Reference configurations: " + "; ".join(f"{kk}: {_ref_text(refs.get(kk))}" for kk in kinds) + ".", ""]
    lines += _design_lines(rows) + [""]
    lines += ["## Verdicts", "",
              "One row per mechanism and model; the effect is oriented so that positive means the feature "
              "*helps* (wider, LTD on, sparser K; spiking minus rate in the last row), in points of robust "
              f"accuracy at eps {EPS:g}. Width and K: least-squares regression on log2 of the setting, the effect "
              "being the fitted difference between the extreme settings; LTD: paired t-test on seeds; spiking vs "
              "rate: Welch t-test. p (Holm): Holm-adjusted over the robust-accuracy tests of this table "
              "(family-wise error 5%). MDE: the smallest effect this test detects with 80% power at its observed "
              "standard error. Clean: the same contrast on clean accuracy. Methods: `analysis/verdicts.py`.", "",
              "| model | mechanism (this model's manipulation) | contrast | n | effect (points) | 95% CI | test | p | "
              "p (Holm) | MDE | clean effect [95% CI] | verdict |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in table:
        ci = f"{_pct(r['ci_low'])} to {_pct(r['ci_high'])}" if r["test"] else "–"
        clean = (f"{_pct(r['clean_effect'])} [{_pct(r['clean_ci_low'])}, {_pct(r['clean_ci_high'])}]"
                 if r["test"] else "–")
        lines.append(f"| {r['model_kind']} | {r['mechanism']}: {r['manipulation']} | {r['contrast']} | {r['n']} | "
                     f"{_pct(r['effect']) if r['test'] else '–'} | {ci} | {r['test'] or '–'} | {_p(r['p_value'])} | "
                     f"{_p(r['p_holm'])} | {_pct(r['mde'])} | {clean} | {r['verdict']} |")
    lines.append("")
    figures = figures or {}
    if figures.get("curves"):
        lines += ["## Robustness curves", "",
                  f"![robust accuracy against eps, both models]({figures['curves']})", "",
                  "Robust accuracy against eps at each model's reference configuration (mean over seeds, band: 95% "
                  "CI over seeds); spiking under fresh noise (majority decision), rate as the per-image worst case.",
                  ""]
    if figures.get("mechanisms"):
        lines += ["## Mechanisms", "", f"![robust accuracy by width, K and LTD]({figures['mechanisms']})", "",
                  f"Robust accuracy at eps {EPS:g} against width, K and LTD for both models (points: networks; "
                  "lines: means over seeds).", ""]
    lines += ["## The answer", "", _answer(table), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures
def plot_curves(rows: list[dict], curves: list[dict], path: str | Path) -> Path | None:
    """Robust accuracy against eps at each model's reference configuration, both on one axes."""
    from analysis.figures import _band, _plt, _save

    _, refs = verdicts(rows)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    drawn = False
    for kind, style in (("spiking", {"color": "tab:red"}), ("rate", {"color": "tab:blue"})):
        if kind not in refs:
            continue
        pts = [p for p in curves if p["model_kind"] == kind and _config(p) == refs[kind]]
        eps = sorted({round(float(p["eps"]), 6) for p in pts})
        if not eps:
            continue
        groups = [[p["robust_acc"] for p in pts if round(float(p["eps"]), 6) == e] for e in eps]
        n = len({p["seed"] for p in pts})
        _band(ax, eps, groups, f"{kind} ({_ref_text(refs[kind])}; {n} seeds)", **style)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("L-inf eps")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("spiking (fresh noise, majority) vs rate (worst case)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_mechanisms(rows: list[dict], path: str | Path) -> Path | None:
    """Robust accuracy at eps 0.1 against width, K and LTD, both models side by side."""
    from analysis.figures import _plt, _save

    rows = _one_per_seed(rows)
    _, refs = verdicts(rows)
    if not refs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    colors = {"spiking": "tab:red", "rate": "tab:blue"}
    for kind, ref in refs.items():
        width, k, ltd, granule, task = ref
        mine = [r for r in rows if r["model_kind"] == kind]
        for ax, field, sel in ((axes[0], "width", lambda r: r["k"] == k and r["ltd"] == ltd),
                               (axes[1], "k", lambda r: r["width"] == width and r["ltd"] == ltd)):
            pts = [r for r in mine if sel(r) and r[field] is not None]
            if not pts:
                continue
            xs = sorted({r[field] for r in pts})
            ax.scatter([r[field] for r in pts], [r["robust"] for r in pts], s=10, color=colors[kind], alpha=0.6)
            ax.plot(xs, [np.mean([r["robust"] for r in pts if r[field] == x]) for x in xs], color=colors[kind],
                    label=kind)
        on = [r["robust"] for r in mine if r["width"] == width and r["k"] == k and r["ltd"] == LTD_ON.get(kind)]
        off = [r["robust"] for r in mine if r["width"] == width and r["k"] == k and r["ltd"] == "none"]
        x0 = 0 if kind == "spiking" else 1
        for dx, vals, lab in ((-0.15, off, "off"), (0.15, on, "on")):
            if vals:
                axes[2].scatter([x0 + dx] * len(vals), vals, s=10, color=colors[kind], alpha=0.6)
                axes[2].plot([x0 + dx - 0.08, x0 + dx + 0.08], [np.mean(vals)] * 2, color=colors[kind])
    for ax, label in ((axes[0], "width (granule cells)"), (axes[1], "K (inputs per granule cell)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(label)
        ax.legend(fontsize=7)
    axes[2].set_xticks([-0.15, 0.15, 0.85, 1.15], ["spk off", "spk on", "rate off", "rate on"], fontsize=7)
    axes[2].set_xlabel("LTD")
    for ax in axes:
        ax.set_ylabel(f"robust accuracy, eps {EPS:g}")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def write(rows: list[dict], curves: list[dict], docs: str | Path, study: dict | None = None) -> Path:
    """Write ``docs/findings_runs.csv``, ``findings_curves.csv``, ``findings_verdicts.csv``, the
    figures and ``docs/findings.md``; returns the page's path."""
    from core.runs import atomic_write_text, write_csv

    docs = Path(docs)
    docs.mkdir(parents=True, exist_ok=True)
    write_csv(docs / "findings_runs.csv", rows, RUN_COLUMNS)
    write_csv(docs / "findings_curves.csv", curves, CURVE_COLUMNS)
    table, _ = verdicts(rows)
    write_csv(docs / "findings_verdicts.csv", table, vd.VERDICT_COLUMNS)
    figures = {}
    if plot_curves(rows, curves, docs / "findings_curves.png"):
        figures["curves"] = "findings_curves.png"
    if plot_mechanisms(rows, docs / "findings_mechanisms.png"):
        figures["mechanisms"] = "findings_mechanisms.png"
    md = docs / "findings.md"
    atomic_write_text(md, render(rows, curves, figures=figures, study=study))
    return md
