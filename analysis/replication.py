"""The seed paper's replication table: rate-model attack runs beside the paper's published numbers.

``collect(root)`` reads every completed rate-model attack run under ``root`` and its training run,
one tidy row each (the columns of :data:`COLUMNS`); ``merge`` keeps the rows of an earlier table
that no new run replaces (run folders do not outlive a machine; the committed table does);
``write(rows, docs)`` writes ``docs/replication_runs.csv`` and ``docs/replication.md``. Nothing is
recomputed: every number is read from a run folder or from the committed table.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["COLUMNS", "FOUR_MODELS", "PAPER_FGSM_MSE_EPS01", "PAPER_FOUR", "PAPER_SPARSE", "TRACE_COLUMNS", "collect", "collect_traces", "merge", "merge_traces",
           "model_name", "plot_sparseness", "plot_traces", "plot_width", "read_table", "read_traces", "render", "write"]

KEY = ("granule", "width", "k", "ltd", "batch_size", "seed")
METRICS = ("clean_accuracy", "fgsm_mse_eps0.1", "pgd_mse_eps0.1", "strong_eps0.1", "worst_eps0.1")
# PGD with the other losses, and what the attacked readout looks like (clean images; attacks/experiment.py):
# absent from older rows
READOUT = ("pgd_ce_eps0.1", "pgd_margin_eps0.1", "readout_weight_norm", "clean_true_score_mean", "clean_other_score_mean", "clean_margin_mean", "clean_mse_mean")
# what each run cost (absent from older rows): wall times, and the strong evaluation's image-gradient
# steps, achieved GFLOP/s and fraction of the matrix-multiply throughput measured in the same run
COST = ("train_wall_s", "attack_wall_s", "wall_s_strong", "strong_image_steps", "strong_gflops", "matmul_gflops",
        "strong_fraction_of_matmul", "load_per_core", "torch_threads")
# the paper's largest budget (its four-model comparison reports PGD at eps 0.3; absent from older rows)
EPS03 = ("pgd_mse_eps0.3", "strong_eps0.3")
# the budget check (attacks.checks): the eps it judged, the robust accuracy the strong evaluation left
# there, and the fraction of those images with an all-zero input gradient at its last iterates
# (absent from older rows)
BUDGET = ("budget_eps", "budget_robust_acc", "budget_left_zero_grad_frac")
# the column groups older tables may lack
OPTIONAL = READOUT + COST + EPS03 + BUDGET
COLUMNS = KEY + METRICS + OPTIONAL + ("checks_passed", "train_run", "attack_run")
TRACE_FIELDS = ("eps", "loss", "step", "n", "loss_mean", "margin_mean", "frac_correct", "true_score_mean",
                "other_score_mean", "grad_l2_mean")
TRACE_COLUMNS = KEY + TRACE_FIELDS
# Yuezhang, Li & Chen (2021), public notebook outputs: dense granule layer without LTD, MNIST
# (60,000 training images), FGSM with the MSE loss at eps 0.1, robust accuracy in %.
PAPER_FGSM_MSE_EPS01 = {1000: 20.3, 2000: 27.0, 5000: 33.6, 10000: 34.4, 20000: 41.1, 200000: 48.8}
PAPER_PGD_TEXT = "9-17% without LTD, 66-86% with LTD (every width)"
# The paper's code, notebook/plot.ipynb at its final commit (1060885, June 2020), mean of 2 seeds, in %:
# the sparseness sweep (random fan-in K with LTD, width 4.8e6 / (K + 20)): best test accuracy and
# MSE-PGD (40 steps of 0.01, random start) at eps 0.1 (its cells 15 and 17) ...
PAPER_SPARSE = {1: (84.88, 55.62), 2: (96.16, 94.12), 4: (97.20, 95.24), 10: (97.73, 88.31), 20: (98.02, 83.89),
                50: (97.96, 75.76), 100: (97.86, 73.59), 200: (97.78, 72.06), 400: (97.51, 85.13), 784: (96.98, 83.65)}
# ... and the four models: best test accuracy (cell 20) and MSE-PGD at eps 0.3 (cell 22). Its baseline
# (`plain_none_50`, one seed) is labelled "CNN" there, at 99.25% test accuracy: not the 50-unit MLP
# run here, so it is not set beside it.
PAPER_FOUR = {"Base": (96.60, 1.715), "Base+LTD": (96.93, 24.585), "Base+RC": (96.95, 3.305),
              "Cerebellum": (97.20, 47.97)}


def _attack_runs(root: str | Path):
    """``(attack run, key dict)`` for every completed rate-model or MLP attack run under ``root``
    whose training run is found (the key: :data:`KEY`, read from the training run; the MLP's
    granule is ``mlp`` and its width the hidden layer's size)."""
    from analysis.runs import is_attack_run, load_run, resolve_source_run, select_runs

    for run in select_runs(root):
        kind = run["config"].get("model_kind")
        if not is_attack_run(run) or kind not in ("rate", "mlp"):
            continue
        src = resolve_source_run(run, root)
        if src is None:
            log.warning("attack run %s: its training run is not under %s; skipped", run["path"], root)
            continue
        train = load_run(src)
        model, tcfg = train["config"]["model"], train["config"]["train"]
        if kind == "mlp":  # the paper's MLP baseline: its hidden layer in the width column
            key = {"granule": "mlp", "width": int(model["hidden"]), "k": 0, "ltd": "none"}
        else:
            key = {"granule": model["granule"], "width": int(model["width"]),
                   "k": int(model["k"]) if model["granule"] != "fc" else 0, "ltd": model["ltd"]}
        key.update(batch_size=int(tcfg["batch_size"]), seed=int(train["meta"]["seed"]))
        yield run, key, Path(src).name, train["metrics"]


def collect(root: str | Path) -> list[dict]:
    """One row per completed rate-model attack run under ``root`` whose training run is found."""
    rows = []
    for run, key, train_name, train_metrics in _attack_runs(root):
        m = run["metrics"]
        rows.append({
            **key,
            "clean_accuracy": m.get("clean_accuracy"),
            "fgsm_mse_eps0.1": m.get("robust_acc_fgsm_mse_eps0.1"),
            "pgd_mse_eps0.1": m.get("robust_acc_pgd_mse_eps0.1"),
            "strong_eps0.1": m.get("robust_acc_strong_eps0.1"),
            "worst_eps0.1": m.get("robust_acc_worst_eps0.1"),
            **{k: m.get(k) for k in READOUT if not k.startswith("pgd_")},
            "pgd_ce_eps0.1": m.get("robust_acc_pgd_ce_eps0.1"),
            "pgd_margin_eps0.1": m.get("robust_acc_pgd_margin_eps0.1"),
            "pgd_mse_eps0.3": m.get("robust_acc_pgd_mse_eps0.3"),
            "strong_eps0.3": m.get("robust_acc_strong_eps0.3"),
            **{k: m.get(k) for k in BUDGET},
            "train_wall_s": train_metrics.get("train_wall_s"),
            **{k: m.get(k) for k in COST if k != "train_wall_s"},
            "checks_passed": bool(m.get("checks_passed")),
            "train_run": train_name, "attack_run": Path(run["path"]).name,
        })
        for k in METRICS + OPTIONAL:  # a metric the run did not record (e.g. no strong evaluation)
            v = rows[-1][k]
            # numbers as floats, as read_table parses them: a rebuilt table writes each value as before
            rows[-1][k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")
    return rows


def collect_traces(root: str | Path, seeds: tuple[int, ...] = (0,)) -> list[dict]:
    """The PGD traces (``pgd_traces.csv``: loss, margin and accuracy at every step of the paper's PGD
    under the MSE and the margin loss, on the images that survive MSE-PGD but not the strong
    evaluation) of the attack runs of ``seeds``, one row per step, keyed like the table."""
    from core.runs import read_csv

    newest: dict[tuple, tuple[str, Path]] = {}  # a configuration attacked twice: its newest attack run
    for run, key, _, _ in _attack_runs(root):
        path = Path(run["path"]) / "pgd_traces.csv"
        k = tuple(key[c] for c in KEY)
        if key["seed"] in seeds and path.is_file() and (k not in newest or Path(run["path"]).name > newest[k][0]):
            newest[k] = (Path(run["path"]).name, path)
    rows = []
    for k, (_, path) in sorted(newest.items()):
        key = dict(zip(KEY, k))
        for r in read_csv(path):
            rows.append({**key, **{f: r.get(f, float("nan")) for f in TRACE_FIELDS}})
    return rows


def read_table(path: str | Path) -> list[dict]:
    """Rows of a ``replication_runs.csv`` (numbers parsed); [] when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(COLUMNS) - set(OPTIONAL) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} is not a replication table (missing columns: {', '.join(sorted(missing))})")
        for r in reader:
            row = dict(r)
            for k in ("width", "k", "batch_size", "seed"):
                row[k] = int(row[k])
            for k in METRICS + OPTIONAL:
                v = row.get(k)
                row[k] = float(v) if v not in (None, "", "None", "nan") else float("nan")
            row["checks_passed"] = row["checks_passed"] == "True"
            out.append(row)
    return out


def read_traces(path: str | Path) -> list[dict]:
    """Rows of a ``replication_traces.csv``; [] when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    from core.runs import read_csv

    rows = read_csv(path)
    missing = set(TRACE_COLUMNS) - set(rows[0] if rows else TRACE_COLUMNS)
    if missing:
        raise ValueError(f"{path} is not a replication trace table (missing columns: {', '.join(sorted(missing))})")
    return rows


def merge_traces(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` traces of configurations that no ``new`` trace replaces, then ``new``; sorted."""
    key = lambda r: tuple(r[k] for k in KEY)  # noqa: E731
    fresh = {key(r) for r in new}
    rows = [r for r in old if key(r) not in fresh] + list(new)
    return sorted(rows, key=lambda r: (key(r), r["loss"], r["step"]))


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows that no ``new`` row replaces (same configuration and seed), then ``new``; sorted."""
    key = lambda r: tuple(r[k] for k in KEY)  # noqa: E731
    fresh = {key(r): r for r in new}
    rows = [r for r in old if key(r) not in fresh] + list(fresh.values())
    return sorted(rows, key=key)


def _pct(values: list[float]) -> str:
    v = np.asarray([x for x in values if x == x], dtype=float) * 100
    if not len(v):
        return "-"
    if len(v) == 1:
        return f"{v[0]:.1f}"
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"


# The seed paper's four models and its MLP baseline (its Table of models; studies/paper_four_models.yaml)
FOUR_MODELS = (("Base", {"granule": "fc", "width": 5970, "ltd": "none"}),
               ("Base+LTD", {"granule": "fc", "width": 5970, "ltd": "ma"}),
               ("Base+RC", {"granule": "random", "k": 4, "width": 200000, "ltd": "none"}),
               ("Cerebellum", {"granule": "random", "k": 4, "width": 200000, "ltd": "ma"}),
               ("MLP", {"granule": "mlp"}))


def model_name(row: dict) -> str | None:
    """The paper's name of ``row``'s model (Base, Base+LTD, Base+RC, Cerebellum, MLP), or None."""
    for name, sel in FOUR_MODELS:
        if all(row.get(k) == v for k, v in sel.items()):
            return name
    return None


def _is_sparse(r: dict) -> bool:
    """A row of the sparseness sweep: random fan-in K with LTD (not one of the four named models'
    K = 4 without LTD)."""
    return r["granule"] == "random" and r["ltd"] == "ma"


_HEAD = ("| seeds | clean | FGSM-MSE | {paper} | MSE-PGD | strong | worst | checks passed |",
         "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")


def _cells(rs: list[dict], paper: str) -> str:
    return (f"| {len(rs)} | {_pct([r['clean_accuracy'] for r in rs])} | {_pct([r['fgsm_mse_eps0.1'] for r in rs])} "
            f"| {paper} | {_pct([r['pgd_mse_eps0.1'] for r in rs])} | {_pct([r['strong_eps0.1'] for r in rs])} "
            f"| {_pct([r['worst_eps0.1'] for r in rs])} | {sum(r['checks_passed'] for r in rs)} / {len(rs)} |")


def _grouped(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["granule"], r["width"], r["k"], r["ltd"], r["batch_size"]), []).append(r)
    return groups


def render(rows: list[dict], traces: list[dict] | None = None) -> str:
    """The Markdown document: one line per configuration (mean ± SD over seeds), in three tables:
    the width sweep (dense granule layer), the sparseness sweep and the four models with the MLP."""
    dense = [r for r in rows if r["granule"] == "fc"]
    sparse = [r for r in rows if _is_sparse(r)]
    named = [r for r in rows if model_name(r)]
    lines = [
        "# Replication of Yuezhang, Li & Chen (2021) under its own protocol",
        "",
        "Generated by `cereb report --replication ROOT` from the rate-model and MLP attack runs under ROOT",
        "and the rows of `docs/replication_runs.csv` that no new run replaces; do not edit by hand.",
        "",
        "Protocol: MNIST, trained on 8,000 of the 10,000 test images held here (the paper: 60,000",
        "training images) and attacked on 1,000 of the other 2,000; readout trained with RMSprop at",
        "0.5 / width, 10 epochs, early stop at 99.5%; batch size 1 is the paper's protocol, 16 the",
        "mini-batch comparison. Attacks at eps 0.1 (L-inf): FGSM and PGD (40 steps of 0.01) with the",
        "MSE loss (the paper's), the strong evaluation (margin and cross-entropy PGD, 100 steps, 5",
        "restarts) and the per-image worst case over all attacks. Robust accuracy in %, mean ± SD over",
        "seeds (n seeds).",
        "",
        "## Width (`studies/paper_width.yaml`)",
        "",
        f"The paper's MSE-PGD at eps 0.1: {PAPER_PGD_TEXT}.",
        "",
        "| width | LTD | batch " + _HEAD[0].format(paper="paper FGSM-MSE (no LTD)"),
        "| ---: | --- | ---: " + _HEAD[1],
    ]
    for (granule, width, k, ltd, bs), rs in sorted(_grouped(dense).items()):
        paper = PAPER_FGSM_MSE_EPS01.get(width) if ltd == "none" else None
        lines.append(f"| {width:,} | {ltd} | {bs} " + _cells(rs, "-" if paper is None else f"{paper}"))
    lines += ["", "![Robust accuracy against width](replication_width.png)", "",
              "Robust accuracy at eps 0.1 against width (dense granule layer; mean and SD over seeds; the",
              "paper's FGSM-MSE points without LTD as crosses). Left: the paper's protocol (batch size 1);",
              "right: the mini-batch comparison (batch size 16).", ""]
    lines += ["## Sparse connectivity (`studies/paper_sparseness.yaml`)", ""]
    if sparse:
        lines += ["Random granule connectivity of fan-in K with the running-mean LTD, at width 4.8e6 / (K + 20)",
                  "(the paper's sweep: granule-layer synapses plus readout weights held roughly constant). The",
                  "paper's columns are its code's final notebook outputs (`notebook/plot.ipynb`, mean of 2 seeds,",
                  "60,000 training images): best test accuracy and MSE-PGD at eps 0.1.", "",
                  "| K | width | batch | seeds | clean | paper clean | FGSM-MSE | MSE-PGD | paper MSE-PGD | strong "
                  "| worst | checks passed |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for (granule, width, k, ltd, bs), rs in sorted(_grouped(sparse).items(), key=lambda kv: (kv[0][4], kv[0][2])):
            pc, pp = PAPER_SPARSE.get(k, ("-", "-")) if bs == 1 else ("-", "-")
            lines.append(f"| {k} | {width:,} | {bs} | {len(rs)} | {_pct([r['clean_accuracy'] for r in rs])} | {pc} "
                         f"| {_pct([r['fgsm_mse_eps0.1'] for r in rs])} | {_pct([r['pgd_mse_eps0.1'] for r in rs])} "
                         f"| {pp} | {_pct([r['strong_eps0.1'] for r in rs])} | {_pct([r['worst_eps0.1'] for r in rs])} "
                         f"| {sum(r['checks_passed'] for r in rs)} / {len(rs)} |")
        if any(r["batch_size"] == 1 for r in sparse):  # the figure draws the paper's protocol only
            lines += ["", "![Robust accuracy against K](replication_sparseness.png)", "",
                      "Accuracy at eps 0.1 against the fan-in K (batch size 1; mean and SD over seeds; the",
                      "paper's MSE-PGD points as crosses)."]
        lines.append("")
    else:
        lines += ["Not run yet.", ""]
    lines += ["## The four models and the MLP (`studies/paper_four_models.yaml`)", ""]
    if named:
        lines += ["Base: dense granule layer of 5,970 cells; +LTD: the running-mean subtraction; +RC: random",
                  "connectivity K = 4 at 200,000 cells; Cerebellum: both; MLP: one hidden layer of 50 units",
                  "trained end to end (learning rate 1e-3). The paper's columns: best test accuracy and MSE-PGD",
                  "at eps 0.3 from its code's final notebook (mean of 2 seeds). Its baseline there",
                  "(`plain_none_50`, labelled CNN, 99.25% test accuracy) is not this MLP and is left out.", "",
                  "| model | batch | seeds | clean | paper clean | FGSM-MSE | MSE-PGD | strong | worst "
                  "| MSE-PGD eps 0.3 | paper MSE-PGD eps 0.3 | strong eps 0.3 | checks passed |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        order = {name: i for i, (name, _) in enumerate(FOUR_MODELS)}
        by: dict[tuple, list[dict]] = {}
        for r in named:
            by.setdefault((r["batch_size"], order[model_name(r)]), []).append(r)
        for (bs, i), rs in sorted(by.items()):
            name = FOUR_MODELS[i][0]
            pc, pp = PAPER_FOUR.get(name, ("-", "-")) if bs == 1 else ("-", "-")
            lines.append(f"| {name} | {bs} | {len(rs)} | {_pct([r['clean_accuracy'] for r in rs])} | {pc} "
                         f"| {_pct([r['fgsm_mse_eps0.1'] for r in rs])} | {_pct([r['pgd_mse_eps0.1'] for r in rs])} "
                         f"| {_pct([r['strong_eps0.1'] for r in rs])} | {_pct([r['worst_eps0.1'] for r in rs])} "
                         f"| {_pct([r.get('pgd_mse_eps0.3', float('nan')) for r in rs])} | {pp} "
                         f"| {_pct([r.get('strong_eps0.3', float('nan')) for r in rs])} "
                         f"| {sum(r['checks_passed'] for r in rs)} / {len(rs)} |")
        failed = [r for r in named if not r["checks_passed"] and r["granule"] == "mlp"]
        if failed:
            lines += ["", f"The MLP's own checks failed in {len(failed)} of {sum(r['granule'] == 'mlp' for r in named)} "
                      "runs (see each attack run's `metrics.json`): its robust accuracy under the strong evaluation "
                      "is an upper bound, not a measured robustness."]
            flat = [r for r in failed if r.get("budget_robust_acc", float("nan")) > 0.05
                    and r.get("budget_left_zero_grad_frac", float("nan")) == r.get("budget_left_zero_grad_frac")]
            if flat:
                lines[-1] += (f" Where it failed on the budget check ({len(flat)} of these runs recorded it), the strong evaluation "
                              f"left {_pct([r['budget_robust_acc'] for r in flat])}% of the images robust at eps "
                              f"{_eps_list(flat)} (the check allows 5%), and at its last iterates "
                              f"{_pct([r['budget_left_zero_grad_frac'] for r in flat])}% of those images have an "
                              "all-zero input gradient: the gradient attacks have nothing to follow there (a flat "
                              "loss, i.e. gradient masking), so what they leave says nothing of robustness.")
        lines.append("")
    else:
        lines += ["Not run yet.", ""]
    lines += _explanation(rows, traces or [])
    lines += _claims(rows)
    lines += _cost(rows)
    lines += ["", "A failed check is the suite's own: most often MSE-PGD weaker than FGSM with the same loss, the",
              "signature of a loss whose gradient does not lead to the decision boundary (see each attack run's",
              "`pgd_traces.csv`).", ""]
    return "\n".join(lines)


def _eps_list(rs: list[dict]) -> str:
    """The distinct budget-check eps of ``rs``, e.g. ``0.5`` or ``0.5 / 0.55``."""
    return " / ".join(f"{e:g}" for e in sorted({r["budget_eps"] for r in rs if r["budget_eps"] == r["budget_eps"]}))


def _mean(rs: list[dict], k: str) -> str:
    v = np.asarray([r[k] for r in rs if isinstance(r.get(k), (int, float)) and r[k] == r[k]], dtype=float)
    return f"{v.mean():.3g}" if len(v) else "-"


def _recorded_mean(rs: list[dict], k: str) -> str:
    """:func:`_mean`, saying how many of the runs recorded ``k`` when not all did."""
    n = sum(isinstance(r.get(k), (int, float)) and r[k] == r[k] for r in rs)
    return _mean(rs, k) + (f" ({n} of {len(rs)})" if 0 < n < len(rs) else "")


def _explanation(rows: list[dict], traces: list[dict]) -> list[str]:
    """The evidence section: what the trained readouts look like on the clean images, and what the
    paper's PGD does step by step under its MSE loss and under the margin loss."""
    out = ["", "## Evidence: the readouts and the PGD steps", "",
           "What each trained readout does on the clean attack images (mean over the seeds that recorded",
           "it): the norm of the readout weights, the mean score of the true class and of the other",
           "classes, the mean margin (true minus the best other) and the paper's loss (half the squared",
           "distance to one-hot); beside them the robust accuracy (%) at eps 0.1 under the paper's PGD with",
           "its MSE loss, with cross-entropy and with the margin loss.", "",
           "| width | LTD | batch | seeds | readout norm | true score | other score | margin | clean MSE "
           "| PGD-MSE | PGD-CE | PGD-margin |",
           "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["granule"] == "fc" and r.get("readout_weight_norm") == r.get("readout_weight_norm") \
                and isinstance(r.get("readout_weight_norm"), float):
            groups.setdefault((r["width"], r["ltd"], r["batch_size"]), []).append(r)
    for (width, ltd, bs), rs in sorted(groups.items()):
        out.append(f"| {width:,} | {ltd} | {bs} | {len(rs)} | {_mean(rs, 'readout_weight_norm')} "
                   f"| {_mean(rs, 'clean_true_score_mean')} | {_mean(rs, 'clean_other_score_mean')} "
                   f"| {_mean(rs, 'clean_margin_mean')} | {_mean(rs, 'clean_mse_mean')} "
                   f"| {_pct([r['pgd_mse_eps0.1'] for r in rs])} | {_pct([r.get('pgd_ce_eps0.1', float('nan')) for r in rs])} "
                   f"| {_pct([r.get('pgd_margin_eps0.1', float('nan')) for r in rs])} |")
    tg = _trace_groups(traces)
    if tg:
        width = next(iter(tg.values()))[0]["width"]
        out += ["", "![PGD traces](replication_pgd.png)", "",
                f"The paper's PGD (40 steps of 0.01, random start) on the images of seed 0 at width {width:,}",
                "that survive MSE-PGD but not the strong evaluation, at the eps of the largest gap between the",
                "two (`pgd_traces.csv` of each attack run; `docs/replication_traces.csv`):", "",
                "| LTD | batch | loss | eps | images | loss, step 0 -> last | margin | true score | mean other score "
                "| still correct at the last step |",
                "| --- | ---: | --- | ---: | ---: | --- | --- | --- | --- | ---: |"]
        for (ltd, bs, loss), ts in tg.items():
            a, b = ts[0], ts[-1]
            out.append(f"| {ltd} | {bs} | {loss} | {a['eps']:g} | {a['n']} | {a['loss_mean']:.3g} -> {b['loss_mean']:.3g} "
                       f"| {a['margin_mean']:.3g} -> {b['margin_mean']:.3g} "
                       f"| {a['true_score_mean']:.3g} -> {b['true_score_mean']:.3g} "
                       f"| {a['other_score_mean']:.3g} -> {b['other_score_mean']:.3g} | {100 * b['frac_correct']:.0f}% |")
        mse = {(ltd, bs): ts for (ltd, bs, loss), ts in tg.items() if loss == "mse"}
        out += ["", "The MSE to one-hot sums the squared scores of the nine wrong classes; the root mean square of",
                "those scores follows from the loss and the true score (sqrt((loss - (1 - true)^2) / 9), from the",
                "means over images, so approximate): "
                + "; ".join(f"LTD {ltd}, batch {bs}: {_rms_other(ts[0]):.2f} -> {_rms_other(ts[-1]):.2f}"
                            for (ltd, bs), ts in mse.items()) + "."]
    out += ["", "**What the evidence says.** The paper's PGD ascends the MSE to the one-hot label. That loss",
            "grows as fast by pushing wrong-class scores *down* as up, and its gradient, 2 (y - t) dy/dx,",
            "reinforces whatever output direction has already grown: after the first steps the attack follows",
            "the direction in which the outputs change fastest, whether or not it changes the arg-max. The",
            "traced images are those MSE-PGD left correct, so their high final accuracy under the MSE is there",
            "by selection; what the traces add is that on them the MSE still rose several-fold while the",
            "margin stayed positive and the mean wrong-class score stayed near zero (the wrong-class scores",
            "spread both ways), and that PGD on the margin loss, with the same steps and budget, fools nearly",
            "all of them: the budget sufficed, the loss led elsewhere. The readout trained with the running-mean \"LTD\" at batch size 1 is the",
            "largest (see the readout norms), so its outputs have the most room to spread without a class",
            "change, and MSE-PGD stalls most there: the high MSE-PGD robust accuracy of LTD at batch size 1 is",
            "the loss, not the model. At batch size 16 (a readout of about the size of the others) LTD's",
            "MSE-PGD gap is no larger than that of the model without it" + _strong_range(rows) + "."]
    return out


def _strong_range(rows: list[dict]) -> str:
    vals = [r[k] for r in rows if r["granule"] == "fc" for k in ("strong_eps0.1", "pgd_ce_eps0.1", "pgd_margin_eps0.1")
            if isinstance(r.get(k), float) and r[k] == r[k]]
    if not vals:
        return ""
    return (f", and the strong evaluation, PGD-CE and PGD-margin give every model run "
            f"{100 * min(vals):.1f}-{100 * max(vals):.1f}% at eps 0.1 (dense granule layer)")


def _rms_other(t: dict, n_classes: int = 10) -> float:
    return float(np.sqrt(max(0.0, (t["loss_mean"] - (1.0 - t["true_score_mean"]) ** 2) / (n_classes - 1))))


def _claims(rows: list[dict]) -> list[str]:
    """The paragraph on the paper's claims, with the numbers it rests on read from the table."""
    def span(metric, **sel):
        """``metric`` (mean over seeds) at the smallest and the largest width run with ``sel``."""
        rs = [r for r in rows if all(r[k] == x for k, x in sel.items()) and r[metric] == r[metric]]
        if not rs:
            return "n/a"
        ws = sorted({r["width"] for r in rs})
        at = {w: 100 * np.mean([r[metric] for r in rs if r["width"] == w]) for w in (ws[0], ws[-1])}
        return f"{at[ws[0]]:.1f}% at width {ws[0]:,} to {at[ws[-1]]:.1f}% at {ws[-1]:,}"

    widths = sorted({r["width"] for r in rows if r["granule"] == "fc" and r["batch_size"] == 1})
    strong = [r["strong_eps0.1"] for r in rows if r["granule"] == "fc" and r["strong_eps0.1"] == r["strong_eps0.1"]]
    if not widths or not strong:
        return ["", "## Which of the paper's claims hold", "",
                "(1)-(3) The dense width sweep is not in this table yet."] + _claims_sparse_and_models(rows)
    none_rows = [r for r in rows if (r["granule"], r["batch_size"], r["ltd"]) == ("fc", 1, "none")]
    none_b1 = sorted({r["width"] for r in none_rows})
    paper = (f" (the paper: {PAPER_FGSM_MSE_EPS01[none_b1[0]]}% to {PAPER_FGSM_MSE_EPS01[none_b1[-1]]}%)"
             if none_b1 and none_b1[0] in PAPER_FGSM_MSE_EPS01 and none_b1[-1] in PAPER_FGSM_MSE_EPS01 else "")
    verdict, trend = _width_trend(none_rows, "fgsm_mse_eps0.1")
    return ["", "## Which of the paper's claims hold", "",
            f"At the widths run so far ({', '.join(f'{w:,}' for w in widths)}; dense granule layer, batch size 1",
            "unless said):",
            f"(1) *FGSM robustness grows with width* {verdict}: FGSM-MSE at eps 0.1 without LTD goes from "
            f"{span('fgsm_mse_eps0.1', granule='fc', batch_size=1, ltd='none')}{paper}{trend}.",
            f"(2) *LTD looks robust under the paper's MSE-PGD*: at batch size 1 "
            f"{_ltd_gain(rows, 1, '; the paper: 66-86% with, 9-17% without')}; at batch size 16 {_ltd_gain(rows, 16)}.",
            f"(3) Neither is robustness: under the strong evaluation every model run is at "
            f"{100 * min(strong):.1f}-{100 * max(strong):.1f}% at eps 0.1, with and without LTD, at every width; the",
            "gain the paper's attacks show is the MSE loss failing on these readouts (see the evidence above).",
            *_overall(rows)] + _claims_sparse_and_models(rows)


CHANCE = 0.1  # 10 classes: a readout below this under attack is no better than a guess


def _overall(rows: list[dict]) -> list[str]:
    """The paper's overall conclusion (width and LTD bring no significant robustness), judged from the
    dense runs: it holds when every one is below chance under the strong evaluation at eps 0.1, and
    holds more strongly than the paper's attacks show when the strong evaluation is below both of
    them (FGSM-MSE and MSE-PGD) in every run that has all three."""
    fc = [r for r in rows if r["granule"] == "fc" and r["strong_eps0.1"] == r["strong_eps0.1"]]
    above = [r for r in fc if r["strong_eps0.1"] >= CHANCE]
    both = [r for r in fc if r["fgsm_mse_eps0.1"] == r["fgsm_mse_eps0.1"] and r["pgd_mse_eps0.1"] == r["pgd_mse_eps0.1"]]
    lower = sum(r["strong_eps0.1"] < min(r["fgsm_mse_eps0.1"], r["pgd_mse_eps0.1"]) for r in both)
    if above:
        top = max(above, key=lambda r: r["strong_eps0.1"])
        return ["So the paper's overall conclusion, that width and LTD bring no significant robustness, does not hold",
                f"for {len(above)} of the {len(fc)} dense runs: under the strong evaluation they stay at or above chance "
                f"({100 * CHANCE:.0f}%) at eps 0.1, up to {100 * top['strong_eps0.1']:.1f}% (width {top['width']:,}, "
                f"{'with' if top['ltd'] != 'none' else 'without'} LTD, batch size {top['batch_size']})."]
    more = ("and holds more strongly than its own attacks show" if both and lower == len(both) else
            "though not more strongly than its own attacks show everywhere")
    return ["So the paper's overall conclusion, that width and LTD bring no significant robustness, holds",
            f"(all {len(fc)} dense runs are below chance, {100 * CHANCE:.0f}%, under the strong evaluation at eps 0.1),",
            f"{more} (the strong evaluation is below both FGSM-MSE and MSE-PGD in {lower} of the {len(both)} runs)."]


def _ltd_gain(rows: list[dict], batch_size: int, paper: str = "") -> str:
    """Whether the running-mean LTD raises MSE-PGD robust accuracy at eps 0.1 over the same dense
    width without it, width by width (means over seeds), at one batch size: "reproduces" when it
    is higher at every width run with both, "does not appear" when it is higher at none."""
    metric = "pgd_mse_eps0.1"
    by = {}
    for r in rows:
        if r["granule"] == "fc" and r["batch_size"] == batch_size and r[metric] == r[metric]:
            by.setdefault((r["width"], r["ltd"]), []).append(100 * float(r[metric]))
    widths = sorted(w for w, ltd in by if ltd == "ma" and (w, "none") in by)
    if not widths:
        return "it is not in the table yet"
    on = [float(np.mean(by[w, "ma"])) for w in widths]
    off = [float(np.mean(by[w, "none"])) for w in widths]
    higher = sum(a > b for a, b in zip(on, off))
    verdict = ("it reproduces" if higher == len(widths) else "it does not appear" if higher == 0 else
               "it is mixed")
    return (f"{verdict} (LTD higher at {higher} of the {len(widths)} widths run with and without it, "
            f"{widths[0]:,} to {widths[-1]:,}: with LTD {min(on):.1f}-{max(on):.1f}%, without "
            f"{min(off):.1f}-{max(off):.1f}%{paper})")


def _width_trend(rs: list[dict], metric: str) -> tuple[str, str]:
    """``(verdict, detail)`` for "``metric`` grows with width", from a least-squares line through the
    runs (robust accuracy in points against log2(width)) and its 95% confidence interval: the claim
    reproduces when the interval lies above zero, is contradicted when it lies below, and is not
    resolved otherwise (or with fewer than three widths or four runs)."""
    from scipy import stats

    rs = [r for r in rs if r[metric] == r[metric]]
    widths = sorted({r["width"] for r in rs})
    if len(widths) < 3 or len(rs) < 4:
        return (f"is not resolved by the runs so far ({len(widths)} widths and {len(rs)} runs; the fit needs at least "
                "three widths and four runs)"), ""
    x = np.log2([float(r["width"]) for r in rs])
    y = 100 * np.array([float(r[metric]) for r in rs])
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, len(rs) - 2) * fit.stderr
    lo, hi = fit.slope - half, fit.slope + half
    verdict = ("reproduces" if lo > 0 else "does not reproduce: it falls with width" if hi < 0 else
               "is not resolved by the runs so far (the slope's interval includes zero)")
    means = {w: float(np.mean([v for r, v in zip(rs, y) if r["width"] == w])) for w in widths}
    top = max(widths, key=lambda w: means[w])
    peak = f"; the highest mean, {means[top]:.1f}%, is at width {top:,}" if top != widths[-1] else ""
    return verdict, (f"; {fit.slope:+.1f} points per doubling of width (95% CI {lo:+.1f} to {hi:+.1f}; least squares "
                     f"over the {len(rs)} runs against log2(width)){peak}")


def _claims_sparse_and_models(rows: list[dict]) -> list[str]:
    """Claims (4) and (5): the sparseness sweep and the four models (batch size 1), from the table;
    a study not run yet is said to be missing."""
    def at(rs, metric):
        v = [r[metric] for r in rs if r[metric] == r[metric]]
        return f"{100 * np.mean(v):.1f}%" if v else "-"

    out = []
    sparse = [r for r in rows if _is_sparse(r) and r["batch_size"] == 1]
    ks = sorted({r["k"] for r in sparse})
    if len(ks) >= 2:
        by_k = {k: [r for r in sparse if r["k"] == k] for k in ks}
        desc = "; ".join(f"{label} {at(by_k[ks[-1]], m)} at K = {ks[-1]} and {at(by_k[ks[0]], m)} at K = {ks[0]}"
                         for m, label in (("fgsm_mse_eps0.1", "FGSM-MSE"), ("pgd_mse_eps0.1", "MSE-PGD"),
                                          ("strong_eps0.1", "strong")))
        paper = (f" (the paper's MSE-PGD: {PAPER_SPARSE[ks[-1]][1]}% and {PAPER_SPARSE[ks[0]][1]}%)"
                 if ks[0] in PAPER_SPARSE and ks[-1] in PAPER_SPARSE else "")
        out.append(f"(4) *Sparse connectivity* (K run so far: {', '.join(map(str, ks))}; with LTD, batch size 1): "
                   f"{desc}{paper}.")
    else:
        out.append("(4) The sparse-connectivity sweep is not in this table yet.")
    named = {}
    for r in rows:
        if model_name(r) and r["batch_size"] == 1:
            named.setdefault(model_name(r), []).append(r)
    if named:
        out.append("(5) *The four models and the MLP* (batch size 1; FGSM-MSE / MSE-PGD / strong at eps 0.1): "
                   + "; ".join(f"{name} {at(named[name], 'fgsm_mse_eps0.1')} / {at(named[name], 'pgd_mse_eps0.1')} / "
                               f"{at(named[name], 'strong_eps0.1')}" for name, _ in FOUR_MODELS if name in named)
                   + ("." if len(named) == len(FOUR_MODELS) else
                      f" (not run yet: {', '.join(n for n, _ in FOUR_MODELS if n not in named)})."))
        out += _what_the_cerebellum_gain_is(rows, named, at)
    else:
        out.append("(5) The four-model comparison is not in this table yet.")
    return out


def _what_the_cerebellum_gain_is(rows: list[dict], named: dict[str, list[dict]], at) -> list[str]:
    """Where the Cerebellum's MSE-PGD robustness comes from, read from the rows: random connectivity
    without LTD (Base+RC) against Base, and the Cerebellum at batch size 16 against batch size 1;
    and what the strong evaluation leaves of the four models. Empty until those rows exist."""
    if not all(n in named for n in ("Base", "Base+RC", "Cerebellum")):
        return []
    cereb16 = [r for r in rows if model_name(r) == "Cerebellum" and r["batch_size"] == 16]
    strong = [r["strong_eps0.1"] for n, _ in FOUR_MODELS[:4] for r in named.get(n, []) if r["strong_eps0.1"] == r["strong_eps0.1"]]

    def mean(rs):
        v = [r["pgd_mse_eps0.1"] for r in rs if r["pgd_mse_eps0.1"] == r["pgd_mse_eps0.1"]]
        return 100 * float(np.mean(v)) if v else float("nan")

    gap = mean(named["Base+RC"]) - mean(named["Base"])
    if gap != gap:
        return []
    compare = ("is about as weak as" if abs(gap) < 10 else
               f"is {abs(gap):.1f} points {'above' if gap > 0 else 'below'}")
    text = (f"Under the paper's MSE-PGD at eps 0.1, random connectivity without LTD (Base+RC, "
            f"{at(named['Base+RC'], 'pgd_mse_eps0.1')}) {compare} Base ({at(named['Base'], 'pgd_mse_eps0.1')}); "
            f"the Cerebellum (random connectivity with the running-mean LTD) is at {at(named['Cerebellum'], 'pgd_mse_eps0.1')}")
    if cereb16:
        text += (f" at batch size 1 and at {at(cereb16, 'pgd_mse_eps0.1')} at batch size 16 (compare claim (2): "
                 "LTD's MSE-PGD gain at batch size 1)")
    if strong:
        text += (f". Under the strong evaluation the four models are at {100 * min(strong):.1f}-{100 * max(strong):.1f}%"
                 " at eps 0.1 (batch size 1)")
    return [text + "."]


def _cost(rows: list[dict]) -> list[str]:
    """Wall time per configuration, and what the strong evaluation achieved of the machine's
    matrix-multiply throughput (rows that recorded it)."""
    timed = [r for r in rows if isinstance(r.get("attack_wall_s"), float) and r["attack_wall_s"] == r["attack_wall_s"]]
    if not timed:
        return []
    total = sum(r["attack_wall_s"] + (r["train_wall_s"] if r.get("train_wall_s") == r.get("train_wall_s") else 0.0)
                for r in timed)
    out = ["", "## Cost", "",
           f"The {len(timed)} runs that recorded their wall times took {total / 3600:.2f} h in all (training plus",
           "attacks; each run on the machine its own metadata names). The strong evaluation runs after the",
           "paper's attacks and skips the images they already fooled at each eps (`attack.strong_after_cheap`);",
           "its achieved GFLOP/s counts the dense granule layer's forward pass and input gradient (4 x 784 x",
           "width per image-step; a random layer with 16 K >= 784 is evaluated as a dense matrix too, so it",
           "counts the same), against a matrix multiply of the same shape timed in the same run. The",
           "load column is the 1-minute load average per core when the attack ended: above ~1 other work",
           "shared the cores and the times overstate the cost; threads: the torch threads the attacks ran on",
           "(\"-\": not recorded; \"2 (1 of 2)\": recorded by 1 of the 2 runs). A small-K random row",
           "or an MLP row has no throughput columns: a small-K layer is evaluated as a blocked gather",
           "(`models.rate._BlockedGatherHead`), bound by memory traffic rather than by multiplies.", "",
           "| width | LTD | batch | runs | training (s) | attacks (s) | strong (s) | strong image-steps "
           "| strong GFLOP/s | matmul GFLOP/s | fraction | load | threads |",
           "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    from models.rate import gathers

    groups: dict[tuple, list[dict]] = {}
    for r in timed:
        groups.setdefault((r["granule"], r["width"], r["ltd"], r["batch_size"]), []).append(r)
    for (granule, width, ltd, bs), rs in sorted(groups.items()):
        k = rs[0]["k"]
        # the matrix-multiply comparison is the dense layer's (see above)
        dense = granule == "fc" or (granule in ("random", "local") and not gathers(k, MNIST_INPUTS))
        label = f"{width:,}" if granule == "fc" else f"{width:,} {granule}" + (f" K {k}" if k else "")
        rate = [{"gflops": g, "fraction": g / r["matmul_gflops"]} for r in rs for g in [_dense_gflops(r)]
                if dense and g == g and r.get("matmul_gflops") == r.get("matmul_gflops")]
        out.append(f"| {label} | {ltd} | {bs} | {len(rs)} "
                   f"| {_mean(rs, 'train_wall_s')} | {_mean(rs, 'attack_wall_s')} | {_mean(rs, 'wall_s_strong')} "
                   f"| {_mean(rs, 'strong_image_steps')} | {_mean(rate, 'gflops') if dense else '-'} "
                   f"| {_mean(rs, 'matmul_gflops') if dense else '-'} "
                   f"| {_mean(rate, 'fraction') if dense else '-'} | {_mean(rs, 'load_per_core')} "
                   f"| {_recorded_mean(rs, 'torch_threads')} |")
    return out


MNIST_INPUTS = 784


def _dense_gflops(r: dict) -> float:
    """The strong evaluation's GFLOP/s as a dense granule layer computes it (4 x 784 x width per
    image-step). A run records it over the layer's fan-in (:func:`attacks.experiment.strong_cost`:
    4 x K x width for a random layer), so a random layer evaluated as a dense matrix is scaled by
    784 / K; NaN where the run did not record it."""
    g = r.get("strong_gflops")
    if not isinstance(g, (int, float)) or g != g:
        return float("nan")
    return float(g) * (MNIST_INPUTS / r["k"] if r["granule"] != "fc" and r["k"] else 1.0)


ATTACKS = (("fgsm_mse_eps0.1", "FGSM-MSE"), ("pgd_mse_eps0.1", "MSE-PGD"), ("strong_eps0.1", "strong"))


def plot_width(rows: list[dict], path: str | Path) -> Path | None:
    """``replication_width.png``: robust accuracy (%) against width for the dense granule layer, one
    panel per batch size, one line per LTD setting and attack, the paper's FGSM-MSE points beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = [r for r in rows if r["granule"] == "fc"]
    sizes = sorted({r["batch_size"] for r in dense})
    if not sizes:
        return None
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), sharey=True, squeeze=False)
    styles = {"none": "-", "ma": "--"}
    colours = dict(zip([a for a, _ in ATTACKS], ("tab:blue", "tab:orange", "tab:red")))
    for ax, bs in zip(axes[0], sizes):
        for ltd in sorted({r["ltd"] for r in dense if r["batch_size"] == bs}):
            sel = [r for r in dense if r["batch_size"] == bs and r["ltd"] == ltd]
            widths = sorted({r["width"] for r in sel})
            for metric, label in ATTACKS:
                vals = [[r[metric] * 100 for r in sel if r["width"] == w and r[metric] == r[metric]] for w in widths]
                mean = [np.mean(v) if v else np.nan for v in vals]
                sd = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals]
                ax.errorbar(widths, mean, yerr=sd, ls=styles.get(ltd, ":"), marker="o", ms=3, capsize=2,
                            color=colours[metric], label=f"{label}, LTD {ltd}")
        pw = sorted(PAPER_FGSM_MSE_EPS01)
        ax.plot(pw, [PAPER_FGSM_MSE_EPS01[w] for w in pw], "kx", ms=7, label="paper FGSM-MSE, LTD none")
        ax.set_xscale("log")
        ax.set_xlabel("granule cells (width)")
        ax.set_title(f"batch size {bs}" + (" (paper's protocol)" if bs == 1 else ""))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("robust accuracy at eps 0.1 (%)")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def plot_sparseness(rows: list[dict], path: str | Path) -> Path | None:
    """``replication_sparseness.png``: clean and robust accuracy (%) at eps 0.1 against the fan-in K
    of the sparseness sweep (batch size 1, LTD), mean and SD over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = [r for r in rows if _is_sparse(r) and r["batch_size"] == 1]
    ks = sorted({r["k"] for r in sel})
    if not ks:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for metric, label, colour in (("clean_accuracy", "clean", "k"), *((m, lab, c) for (m, lab), c in
                                  zip(ATTACKS, ("tab:blue", "tab:orange", "tab:red")))):
        vals = [[r[metric] * 100 for r in sel if r["k"] == k and r[metric] == r[metric]] for k in ks]
        mean = [np.mean(v) if v else np.nan for v in vals]
        sd = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals]
        ax.errorbar(ks, mean, yerr=sd, marker="o", ms=3, capsize=2, color=colour, label=label)
    pk = sorted(PAPER_SPARSE)
    ax.plot(pk, [PAPER_SPARSE[k][1] for k in pk], "x", color="tab:orange", ms=7, label="paper MSE-PGD")
    ax.set_xscale("log")
    ax.set_xlabel("mossy-fibre inputs per granule cell (K); width 4.8e6 / (K + 20)")
    ax.set_ylabel("clean, and robust accuracy at eps 0.1 (%)")
    ax.set_title("sparseness sweep, LTD, batch size 1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path):
    from analysis.figures import _save as save_png  # the project's atomic PNG writer

    return save_png(fig, Path(path))


def _trace_groups(traces: list[dict]) -> dict[tuple, list[dict]]:
    """Dense-layer traces of the smallest width traced, by (ltd, batch size, loss), steps sorted."""
    dense = [t for t in traces if t["granule"] == "fc"]
    if not dense:
        return {}
    width = min(t["width"] for t in dense)
    groups: dict[tuple, list[dict]] = {}
    for t in dense:
        if t["width"] == width and t["seed"] == min(u["seed"] for u in dense):
            groups.setdefault((t["ltd"], t["batch_size"], t["loss"]), []).append(t)
    return {k: sorted(v, key=lambda t: t["step"]) for k, v in sorted(groups.items())}


def plot_traces(traces: list[dict], path: str | Path) -> Path | None:
    """``replication_pgd.png``: the paper's PGD under the MSE and the margin loss, step by step, on
    the images that survive MSE-PGD but not the strong evaluation: loss, margin and accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _trace_groups(traces)
    if not groups:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    colours = {}
    for (ltd, bs, loss), ts in groups.items():
        c = colours.setdefault((ltd, bs), f"C{len(colours)}")
        label = f"LTD {ltd}, batch {bs}, {loss} loss (eps {ts[0]['eps']:g})"
        steps = [t["step"] for t in ts]
        ls = "-" if loss == "mse" else "--"
        if loss == "mse":
            axes[0].plot(steps, [t["loss_mean"] for t in ts], ls, color=c, label=label)
        axes[1].plot(steps, [t["margin_mean"] for t in ts], ls, color=c, label=label)
        axes[2].plot(steps, [t["true_score_mean"] for t in ts], ls, color=c, label=label)
        axes[2].plot(steps, [t["other_score_mean"] for t in ts], ls, color=c, alpha=0.45)
        axes[3].plot(steps, [100 * t["frac_correct"] for t in ts], ls, color=c, label=label)
    width = next(iter(groups.values()))[0]["width"]
    for ax, title in zip(axes, ("MSE to one-hot (the paper's loss)", "margin (true - best other)",
                                "score: true class (dark), mean of the others (light)", "still correct (%)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("PGD step")
        ax.grid(alpha=0.3)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[3].legend(fontsize=7)
    fig.suptitle(f"PGD traces, dense granule layer, width {width:,} (solid: MSE loss; dashed: margin loss)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def write(rows: list[dict], docs: str | Path, traces: list[dict] | None = None) -> tuple[Path, Path]:
    """Write ``docs/replication_runs.csv``, ``docs/replication_traces.csv``, the figures
    (``replication_width.png``, ``replication_sparseness.png``, ``replication_pgd.png``) and ``docs/replication.md``; returns the
    table's and the document's paths."""
    from core.runs import write_csv

    docs = Path(docs)
    docs.mkdir(parents=True, exist_ok=True)
    table = docs / "replication_runs.csv"
    write_csv(table, rows, list(COLUMNS))
    traces = list(traces or [])
    if traces:
        write_csv(docs / "replication_traces.csv", traces, list(TRACE_COLUMNS))
        plot_traces(traces, docs / "replication_pgd.png")
    plot_width(rows, docs / "replication_width.png")
    plot_sparseness(rows, docs / "replication_sparseness.png")
    md = docs / "replication.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(render(rows, traces))
    tmp.replace(md)
    return table, md
