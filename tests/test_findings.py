"""`cereb report ROOT --findings` on planted run folders: the page, its tables and figures, the
rebuild from the committed tables alone, and one-line errors for bad input."""
from __future__ import annotations

import math

import pytest

from analysis import findings
from core.runs import read_csv, write_csv, write_json
from scripts.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
SEEDS = range(4)
NOISE = [-0.01, 0.0, 0.012, 0.004]
NOISE_OFF = [0.006, -0.008, 0.0, 0.01]   # LTD off: its own seed noise, so the paired differences vary
SPIKING_LTD = 0.2     # planted: LTD on - off in the spiking network's fresh-noise robust accuracy
RATE_BASE = 0.3


class Writer:
    def __init__(self, root):
        self.root, self.n = root, 0

    def run(self, experiment, config, seed, metrics, rows=None):
        self.n += 1
        path = self.root / experiment / f"20260101-{self.n:06d}_{self.n:010x}_s{seed}"
        path.mkdir(parents=True)
        write_json(path / "config.json", config)
        write_json(path / "meta.json", {"status": "completed", "experiment": experiment, "seed": seed,
                                        "config_hash": f"{self.n:010x}", "wall_s": 10.0,
                                        "versions": {"brian2": "2.9.0", "torch": "2.13.0+cpu"}})
        write_json(path / "metrics.json", metrics)
        if rows is not None:
            write_csv(path / "robustness.csv", rows)
        return path


def spiking_rows(robust: float) -> list[dict]:
    return [{"model": "spiking", "attack": a, "loss": "margin", "eps": e, "robust_acc": v, "noise_mode": "fresh",
             "norm": "linf"}
            for a, off in (("pgd", 0.05), ("eot-hybrid", 0.0)) for e, v in ((0.0, 0.8), (0.1, robust + off))]


def rate_rows(robust: float) -> list[dict]:
    return [{"model": "rate", "attack": "worst", "loss": "all", "eps": e, "robust_acc": v}
            for e, v in ((0.0, 0.9), (0.05, (0.9 + robust) / 2), (0.1, robust))]


def build(root):
    w = Writer(root)
    for seed in SEEDS:
        for ltd in ("cf", "none"):
            robust = 0.3 + NOISE[seed] + SPIKING_LTD if ltd == "cf" else 0.3 + NOISE_OFF[seed]
            tr = w.run("spiking", {"model_kind": "spiking", "model": {"width": 2000, "k": 4, "ltd": ltd},
                                   "task": {"name": "digits"}}, seed, {"test_accuracy": 0.75})
            w.run("attack-spiking", {"model_kind": "spiking", "source_run": f"spiking/{tr.name}",
                                     "attack": {"n": 360, "fresh_repeats": 5}}, seed,
                  {"clean_accuracy": 0.75, "fresh_clean_accuracy": 0.8, "fresh_noise_robust_acc_eps0.1": robust,
                   "fresh_noise_strongest_eps0.1": "eot-hybrid", "checks_passed": True}, spiking_rows(robust))
        for width in (500, 1000, 2000, 4000):
            for ltd in (("ma", "none") if width == 2000 else ("ma",)):
                robust = RATE_BASE + NOISE[(seed + width) % 4]
                tr = w.run("rate", {"model_kind": "rate", "model": {"width": width, "k": 4, "ltd": ltd,
                                                                    "granule": "random"},
                                    "task": {"name": "digits"}, "train": {"batch_size": 1}}, seed,
                           {"test_accuracy": 0.9})
                w.run("attack-rate", {"model_kind": "rate", "source_run": f"rate/{tr.name}", "attack": {"n": 360}},
                      seed, {"clean_accuracy": 0.9, "robust_acc_worst_eps0.1": robust, "checks_passed": True},
                      rate_rows(robust))
    # a dense rate granule layer: K is every input (64 for digits)
    tr = w.run("rate", {"model_kind": "rate", "model": {"width": 2000, "k": 4, "ltd": "ma", "granule": "fc"},
                        "task": {"name": "digits"}, "train": {"batch_size": 1}}, 0, {"test_accuracy": 0.9})
    w.run("attack-rate", {"model_kind": "rate", "source_run": f"rate/{tr.name}"}, 0,
          {"clean_accuracy": 0.9, "robust_acc_worst_eps0.1": 0.3, "checks_passed": True}, rate_rows(0.3))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("answer")
    build(root)
    docs = tmp_path_factory.mktemp("docs")
    assert main(["report", str(root), "--findings", "--docs", str(docs)]) == 0
    return root, docs


