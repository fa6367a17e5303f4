"""Analysis and report, on a tiny synthetic study whose numbers are planted.

The study (written as plain run folders in a temporary directory):

* rate: widths 1000/2000/4000 x ltd none/ma x seeds 0-2, K = 4; worst-case robust accuracy at
  eps 0.1 = 0.2 + SLOPE log10(width / 1000) + NOISE[seed] (+ LTD_DELTA + LTD_E[seed] with LTD on);
  seed effects are the same at every width, so the least-squares slope is exactly SLOPE and every
  LTD on - off difference is LTD_DELTA + LTD_E[seed].
* rate K sweep: width 2000, ltd none, K = 2/8/16 x seeds 0-1, values falling with K (with the
  K = 4 runs above: Spearman rho = -1).
* spiking: widths 1000/2000 x ltd cf/none, seed 0 (too few for any test); the newest attack run
  holds every file of the spiking attack format (decision, transfer, fidelity, spikes, adversarials),
  with a transfer row stronger than hybrid.
* a failed training run, a failed attack run and a running attack run (all to be skipped), and one
  attack run whose self-checks failed with a known message.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from core.paths import PROJECT_ROOT
from core.runs import read_csv, save_npz, write_csv, write_json

from analysis import spikes as spk
from analysis.export import stimulus_rows
from analysis.figures import image_shape
from analysis.report import check_findings, write_report
from analysis.runs import resolve_source_run
from analysis.stats import collapse_seeds, k_effect, ltd_effect, mean_ci, width_effect
from analysis.tables import attack_table, config_label, load_study, metric_records, model_fields, run_metric

PNG = b"\x89PNG\r\n\x1a\n"
SLOPE = 0.1
NOISE = [-0.02, 0.0, 0.02]
LTD_DELTA = 0.05
LTD_E = [-0.01, 0.0, 0.013]
K_VALUES = {2: [0.50, 0.51], 8: [0.15, 0.16], 16: [0.05, 0.06]}
EPS = [0.0, 0.1, 0.2]
FAILED_CHECK = "strong attack weaker than PGD at eps 0.1 (planted)"
D = 64
MF_MIN, MF_MAX, WINDOW = 5.0, 300.0, 100.0
N_POP = {"mf": D, "grc": 300, "goc": 10, "pc": 20, "cf": 20}


def rate_value(width: int, ltd: str, seed: int) -> float:
    v = 0.2 + SLOPE * math.log10(width / 1000) + NOISE[seed]
    return v + (LTD_DELTA + LTD_E[seed] if ltd == "ma" else 0.0)


# ----------------------------------------------------------------------------- synthetic runs
class Writer:
    """Writes run folders with increasing timestamps (so 'latest' is the last written)."""

    def __init__(self, root: Path):
        self.root = root
        self.n = 0

    def run(self, experiment: str, config: dict, seed: int, status: str = "completed", metrics: dict | None = None,
            csvs: dict | None = None, npzs: dict | None = None) -> Path:
        self.n += 1
        path = self.root / experiment / f"20260101-{self.n:06d}_{self.n:010x}_s{seed}"
        path.mkdir(parents=True)
        write_json(path / "config.json", config)
        write_json(path / "meta.json", {"status": status, "experiment": experiment, "seed": seed,
                                        "start": f"2026-01-01T00:{self.n:04d}"})
        write_json(path / "metrics.json", metrics or {})
        for name, (rows, cols) in (csvs or {}).items():
            write_csv(path / name, rows, cols)
        for name, arrays in (npzs or {}).items():
            save_npz(path / name, **arrays)
        return path


def train_config(kind: str, width: int, ltd: str, k: int = 4) -> dict:
    model = {"width": width, "ltd": ltd, "k": k}
    if kind == "rate":
        model["granule"] = "random"
    else:
        model.update(pc_per_class=2, mf_rate_min_hz=MF_MIN, mf_rate_max_hz=MF_MAX, window_ms=WINDOW, readout_start_ms=20.0)
    return {"model_kind": kind, "model": model, "task": {"name": "digits"}, "train": {"epochs": 3}}


def rate_rows(value: float) -> list[dict]:
    rows = []
    for attack, loss in (("noise", "none"), ("pgd", "mse"), ("worst", "all")):
        for eps in EPS:
            if eps == 0:
                acc = 0.9
            elif attack == "noise":
                acc = 0.85
            elif attack == "pgd":
                acc = value + 0.1 if eps == 0.1 else value / 2 + 0.1
            else:
                acc = value if eps == 0.1 else value / 2
            rows.append({"model": "rate", "attack": attack, "loss": loss, "eps": eps, "seed": 0, "n": 100,
                         "n_correct": round(100 * acc), "robust_acc": acc, "mean_linf": eps, "mean_l2": 4 * eps})
    return rows


def spiking_rows(hybrid: float, transfer: float) -> list[dict]:
    rows = []
    spec = [("noise", "none", "spiking", "none", 0.8), ("pgd", "margin", "surrogate", "surrogate", 0.1),
            ("pgd", "margin", "spiking", "surrogate", transfer), ("transfer-rate", "margin", "spiking", "rate", 0.7),
            ("hybrid", "margin", "spiking", "surrogate", hybrid)]
    for attack, loss, model, source, acc01 in spec:
        for eps in EPS:
            acc = 0.85 if eps == 0 else (acc01 if eps == 0.1 else acc01 / 2)
            rows.append({"model": model, "attack": attack, "loss": loss, "eps": eps, "seed": 0, "n": 50,
                         "n_correct": round(50 * acc), "robust_acc": acc, "mean_linf": eps, "mean_l2": 4 * eps,
                         "queries": 100, "noise_mode": "frozen", "success_prob": math.nan, "norm": "linf",
                         "source": source})
    for eps, acc in ((0.5, 0.6), (1.0, 0.3)):
        rows.append({"model": "spiking", "attack": "hsja-l2", "loss": "none", "eps": eps, "seed": 0, "n": 50,
                     "n_correct": round(50 * acc), "robust_acc": acc, "mean_linf": math.nan, "mean_l2": eps,
                     "queries": 500, "noise_mode": "frozen", "success_prob": 0.9, "norm": "l2", "source": "none"})
    return rows


def planted_spikes() -> dict:
    rng = np.random.default_rng(1)
    out = {}
    x_clean = rng.uniform(0, 1, D).astype(np.float32)
    x_adv = np.clip(x_clean + 0.1 * np.sign(rng.normal(size=D)), 0, 1).astype(np.float32)
    for cond, n_grc_active, pc_class in (("clean", 30, 3), ("adv", 60, 7)):
        trains = {
            "mf": (np.arange(D), np.full(D, 10.0)),
            "grc": (np.arange(n_grc_active), np.linspace(5, 95, n_grc_active)),
            "goc": (np.repeat(np.arange(10), 3), np.tile([10.0, 40.0, 70.0], 10)),
            # class c is Purkinje cells 2c, 2c+1: five spikes each after the readout start (20 ms)
            "pc": (np.repeat([2 * pc_class, 2 * pc_class + 1], 5), np.tile([30.0, 40.0, 50.0, 60.0, 70.0], 2)),
            "cf": (np.array([0, 1]), np.array([50.0, 60.0])),
        }
        for pop, (i, t) in trains.items():
            out[f"{cond}_{pop}_i"] = i.astype(np.int64)
            out[f"{cond}_{pop}_t_ms"] = t.astype(np.float64)
    for pop, n in N_POP.items():
        out[f"n_{pop}"] = np.int64(n)
    out.update(window_ms=np.float64(WINDOW), x_clean=x_clean, x_adv=x_adv, label=np.int64(3), pred_clean=np.int64(3),
               pred_adv=np.int64(7), mf_rate_min_hz=np.float64(MF_MIN), mf_rate_max_hz=np.float64(MF_MAX))
    return out


def decision_npz(n: int = 6, seed: int = 0) -> dict:
    """``n`` attacked images (the last one never fooled; images 0 and 3 fooled on a tie, image 0 by
    silence) plus one image the network already misclassified clean, which the suite records as
    "successful" at distance 0 and which the report must leave out."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n + 1, D)).astype(np.float32)
    adv = np.clip(x + rng.normal(0, 0.05, (n + 1, D)), 0, 1).astype(np.float32)
    adv[n] = x[n]
    success = np.array([True] * (n - 1) + [False, True])
    y = np.arange(n + 1) % 10
    pred_clean = y.copy()
    pred_clean[n] = (y[n] + 1) % 10
    tied = np.zeros(n + 1, bool)
    tied[[0, 3]] = True
    silent = np.zeros(n + 1, bool)
    silent[0] = True
    return {"x_clean": x, "x_adv": adv, "y": y, "pred_clean": pred_clean,
            "pred_adv": (np.arange(n + 1) + 1) % 10, "l2": np.linalg.norm(adv - x, axis=1),
            "linf": np.abs(adv - x).max(axis=1), "queries": np.full(n + 1, 1000) + np.arange(n + 1), "success": success,
            "success_prob": np.where(success, 0.8, 0.0), "tied": tied, "silent": silent}