def test_collect_reads_each_models_metric_and_the_dense_k(page):
    root, _ = page
    runs, curves = findings.collect(root)
    assert len(runs) == 8 + 4 * 5 + 1
    dense = [r for r in runs if r["granule"] == "fc"]
    assert dense[0]["k"] == 64
    spk = [r for r in runs if r["model_kind"] == "spiking" and r["ltd"] == "cf" and r["seed"] == 0][0]
    assert spk["robust"] == pytest.approx(0.49) and spk["clean"] == 0.8 and spk["strongest"] == "eot-hybrid"
    # the curve point at each eps is the strongest attack there
    pts = {p["eps"]: p for p in curves if p["attack_run"] == spk["attack_run"]}
    assert pts[0.1]["robust_acc"] == pytest.approx(0.49) and pts[0.1]["attack"] == "eot-hybrid"


def test_page_has_the_planted_verdicts_tables_and_figures(page):
    _, docs = page
    text = (docs / "findings.md").read_text()
    for name in ("findings_runs.csv", "findings_curves.csv", "findings_verdicts.csv"):
        assert (docs / name).is_file()
    for name in ("findings_curves.png", "findings_mechanisms.png"):
        assert (docs / name).read_bytes()[:8] == PNG
        assert f"]({name})" in text
    table = {(r["model_kind"], r["mechanism"]): r for r in read_csv(docs / "findings_verdicts.csv")}
    ltd = table[("spiking", "ltd")]
    assert ltd["verdict"].startswith("helps") and float(ltd["effect"]) == pytest.approx(SPIKING_LTD + (sum(NOISE) - sum(NOISE_OFF)) / 4)
    assert table[("rate", "width")]["verdict"].startswith("no detectable effect")
    assert table[("rate", "ltd")]["verdict"].startswith("no detectable effect")
    assert table[("spiking", "width")]["verdict"].startswith("not tested")
    assert not math.isnan(float(table[("spiking - rate", "model")]["p_holm"]))
    assert "## The answer" in text and "LTD helps (+20.0 points" in text or "LTD helps (+19.9 points" in text
    assert "## Threat model" in text and "fresh noise" in text


def test_page_rebuilds_from_the_committed_tables_alone(page, tmp_path):
    _, docs = page
    empty = tmp_path / "fresh_machine"
    empty.mkdir()
    before = (docs / "findings.md").read_text()
    assert main(["report", str(empty), "--findings", "--docs", str(docs)]) == 0
    assert (docs / "findings.md").read_text() == before


def test_bad_input_is_one_line_and_keeps_the_tables(page, tmp_path, capsys):
    root, docs = page
    bad = tmp_path / "docs"
    bad.mkdir()
    (bad / "findings_runs.csv").write_text("a,b\n1,2\n")
    assert main(["report", str(root), "--findings", "--docs", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a findings table" in err[0]
    assert (bad / "findings_runs.csv").read_text() == "a,b\n1,2\n"
    assert main(["report", str(tmp_path / "nowhere"), "--findings", "--docs", str(bad)]) == 2
    assert main(["report", str(root), "--findings", "--replication", "--docs", str(bad)]) == 2


def test_a_resumed_study_says_how_many_jobs_it_ran_and_how_many_were_held(tmp_path):
    """The study line must not present the wall time of a resumed invocation as the whole study's."""
    w = Writer(tmp_path)
    path = w.run("study-answer_digits", {"name": "answer_digits"}, 0,
                 {"n_jobs": 3, "study_wall_s": 1800.0})
    write_csv(path / "study.csv", [{"label": "a", "status": "committed"}, {"label": "b", "status": "committed"},
                                   {"label": "c", "status": "ok"}])
    info = findings.study_info(tmp_path)
    assert info["n_jobs"] == 3 and info["n_held"] == 2
    text = findings.render([], [], study=info)
    assert "3 jobs (1 run by this invocation, 2 held by the committed table" in text
    assert "0.50 h wall time for this invocation" in text