def adversarials_npz(n: int = 10) -> dict:
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (n, D)).astype(np.float32)
    eps = np.array(EPS)
    adv = np.stack([np.clip(x + e * np.sign(rng.normal(size=(n, D))), 0, 1) for e in eps]).astype(np.float32)
    return {"x_clean": x, "y": np.arange(n) % 10, "pgd_margin.eps": eps, "pgd_margin.x_adv": adv}


def fidelity_npz(n: int = 12) -> dict:
    rng = np.random.default_rng(3)
    out = {}
    for pop, cells in (("grc", 50), ("goc", 10), ("pc", 20)):
        s = rng.gamma(2.0, 10.0, (n, cells))
        out[f"spiking_{pop}"] = s
        out[f"surrogate_{pop}"] = s + rng.normal(0, 2.0, (n, cells))
    sc = rng.normal(50, 10, (n, 10))
    out.update(spiking_scores=sc, surrogate_scores=sc + rng.normal(0, 1, (n, 10)))
    return out


TRANSFER_COLS = ["source", "target", "attack", "loss", "eps", "n", "success_rate"]
TRANSFER_ROWS = [
    {"source": s, "target": t, "attack": "pgd", "loss": "margin", "eps": e, "n": 50, "success_rate": v * (e / 0.1)}
    for (s, t, v) in (("surrogate", "spiking", 0.6), ("rate", "spiking", 0.3), ("rate", "rate", 0.9),
                      ("surrogate", "surrogate", 0.95)) for e in (0.1, 0.2)
]


def build_study(root: Path) -> dict:
    w = Writer(root)
    info = {"rate_attack": {}, "spiking_attack": []}
    lc_rate = ([{"epoch": e, "train_loss": 0.5 / (e + 1), "train_accuracy": 0.8 + 0.05 * e, "test_loss": 0.4,
                 "test_accuracy": 0.78 + 0.05 * e, "wall_s": e} for e in range(3)], None)
    for width in (1000, 2000, 4000):
        for ltd in ("none", "ma"):
            for seed in range(3):
                tr = w.run("rate", train_config("rate", width, ltd), seed, metrics={"test_accuracy": 0.9},
                           csvs={"learning_curve.csv": lc_rate})
                metrics = {"clean_accuracy": 0.9, "checks_passed": True, "check_messages": []}
                if (width, ltd, seed) == (4000, "ma", 2):
                    metrics.update(checks_passed=False, check_messages=[FAILED_CHECK])
                at = w.run("attack-rate", {"model_kind": "rate", "source_run": f"rate/{tr.name}"}, seed, metrics=metrics,
                           csvs={"robustness.csv": (rate_rows(rate_value(width, ltd, seed)), None)},
                           npzs={"adversarials.npz": adversarials_npz()})
                info["rate_attack"][(width, ltd, seed)] = at
    for k, values in K_VALUES.items():
        for seed, v in enumerate(values):
            tr = w.run("rate", train_config("rate", 2000, "none", k), seed, metrics={"test_accuracy": 0.9})
            w.run("attack-rate", {"model_kind": "rate", "source_run": f"rate/{tr.name}"}, seed,
                  metrics={"clean_accuracy": 0.9, "checks_passed": True, "check_messages": []},
                  csvs={"robustness.csv": (rate_rows(v), None)})
    # runs that did not complete
    failed_train = w.run("rate", train_config("rate", 8000, "none"), 0, status="failed")
    info["failed_attack"] = w.run("attack-rate", {"model_kind": "rate", "source_run": f"rate/{failed_train.name}"}, 0,
                                  status="failed", csvs={"robustness.csv": (rate_rows(0.9), None)})
    info["running_attack"] = w.run("attack-rate", {"model_kind": "rate",
                                                   "source_run": f"rate/{info['rate_attack'][(1000, 'none', 0)].name}"},
                                   5, status="running", csvs={"robustness.csv": (rate_rows(0.9), None)})
    lc_spk = ([{"epoch": e, "lr_scale": 1.0, "train_accuracy_online": 0.7 + 0.05 * e, "eval_accuracy": 0.72 + 0.05 * e,
                "w_mean": 0.4, "w_frac_zero": 0.0, "w_frac_max": 0.0, "grc_rate_hz": 8.0, "train_s": 1.0, "wall_s": 1.0}
               for e in range(1, 4)], None)
    spk_train = {}
    for width in (1000, 2000):
        for ltd in ("cf", "none"):
            spk_train[(width, ltd)] = w.run("spiking", train_config("spiking", width, ltd), 0,
                                            metrics={"test_accuracy": 0.85, "grc_coding_level": 0.3, "grc_rate_hz": 8.0},
                                            csvs={"learning_curve.csv": lc_spk})
    spk_metrics = {"clean_accuracy": 0.85, "checks_passed": True, "check_messages": [], "fidelity_agreement": 0.9,
                   "fidelity_r_grc": 0.8, "fidelity_r_goc": 0.7, "fidelity_r_pc": 0.85, "fidelity_readout_r2": 0.75,
                   "hsja_median_l2": 0.7, "queries_per_s": 100.0}
    for n, ((width, ltd), tr) in enumerate(spk_train.items()):
        full = n == len(spk_train) - 1
        csvs = {"robustness.csv": (spiking_rows(hybrid=0.4 if full else 0.2 + 0.05 * n, transfer=0.3 if full else 0.6), None)}
        npzs = {}
        if full:
            csvs["transfer.csv"] = (TRANSFER_ROWS, TRANSFER_COLS)
            npzs = {"spikes.npz": planted_spikes(), "fidelity.npz": fidelity_npz(), "adversarials.npz": adversarials_npz(),
                    "decision_hsja-l2.npz": decision_npz(seed=0), "decision_hsja-linf.npz": decision_npz(seed=1),
                    "decision_boundary-l2.npz": decision_npz(seed=2)}
        info["spiking_attack"].append(w.run("attack-spiking", {"model_kind": "spiking", "source_run": f"spiking/{tr.name}"},
                                            0, metrics=spk_metrics, csvs=csvs, npzs=npzs))
    return info


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    info = build_study(root)
    return root, info


@pytest.fixture(scope="module")
def report(study):
    root, info = study
    return write_report(root), root, info


# ----------------------------------------------------------------------------- loading
def test_attack_table_joins_training_fields_and_skips_unfinished_runs(study):
    root, info = study
    s = load_study(root)
    rows = attack_table(s)
    runs = {r["attack_run"] for r in rows}
    # 18 width x ltd runs + 6 K runs (rate) + 4 spiking; the failed and running runs are skipped
    assert len([r for r in runs if r.startswith("attack-rate/")]) == 24
    assert len([r for r in runs if r.startswith("attack-spiking/")]) == 4
    assert not any(info["failed_attack"].name in r or info["running_attack"].name in r for r in runs)
    assert len([r for r in rows if r["experiment"] == "attack-rate"]) == 24 * 9
    assert {str(Path(p["path"]).name) for p in s.skipped} >= {info["failed_attack"].name, info["running_attack"].name}
    assert not any(r["fields"]["width"] == 8000 for r in s.training)
    one = [r for r in rows if r["attack_run"].endswith(info["rate_attack"][(2000, "ma", 1)].name)]
    assert {(r["model_kind"], r["width"], r["ltd"], r["k"], r["granule"], r["task"], r["seed"]) for r in one} == {
        ("rate", 2000, "ma", 4, "random", "digits", 1)}
    worst = [r for r in one if r["attack"] == "worst" and r["eps"] == 0.1]
    assert worst[0]["robust_acc"] == pytest.approx(rate_value(2000, "ma", 1))
    spk_rows = [r for r in rows if r["model_kind"] == "spiking"]
    assert {r["norm"] for r in spk_rows} == {"linf", "l2"}
    assert {r["ltd"] for r in spk_rows} == {"cf", "none"}
    # rate rows have no norm column: they are L-inf
    assert {r["norm"] for r in rows if r["model_kind"] == "rate"} == {"linf"}


def test_model_fields_leave_k_out_for_a_dense_granule_layer():
    def run(model):
        return {"config": {"model_kind": "rate", "model": model, "task": {"name": "mnist"}}, "meta": {"seed": 0}}

    fc = model_fields(run({"width": 5000, "k": 4, "ltd": "ma", "granule": "fc"}))
    assert fc["k"] is None and config_label(fc) == "width=5000, ltd=ma, granule=fc, task=mnist"
    sparse = model_fields(run({"width": 5000, "k": 4, "ltd": "ma", "granule": "random"}))
    assert sparse["k"] == 4 and config_label(sparse) == "width=5000, k=4, ltd=ma, granule=random, task=mnist"
    # the spiking model has no granule field: its k is always the mossy-fibre fan-in
    assert model_fields(run({"width": 2000, "k": 4, "ltd": "cf"}))["k"] == 4


def test_source_run_resolves_relative_to_the_attack_runs_root(study, tmp_path):
    root, info = study
    at = info["rate_attack"][(1000, "none", 0)]
    run = {"path": at, "config": {"source_run": "rate/" + "nonexistent"}}
    assert resolve_source_run(run) is None
    src = json.loads((at / "config.json").read_text())["source_run"]
    assert resolve_source_run({"path": at, "config": {"source_run": src}}) == root / src
    # a moved tree still joins by the folder name under the given root
    moved = {"path": tmp_path / "x" / "attack-rate" / at.name, "config": {"source_run": "old/place/" + Path(src).name}}
    assert resolve_source_run(moved, root) == root / src


def test_run_metric_worst_falls_back_to_the_minimum_over_attacks(study):
    root, _ = study
    rows = attack_table(load_study(root))
    spiking = [r for r in rows if r["model_kind"] == "spiking"]
    by_run = {}
    for r in spiking:
        by_run.setdefault(r["attack_run"], []).append(r)
    full = max(by_run)  # the newest spiking attack run: transfer 0.3 < hybrid 0.4 < noise 0.8
    assert run_metric(by_run[full], "worst", 0.1) == pytest.approx(0.3)  # surrogate (0.1) rows do not count
    assert run_metric(by_run[full], "clean", 0.1) == pytest.approx(0.85)
    assert math.isnan(run_metric(by_run[full], "pgd_mse", 0.1))


# ----------------------------------------------------------------------------- statistics
def _records(root, kind, metric="worst", eps=0.1):
    return [r for r in metric_records(attack_table(load_study(root)), metric, eps) if r["model_kind"] == kind]


def test_width_slope_recovers_the_planted_slope(study):
    root, _ = study
    res = [r for r in width_effect(_records(root, "rate")) if r["test"] == "linregress"]
    assert len(res) == 2  # one per LTD stratum; the K-sweep strata have a single width
    for r in res:
        assert r["n"] == 9
        assert r["effect"] == pytest.approx(SLOPE, abs=1e-9)
        assert r["ci_low"] < SLOPE < r["ci_high"]
        assert 0 < r["statistic"] < 1 and r["p_value"] < 0.05
    x = np.repeat(np.log10([1000, 2000, 4000]), 3)
    y = [rate_value(w, "none", s) for w in (1000, 2000, 4000) for s in range(3)]
    ref = stats.linregress(x, y)
    none = next(r for r in res if "ltd=none" in r["note"])
    assert none["statistic"] == pytest.approx(ref.rvalue)
    assert none["p_value"] == pytest.approx(ref.pvalue)


def test_ltd_paired_effect_matches_the_planted_difference(study):
    root, _ = study
    res = {r["test"]: r for r in ltd_effect(_records(root, "rate"))}
    d = np.array([LTD_DELTA + LTD_E[s] for _ in range(3) for s in range(3)])
    t = res["paired t"]
    assert t["n"] == 9
    assert t["effect"] == pytest.approx(d.mean())
    half = stats.t.ppf(0.975, 8) * d.std(ddof=1) / 3
    assert (t["ci_low"], t["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert t["statistic"] == pytest.approx(d.mean() / (d.std(ddof=1) / 3))
    assert res["cohen dz"]["effect"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert res["wilcoxon"]["p_value"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert res["wilcoxon"]["effect"] == pytest.approx(np.median(d))


def test_k_effect_is_the_planted_negative_rank_correlation(study):
    root, _ = study
    res = [r for r in k_effect(_records(root, "rate")) if r["test"] == "spearman"]
    assert len(res) == 1
    r = res[0]
    assert r["n"] == 9 and "width=2000" in r["note"] and "ltd=none" in r["note"]
    # values fall strictly with K; the ties in K (several seeds per K) keep rho just above -1
    k = [4, 4, 4] + [kk for kk, vals in K_VALUES.items() for _ in vals]
    y = [rate_value(2000, "none", s) for s in range(3)] + [v for vals in K_VALUES.values() for v in vals]
    assert r["effect"] == pytest.approx(stats.spearmanr(k, y).statistic) and r["effect"] < -0.95
    assert r["p_value"] == pytest.approx(stats.spearmanr(k, y).pvalue)
    assert r["ci_low"] < r["effect"] < r["ci_high"] < 0


def test_too_few_runs_say_so(study):
    root, _ = study
    recs = _records(root, "spiking")
    width = width_effect(recs)
    assert width and all(r["test"] == "" for r in width)
    assert any("not enough runs (have 2, need 5)" in r["note"] for r in width)
    ltd = ltd_effect(recs)
    assert [r["note"].split(":")[0] for r in ltd] == ["not enough runs (have 2, need 3)"]
    # Wilcoxon needs 6 pairs: with 3 it says why instead of giving a p value; the t-test still runs
    few = ltd_effect([r for r in _records(root, "rate") if r["width"] == 1000])
    wil = next(r for r in few if r["test"] == "wilcoxon")
    assert math.isnan(wil["p_value"]) and wil["note"].startswith("not enough runs (have 3, need 6)")
    assert next(r for r in few if r["test"] == "paired t")["n"] == 3


def test_collapse_seeds_averages_one_model_but_keeps_eps_apart():
    base = {"model_kind": "rate", "metric": "worst", "width": 1000, "k": 4, "ltd": "none", "granule": "fc",
            "task": "digits", "seed": 0}
    recs = [dict(base, eps=0.1, value=0.2), dict(base, eps=0.1, value=0.4), dict(base, eps=0.2, value=0.1),
            dict(base, eps=0.1, seed=1, value=0.9)]
    out = {(r["eps"], r["seed"]): r for r in collapse_seeds(recs)}
    assert set(out) == {(0.1, 0), (0.2, 0), (0.1, 1)}
    assert out[(0.1, 0)]["value"] == pytest.approx(0.3) and out[(0.1, 0)]["n_attack_runs"] == 2
    assert out[(0.2, 0)]["value"] == pytest.approx(0.1)


def test_mean_ci():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (m, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert math.isnan(mean_ci([5.0])[1]) and mean_ci([5.0])[0] == 5.0
    assert all(math.isnan(v) for v in mean_ci([]))


# ----------------------------------------------------------------------------- spikes, export
def test_spike_measures_on_planted_trains(study):
    root, info = study
    s = spk.load_spikes(info["spiking_attack"][-1] / "spikes.npz")
    assert s["pops"] == ["mf", "grc", "goc", "pc", "cf"]
    rows = {(r["population"], r["condition"]): r for r in spk.spike_summary(s)}
    assert rows[("grc", "clean")]["coding_level"] == pytest.approx(30 / 300)
    assert rows[("grc", "adv")]["coding_level"] == pytest.approx(60 / 300)
    # grc: 30 of 300 cells fire once: a = (30/300)^2 / (30/300) = 0.1; S = 0.9 / (1 - 1/300)
    assert rows[("grc", "clean")]["activity_ratio"] == pytest.approx(0.1)
    assert rows[("grc", "clean")]["sparseness"] == pytest.approx(0.9 / (1 - 1 / 300))
    assert rows[("mf", "clean")]["sparseness"] == pytest.approx(0.0)  # every fibre fires once
    clean = spk.class_rates(*s["trains"]["clean"]["pc"], 20, 10, WINDOW, 20.0)
    adv = spk.class_rates(*s["trains"]["adv"]["pc"], 20, 10, WINDOW, 20.0)
    assert clean[3] == pytest.approx(5 / 0.08) and clean.sum() == pytest.approx(5 / 0.08)
    assert adv[7] == pytest.approx(5 / 0.08) and adv[3] == 0
    centres, rate = spk.psth(np.array([1.0, 2.0, 7.0]), 2, 10.0, 5.0)
    assert list(centres) == [2.5, 7.5] and list(rate) == pytest.approx([2 / 0.005 / 2, 1 / 0.005 / 2])
    assert spk.activity_ratio(np.array([4.0, 0, 0, 0])) == pytest.approx(0.25)
    assert spk.population_sparseness(np.array([4.0, 0, 0, 0])) == pytest.approx(1.0)
    assert spk.population_sparseness(np.full(5, 3.0)) == pytest.approx(0.0)


def test_stimulus_rows_map_pixels_to_mossy_fibre_rates():
    rows = stimulus_rows(np.array([0.0, 0.5, 1.0]), "c", 5.0, 305.0, 100.0)
    assert [r["rate_hz"] for r in rows] == [5.0, 155.0, 305.0]
    assert [r["fibre"] for r in rows] == [0, 1, 2]
    assert {(r["condition"], r["t_start_ms"], r["t_end_ms"]) for r in rows} == {("c", 0.0, 100.0)}


def test_image_shape():
    assert image_shape(64) == (8, 8) and image_shape(196) == (14, 14) and image_shape(784) == (28, 28)
    assert image_shape(10) == (1, 10)


def test_check_findings_flags_transfer_stronger_than_hybrid():
    def row(attack, acc, model="spiking", eps=0.1):
        return {"attack": attack, "loss": "margin", "model": model, "eps": eps, "norm": "linf", "robust_acc": acc,
                "noise_mode": "frozen"}

    bad = check_findings([row("hybrid", 0.4), row("transfer-rate", 0.35), row("noise", 0.8)])
    assert len(bad) == 1 and bad[0].startswith("transfer stronger than hybrid: evaluation unreliable")
    assert check_findings([row("hybrid", 0.3), row("transfer-rate", 0.35), row("pgd", 0.5)]) == []
    noise = check_findings([row("noise", 0.1, "rate"), row("pgd", 0.5, "rate")])
    assert len(noise) == 1 and "random noise stronger" in noise[0]


# ----------------------------------------------------------------------------- report
EXPECTED_FIGURES = ["robustness_curves", "mechanism_width", "mechanism_ltd", "mechanism_k", "decision", "transfer",
                    "fidelity", "spikes_raster", "spikes_psth", "spikes_coding", "spikes_pc_classes",
                    "learning_curves", "gallery_attack-rate", "gallery_attack-spiking", "gallery_hsja-l2",
                    "gallery_hsja-linf", "gallery_boundary-l2"]


def test_report_has_every_figure_as_a_png(report):
    path, root, _ = report
    text = path.read_text()
    assert path == root / "report.md"
    for name in EXPECTED_FIGURES:
        f = root / "figures" / f"{name}.png"
        assert f"(figures/{name}.png)" in text, name
        data = f.read_bytes()
        assert data[:8] == PNG and len(data) > 2000, name


def test_report_states_checks_and_headline(report):
    path, root, info = report
    text = path.read_text()
    assert FAILED_CHECK in text
    failed_line = next(line for line in text.splitlines() if info["rate_attack"][(4000, "ma", 2)].name in line)
    assert "checks failed" in failed_line
    assert "transfer stronger than hybrid: evaluation unreliable" in text
    assert "checks passed" in text
    assert "skipped 3 run(s) that did not complete" in text
    head = text.split("## Headline")[1].split("##")[0]
    # hybrid on the spiking reference configuration: 0.4 at eps 0.1, 0.2 at eps 0.2
    hybrid = next(line for line in head.splitlines() if "| hybrid (frozen noise) |" in line)
    assert "| 0.400 | 0.200 |" in hybrid


def test_report_writes_mechanisms_csv_with_the_planted_effects(report):
    path, root, _ = report
    with open(root / "mechanisms.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["model_kind", "mechanism", "metric", "eps", "n", "effect", "ci_low", "ci_high",
                             "statistic", "p_value", "test", "note"]
    slopes = [float(r["effect"]) for r in rows if r["model_kind"] == "rate" and r["metric"] == "worst"
              and r["test"] == "linregress" and float(r["eps"]) == 0.1]
    assert slopes == pytest.approx([SLOPE, SLOPE])
    slopes02 = [float(r["effect"]) for r in rows if r["model_kind"] == "rate" and r["metric"] == "worst"
                and r["test"] == "linregress" and float(r["eps"]) == 0.2]
    assert slopes02 == pytest.approx([SLOPE / 2, SLOPE / 2])  # planted: value / 2 at eps 0.2
    spiking_notes = [r["note"] for r in rows if r["model_kind"] == "spiking" and r["metric"] == "worst"]
    assert any("not enough runs (have 2, need 3)" in n for n in spiking_notes)
    assert "not enough runs (have 2, need 5)" in path.read_text()


def test_report_exports_spike_trains_and_stimulus_tables(report):
    path, root, info = report
    run = info["spiking_attack"][-1]
    out = root / "export" / "attack-spiking" / run.name
    planted = planted_spikes()
    for cond in ("clean", "adv"):
        with np.load(out / f"spikes_{cond}.npz", allow_pickle=False) as d:
            for pop in N_POP:
                np.testing.assert_array_equal(d[f"{pop}_i"], planted[f"{cond}_{pop}_i"])
                np.testing.assert_allclose(d[f"{pop}_t_ms"], planted[f"{cond}_{pop}_t_ms"])
                assert int(d[f"n_{pop}"]) == N_POP[pop]
    # Neo (a dev dependency, so always here in the tests): one SpikeTrain per cell, the planted times
    import neo

    block = neo.io.NeoMatlabIO(filename=str(out / "spikes.neo.mat")).read_block()
    assert [seg.name for seg in block.segments] == ["clean", "adv"]
    for seg, cond in zip(block.segments, ("clean", "adv")):
        assert len(seg.spiketrains) == sum(N_POP.values())
        for pop in N_POP:
            trains = [st for st in seg.spiketrains if st.annotations["population"] == pop]
            assert len(trains) == N_POP[pop]
            i, t = planted[f"{cond}_{pop}_i"], planted[f"{cond}_{pop}_t_ms"]
            for st in trains[:5]:
                cell = int(st.annotations["cell"])
                np.testing.assert_allclose(np.sort(st.rescale("ms").magnitude), np.sort(t[i == cell]))
    # NWB (the project's layout): valid, two trials, the planted spikes back per population
    from analysis.nwb import read_nwb, validate_nwb

    assert validate_nwb(out / "spikes.nwb") == []
    back = read_nwb(out / "spikes.nwb")
    assert list(back["trial_condition"]) == ["clean", "adversarial"] and back["n"] == N_POP
    for k, cond in enumerate(("clean", "adv")):
        for pop in N_POP:
            i, t = back["trains"][pop][k]
            pi, pt = planted[f"{cond}_{pop}_i"], planted[f"{cond}_{pop}_t_ms"]
            order, planted_order = np.lexsort((i, t)), np.lexsort((pi, pt))
            np.testing.assert_array_equal(i[order], pi[planted_order])
            np.testing.assert_allclose(t[order], pt[planted_order], atol=1e-9)
    np.testing.assert_allclose(back["mf_rate_hz"][1], MF_MIN + planted["x_adv"].astype(float) * (MF_MAX - MF_MIN),
                               rtol=1e-6)
    table = read_csv(out / "stimuli.csv")
    assert list(table[0]) == ["condition", "fibre", "t_start_ms", "t_end_ms", "rate_hz"]
    adv = [r for r in table if r["condition"] == "raster/adversarial"]
    assert len(adv) == D
    expect = MF_MIN + planted["x_adv"].astype(float) * (MF_MAX - MF_MIN)
    np.testing.assert_allclose([r["rate_hz"] for r in adv], expect, rtol=1e-6)
    assert {(r["t_start_ms"], r["t_end_ms"]) for r in adv} == {(0.0, WINDOW)}
    # 5 successful images per decision attack, clean and adversarial each
    assert len({r["condition"] for r in table if r["condition"].startswith("hsja-l2/")}) == 10
    assert any(r["condition"] == "image0/pgd_margin/eps0.1" for r in table)
    assert "export/attack-spiking/" in path.read_text()


def test_report_without_inputs_skips_sections_with_a_note(study, tmp_path):
    root, info = study
    small = tmp_path / "small"
    (small / "rate").mkdir(parents=True)
    train = load_study(root)
    tr = next(r for r in train.training if r["fields"]["width"] == 1000 and r["fields"]["seed"] == 0
              and r["fields"]["ltd"] == "none")
    shutil.copytree(tr["path"], small / "rate" / Path(tr["path"]).name)
    text = write_report(small, tmp_path / "elsewhere" / "r.md").read_text()
    assert "No attack runs" in text and "No spikes.npz; section skipped." in text
    assert "No transfer.csv files; section skipped." in text
    assert "(figures/learning_curves.png)" in text
    assert (tmp_path / "elsewhere" / "figures" / "learning_curves.png").read_bytes()[:8] == PNG


# ----------------------------------------------------------------------------- command line, imports
def test_cereb_report_command(study, tmp_path, capsys):
    from scripts.cli import main

    root, info = study
    small = tmp_path / "small"
    attack = info["rate_attack"][(1000, "none", 0)]
    source = json.loads((attack / "config.json").read_text())["source_run"]
    shutil.copytree(attack, small / "attack-rate" / attack.name)
    shutil.copytree(root / source, small / source)
    out = tmp_path / "cli" / "report.md"
    assert main(["report", str(small), "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"report: {out}"
    text = out.read_text()
    assert text.startswith("# Report") and "width=1000, k=4, ltd=none" in text
    assert "ltd=none, seed 0): checks passed." in text

    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cereb: error: ") and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no run folders" in capsys.readouterr().err


def test_analysis_imports_no_simulator_or_attack_library():
    code = (
        "import importlib, pkgutil, sys, analysis\n"
        "mods = [m.name for m in pkgutil.iter_modules(analysis.__path__, 'analysis.')]\n"
        "assert len(mods) >= 8, mods\n"
        "for m in mods: importlib.import_module(m)\n"
        "import scripts.report\n"
        "bad = sorted(n for n in ('brian2', 'torch', 'foolbox') if n in sys.modules)\n"
        "print('heavy:', bad)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "heavy: []"


def test_decision_table_counts_only_the_attacked_images(report):
    path, root, info = report
    d = decision_npz(seed=0)
    ok = d["pred_clean"] == d["y"]
    fooled = d["success"] & ok
    row = next(line for line in path.read_text().splitlines() if line.startswith("| hsja-l2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == str(ok.sum())                                   # the misclassified image is not counted
    assert float(cells[2]) == pytest.approx(fooled.sum() / ok.sum(), abs=1e-3)
    assert float(cells[3]) == pytest.approx(np.median(d["l2"][fooled]), abs=1e-3)
    assert float(cells[7]) == pytest.approx(d["tied"][fooled].mean(), abs=1e-3)
    assert float(cells[8]) == pytest.approx(d["silent"][fooled].mean(), abs=1e-3)


def test_statistics_modules_import_no_table_or_report_module():
    """stats.py and verdicts.py compute on records only: no import of tables/report/findings (the old
    stats <-> tables circle), checked on their source."""
    import ast

    for name in ("stats", "verdicts"):
        tree = ast.parse((PROJECT_ROOT / "analysis" / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m.startswith("analysis.") or m == "analysis"}, (name, imported)
