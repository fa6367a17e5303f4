"""The 'cereb attack' and 'cereb study' commands end to end, and their one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.paths import PROJECT_ROOT
from core.runs import find_runs, load_npz, read_csv
from scripts.cli import main
from core.study import load_study

# fast attack settings for tests (the defaults are the paper's and the strong evaluation's); FGSM is
# off because on a tiny model a short PGD can legitimately be weaker than FGSM on an image or two,
# which the checks would (rightly) report; tests/test_attacks.py covers FGSM and that check
FAST = ["--set", "attack.fgsm=false", "--set", "attack.pgd_steps=10", "--set", "attack.pgd_stepsize=0.05", "--set", "attack.strong_steps=10",
        "--set", "attack.strong_restarts=2", "--set", "attack.strong_rel_stepsize=0.3"]
COLUMNS = "model,attack,loss,eps,seed,n,n_correct,robust_acc,mean_linf,mean_l2"


def cereb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if line.startswith("cereb: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    code = main(["train", "-q", "--model", "rate", "--task", "digits", "--set", "model.width=200",
                 "--set", "train.epochs=1", "--out", str(out)])
    assert code == 0
    (run,) = find_runs(out, "rate")
    return run


def test_an_interrupted_attack_run_resumes_where_it_stopped(trained_run, tmp_path):
    """A rate attack run stopped part way (here after 7 (attack, eps) cells) is left 'failed' with
    its evaluations in ``partial/``; the next attempt at the same configuration and seed takes them
    over, attacks only what is left, says so in ``metrics.json`` (``resumed``), and writes the table
    an uninterrupted run writes."""
    from attacks.config import AttackConfig
    from attacks.experiment import attack_run

    cfg = AttackConfig(n=40, eps=(0.0, 0.1, 0.2), fgsm=False, pgd_steps=5, pgd_stepsize=0.05, strong_steps=5,
                       strong_restarts=2, strong_rel_stepsize=0.3, apgd=False)

    class Stop:  # a progress bar that stops the run after 7 cells, as a kill would
        def __init__(self, total):
            self.n, self.total = 0, total

        def update(self, k):
            self.n += k
            if self.n == 7:
                raise KeyboardInterrupt

        def set_postfix_str(self, s):
            pass

        def close(self):
            pass

    with pytest.raises(KeyboardInterrupt):
        attack_run(trained_run, cfg, out=tmp_path / "a", progress=Stop)
    (first,) = find_runs(tmp_path / "a", "attack-rate")
    assert json.loads((first / "meta.json").read_text())["status"] == "failed"
    saved = sorted(p.name for p in (first / "partial").glob("*.npz"))
    assert saved == ["noise_none.npz", "pgd_ce.npz", "pgd_mse.npz"]  # noise, pgd/mse whole; pgd/ce's first eps
    run = attack_run(trained_run, cfg, out=tmp_path / "a")
    assert run.path != first and not (run.path / "partial").exists() and not list((first / "partial").iterdir())
    resumed = run.metrics["resumed"]
    assert resumed["from_run"] == first.name and resumed["earlier_wall_s"] > 0
    assert resumed["evaluations"] == {"noise/none": 3, "pgd/mse": 3, "pgd/ce": 1}
    fresh = attack_run(trained_run, cfg, out=tmp_path / "b")
    assert fresh.metrics["resumed"] is None
    import torch

    assert fresh.metrics["torch_threads"] == torch.get_num_threads()  # the wall times depend on it

    def table(path):  # as text (NaN == NaN there), without the wall time
        import csv

        with open(path / "robustness.csv", newline="") as fh:
            return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(fh)]

    assert table(run.path) == table(fresh.path)
    assert run.metrics["checks_passed"] == fresh.metrics["checks_passed"]


def test_train_then_attack_writes_a_checked_robustness_table(trained_run, tmp_path):
    res = cereb("attack", "-q", "--run", str(trained_run), "--n", "50", "--out", str(tmp_path), *FAST)
    assert res.returncode == 0, res.stderr
    assert "checks: all passed" in res.stdout
    (arun,) = find_runs(tmp_path, "attack-rate")
    header = (arun / "robustness.csv").read_text().splitlines()[0]
    assert header.startswith(COLUMNS + ",")
    rows = read_csv(arun / "robustness.csv")
    assert {(r["attack"], r["loss"]) for r in rows} == {("noise", "none"), ("pgd", "mse"), ("pgd", "ce"),
                                                        ("pgd", "margin"), ("strong", "margin+ce"), ("apgd", "ce+dlr"),
                                                        ("worst", "all")}
    assert all(r["n"] == 50 for r in rows)
    assert {r["eps"] for r in rows if r["attack"] == "pgd"} == {0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3}
    metrics = json.loads((arun / "metrics.json").read_text())
    assert metrics["checks_passed"] is True and metrics["check_messages"] == []
    assert 0.5 < metrics["clean_accuracy"] <= 1
    assert metrics["n"] == 50
    strong = [r for r in rows if r["attack"] == "strong"]
    assert strong[-1]["robust_acc"] <= 0.01
    assert metrics["strong_eps_at_target"] == min(r["eps"] for r in strong if r["robust_acc"] <= 0.01)
    config = json.loads((arun / "config.json").read_text())
    assert config["source_run"] == f"rate/{trained_run.name}" and config["attack"]["n"] == 50
    meta = json.loads((arun / "meta.json").read_text())
    assert meta["status"] == "completed"
    examples = load_npz(arun / "adversarials.npz")
    assert examples["x_clean"].shape == (10, 64)
    # a second identical call reuses the completed run
    again = cereb("attack", "-q", "--run", str(trained_run), "--n", "50", "--out", str(tmp_path), *FAST)
    assert again.returncode == 0 and "reusing completed run" in again.stdout


def test_failed_checks_are_printed_and_recorded(trained_run, tmp_path, capsys, monkeypatch):
    import attacks.foolbox_attacks as fa  # where the attack table's factories (attacks.specs) find it

    class IgnoresEps:  # a planted bug: perturbs by twice the eps it is given
        def __call__(self, model, inputs, criterion, *, epsilons):
            out = [(inputs + 2 * e * (1 - 2 * (inputs > 0.5))).clamp(0, 1) for e in epsilons]
            return out, out, None

    monkeypatch.setattr(fa, "uniform_noise", IgnoresEps)
    code = main(["attack", "-q", "--run", str(trained_run), "--n", "20", "--out", str(tmp_path), "--set",
                 "attack.fgsm=false", "--set", "attack.pgd=false", "--set", "attack.strong=false", "--set",
                 "attack.apgd=false"])
    assert code == 1
    out = capsys.readouterr().out
    assert "checks: 6 FAILED" in out and "FAILED: rate noise/none eps=0.05: perturbation 0.1 exceeds eps" in out
    (arun,) = find_runs(tmp_path, "attack-rate")
    metrics = json.loads((arun / "metrics.json").read_text())
    assert metrics["checks_passed"] is False and len(metrics["check_messages"]) == 6
    assert json.loads((arun / "meta.json").read_text())["status"] == "completed"


def _args(run: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["attack", "-q", "--run", str(run), "--n", "20", "--out", str(tmp_path), *FAST, *extra]


def test_negative_eps_is_exit_code_2_with_a_message(trained_run, tmp_path, capsys):
    assert main(_args(trained_run, tmp_path, "--eps", "0,-0.1")) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "attack.eps must be >= 0, got -0.1" in err
    assert not (tmp_path / "attack-rate").exists()
    assert main(_args(trained_run, tmp_path, "--set", "attack.domain=spikes")) == 2
    assert "attack.domain (spike-domain attacks) applies to spiking runs" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("breakage,fragment", [
    ("missing", "does not exist"),
    ("running", "has status 'running', not 'completed'"),
    ("corrupt", "is not a readable checkpoint"),
    ("no_checkpoint", "no checkpoint at"),
    ("spiking", "unknown config key 'attack.pgd_stepsize'"),  # rate-attack keys on a spiking run
    ("too_many", "attack.n=5000 but the test split of task digits has only 359 images"),
])
def test_bad_source_runs_are_explained(trained_run, tmp_path, capsys, breakage, fragment):
    import shutil

    run = tmp_path / "rate" / trained_run.name
    shutil.copytree(trained_run, run)
    extra: list[str] = []
    if breakage == "missing":
        shutil.rmtree(run)
    elif breakage == "running":
        meta = json.loads((run / "meta.json").read_text())
        (run / "meta.json").write_text(json.dumps({**meta, "status": "running"}))
    elif breakage == "corrupt":
        (run / "checkpoint.npz").write_bytes(b"PK\x03\x04 not really a zip file")
    elif breakage == "no_checkpoint":
        (run / "checkpoint.npz").unlink()
    elif breakage == "spiking":
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**cfg, "model_kind": "spiking"}))
    elif breakage == "too_many":
        extra = ["--n", "5000"]
    assert main(_args(run, tmp_path / "out", *extra)) == 2
    err = one_line_error(capsys.readouterr().err)
    assert fragment in err
    assert not (tmp_path / "out" / "attack-rate").exists() or not find_runs(tmp_path / "out", "attack-rate")


# ----------------------------------------------------------------------------- study
STUDY = """
name: tiny
seeds: [0]
base:
  task.name: digits
  train.epochs: 1
grid:
  model.width: [60, 90]
variants:
  - {model.ltd: none}
  - {label: LTD, model.ltd: ma}
attack:
  n: 20
  fgsm: false
  eps: [0.0, 0.1, 0.2]
  pgd_steps: 4
  pgd_stepsize: 0.1
  strong_steps: 8
  strong_restarts: 2
  strong_rel_stepsize: 0.5
"""


def test_study_file_expands_grid_variants_and_seeds(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(STUDY.replace("seeds: [0]", "seeds: [0, 1]"))
    study = load_study(f, data_dir="/some/mnist")
    labels = sorted({j["label"] for j in study["jobs"]})
    assert labels == ["LTD width=60", "LTD width=90", "ltd=none width=60", "ltd=none width=90"]
    assert len(study["jobs"]) == 8
    job = next(j for j in study["jobs"] if j["label"] == "LTD width=90" and j["seed"] == 1)
    assert job["overrides"]["model"] == {"width": 90, "ltd": "ma"}
    assert job["overrides"]["task"] == {"name": "digits", "data_dir": "/some/mnist"}
    assert study["attack"]["n"] == 20
    # a variant may set its own seeds
    f.write_text(STUDY.replace("seeds: [0]", "seeds: [0, 1]").replace("{label: LTD, ", "{label: LTD, seeds: [7], "))
    seeds = {(j["label"], j["seed"]) for j in load_study(f)["jobs"]}
    assert ("LTD width=60", 7) in seeds and ("LTD width=60", 0) not in seeds and ("ltd=none width=60", 1) in seeds


@pytest.mark.parametrize("text,fragment", [
    ("name: x\nbogus: 1\n", "unknown key 'bogus'"),
    ("name: x\nbase: {model.depth: 3}\n", "unknown config key 'model.depth'"),
    ("name: x\nattack: {eps: [-1]}\n", "attack.eps must be >= 0"),
    ("name: x\nseeds: 3\n", "seeds must be a non-empty list"),
    ("name: x\nvariants:\n  - {model.width: 50, seeds: [one]}\n", "a variant's seeds must be a non-empty list"),
    ("name: x\nattack: {n: 100000}\n", "attack.n=100000 but the test split of task digits has only 359 images"),
])
def test_bad_study_files_are_one_line_errors(tmp_path, capsys, text, fragment):
    f = tmp_path / "s.yaml"
    f.write_text(text)
    assert main(["study", "-q", str(f), "--out", str(tmp_path)]) == 2
    assert fragment in one_line_error(capsys.readouterr().err)


def test_one_job_prints_its_summary_without_an_empty_error_line(tmp_path, capsys):
    f = tmp_path / "tiny.yaml"
    f.write_text(STUDY)
    assert main(["study", "-q", str(f), "--job", "0", "--out", str(tmp_path / "results")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "status: ok" in lines and any(x.startswith("attack_run: ") for x in lines)
    assert not any(x.startswith("error:") for x in lines), lines


def test_one_failed_job_prints_its_error_and_exits_nonzero(tmp_path, capsys, monkeypatch):
    import core.study

    def broken(*args, **kwargs):
        raise RuntimeError("granule cache unreadable")

    monkeypatch.setattr(core.study, "train_job", broken)
    f = tmp_path / "tiny.yaml"
    f.write_text(STUDY)
    assert main(["study", "-q", str(f), "--job", "0", "--out", str(tmp_path / "results")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "status: failed" in lines, lines
    assert "error: RuntimeError: granule cache unreadable" in lines, lines


def test_study_runs_in_parallel_and_resumes(tmp_path):
    f = tmp_path / "tiny.yaml"
    f.write_text(STUDY)
    out = tmp_path / "results"
    res = cereb("study", "-q", str(f), "--jobs", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    (srun,) = find_runs(out, "study-tiny")
    rows = read_csv(srun / "study.csv")
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert all(str(r["checks_passed"]) == "True" for r in rows)
    assert len(find_runs(out, "rate")) == 4 and len(find_runs(out, "attack-rate")) == 4
    # simulate an interrupted study: drop one attack run, then run the study again
    victim = Path(rows[0]["attack_run"])
    meta = json.loads((victim / "meta.json").read_text())
    (victim / "meta.json").write_text(json.dumps({**meta, "status": "failed"}))
    (srun / "meta.json").write_text(json.dumps({**json.loads((srun / "meta.json").read_text()), "status": "failed"}))
    again = cereb("study", "-q", str(f), "--jobs", "1", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert len(find_runs(out, "rate")) == 4  # every training run reused
    assert len(find_runs(out, "attack-rate")) == 5  # only the failed attack was redone
    newest = max(find_runs(out, "study-tiny"), key=lambda p: p.name)
    rows2 = read_csv(newest / "study.csv")
    reused = {r["label"]: (str(r["train_reused"]), str(r["attack_reused"])) for r in rows2}
    assert sorted(reused.values()) == [("True", "False")] + [("True", "True")] * 3
    assert np.isclose(sorted(r["test_accuracy"] for r in rows2), sorted(r["test_accuracy"] for r in rows)).all()


def _study_caught_mid_attack(tmp_path, jobs: int):
    """Start the tiny study (a slow strong attack) in its own process group; return once its
    first attack run exists: ``(study file, results root, process)``."""
    import time

    f = tmp_path / "tiny.yaml"
    f.write_text(STUDY.replace("strong_steps: 8", "strong_steps: 400"))  # slow enough to be caught mid-attack
    out = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "scripts.cli", "study", "-q", str(f), "--jobs", str(jobs),
                             "--out", str(out)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not find_runs(out, "attack-rate"):
        time.sleep(0.1)
    assert find_runs(out, "attack-rate"), "no attack started"
    return f, out, proc


@pytest.mark.parametrize("target", ["study", "process group"])
def test_terminated_study_leaves_no_run_marked_running(tmp_path, target):
    """SIGTERM to the study process, or to its whole process group (``kill -- -PGID``, a cluster
    scheduler): the study stops, its workers with it, and no run is left 'running' or started after."""
    import os
    import signal
    import time

    f, out, proc = _study_caught_mid_attack(tmp_path, jobs=2)
    if target == "study":
        os.kill(proc.pid, signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    time.sleep(1)  # the workers' own handlers
    runs = find_runs(out)
    statuses = {str(p): json.loads((p / "meta.json").read_text())["status"] for p in runs}
    assert statuses and "running" not in statuses.values(), statuses
    assert "failed" in statuses.values()
    time.sleep(3)  # no worker goes on to another job
    assert len(find_runs(out)) == len(runs)


def test_the_studies_readme_gives_each_study_files_number_of_jobs():
    """The table in studies/README.md names every study file with its number of jobs."""
    import re

    text = (PROJECT_ROOT / "studies" / "README.md").read_text()
    rows = re.findall(r"^\| `([\w.]+\.yaml)` \|.*\| (\d+) \|$", text, flags=re.M)
    files = sorted(p.name for p in (PROJECT_ROOT / "studies").glob("*.yaml"))
    assert sorted(f for f, _ in rows) == files
    for f, n in rows:
        assert len(load_study(PROJECT_ROOT / "studies" / f, data_dir="/some/mnist")["jobs"]) == int(n), f


@pytest.mark.parametrize("name", ["paper_width", "paper_sparseness", "paper_four_models"])
def test_paper_studies_resolve_to_the_papers_protocol(name):
    """Every job of the paper studies trains with batch size 1, 10 epochs, RMSprop (alpha 0.99),
    the paper's learning rate (0.5 / width for the readout) and early stop at 99.5%, except the
    labelled mini-batch comparison (batch 16, otherwise identical); seeds: 5 at width <= 10,000,
    2 at 20,000-50,000, 1 above."""
    from core.config import resolve
    from scripts.train import experiment_config_class

    study = load_study(PROJECT_ROOT / "studies" / f"{name}.yaml", data_dir="/some/mnist")
    seeds, minibatch = {}, 0
    for job in study["jobs"]:
        cfg = resolve(experiment_config_class(job["model_kind"]), job["overrides"])
        assert cfg.task.name == "mnist" and cfg.train.epochs == 10 and cfg.train.early_stop_acc == 0.995
        assert cfg.train.alpha == 0.99 and cfg.train.eps == 1e-8
        if job["model_kind"] == "rate":
            assert cfg.train.lr is None and cfg.train.lr_scale == 0.5
        if "mini-batch" in job["label"]:
            assert cfg.train.batch_size == 16 and job["seed"] == 0
            minibatch += 1
        else:
            assert cfg.train.batch_size == 1, job["label"]
            if job["model_kind"] == "rate":
                seeds.setdefault(cfg.model.width, set()).add(job["seed"])
    assert minibatch > 0
    for width, got in seeds.items():
        want = 5 if width <= 10_000 else 2 if width <= 50_000 else 1
        assert got == set(range(want)), (width, got)


def test_answer_study_is_one_factor_at_a_time_with_five_seeds_and_the_papers_protocol():
    """studies/answer_digits.yaml: both models, >= 4 widths, >= 5 values of K from 1 to dense, LTD
    on and off, 5 seeds each, around one reference; the rate model under the paper's protocol; the
    spiking network scored under fresh noise on the whole test split."""
    from analysis.findings import reference
    from core.config import resolve
    from scripts.train import experiment_config_class

    study = load_study(PROJECT_ROOT / "studies" / "answer_digits.yaml")
    rows = []
    for job in study["jobs"]:
        cfg = resolve(experiment_config_class(job["model_kind"]), job["overrides"])
        assert cfg.task.name == "digits"
        k = cfg.model.k if job["model_kind"] == "spiking" or cfg.model.granule != "fc" else 64
        if job["model_kind"] == "rate":
            assert cfg.train.batch_size == 1 and cfg.train.lr is None and cfg.train.lr_scale == 0.5
            assert cfg.train.epochs == 10 and cfg.train.early_stop_acc == 0.995
        rows.append({"model_kind": job["model_kind"], "width": cfg.model.width, "k": k, "ltd": cfg.model.ltd,
                     "granule": "random", "task": "digits", "seed": job["seed"]})
    for kind, on in (("spiking", "cf"), ("rate", "ma")):
        mine = [r for r in rows if r["model_kind"] == kind]
        ref = reference(mine)
        assert ref[:3] == (2000, 4, on)
        configs = {(r["width"], r["k"], r["ltd"]): {s["seed"] for s in mine if (s["width"], s["k"], s["ltd"]) ==
                                                     (r["width"], r["k"], r["ltd"])} for r in mine}
        assert all(seeds == set(range(5)) for seeds in configs.values())
        assert len({w for w, k, ltd in configs if k == 4 and ltd == on}) >= 4
        ks = {k for w, k, ltd in configs if w == 2000 and ltd == on}
        assert len(ks) >= 5 and min(ks) == 1 and max(ks) == 64
        assert (2000, 4, "none") in configs
    assert study["attack"]["n"] == 359 and study["spiking_attack"]["attack"]["n"] == 359
    assert 0.0 in study["spiking_attack"]["attack"]["fresh_eps"] and 0.1 in study["spiking_attack"]["attack"]["fresh_eps"]


def test_replication_table_collects_attack_runs_and_keeps_earlier_rows(trained_run, tmp_path, capsys):
    """`cereb report ROOT --replication` adds one row per rate attack run (configuration and metrics
    read from the run folders) to the committed table, keeps rows no new run replaces, and
    rebuilds the document from the table alone."""
    from analysis import replication

    root = trained_run.parent.parent
    res = cereb("attack", "-q", "--run", str(trained_run), "--n", "30", "--out", str(root), *FAST)
    assert res.returncode == 0, res.stderr
    docs = tmp_path / "docs"
    docs.mkdir()
    earlier = {"granule": "fc", "width": 1000, "k": 0, "ltd": "ma", "batch_size": 1, "seed": 3,
               "clean_accuracy": 0.9, "fgsm_mse_eps0.1": 0.5, "pgd_mse_eps0.1": 0.6, "strong_eps0.1": 0.0,
               "worst_eps0.1": 0.0, "checks_passed": False, "train_run": "gone", "attack_run": "gone"}
    from core.runs import write_csv

    write_csv(docs / "replication_runs.csv", [earlier], list(replication.COLUMNS))
    assert main(["report", str(root), "--replication", "--docs", str(docs)]) == 0
    rows = replication.read_table(docs / "replication_runs.csv")
    old, new = (next(r for r in rows if r["width"] == w) for w in (1000, 200))
    assert len(rows) == 2 and old["seed"] == 3 and old["train_run"] == "gone"  # the earlier row stays
    metrics = json.loads(next(p for p in root.rglob("metrics.json") if "attack-rate" in str(p)).read_text())
    assert (new["granule"], new["width"], new["ltd"], new["batch_size"]) == ("fc", 200, "none", 16)
    assert new["clean_accuracy"] == pytest.approx(metrics["clean_accuracy"])
    assert new["pgd_mse_eps0.1"] == pytest.approx(metrics["robust_acc_pgd_mse_eps0.1"])
    text = (docs / "replication.md").read_text()
    assert "| 200 | none | 16 | 1 |" in text and "| 1,000 | ma | 1 | 1 | 90.0 | 50.0 |" in text
    png = docs / "replication_width.png"  # the figure the document shows, with a panel per batch size
    assert "(replication_width.png)" in text and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(png).size[0] > 1.6 * Image.open(png).size[1]  # two panels side by side
    # a second pass adds nothing new
    assert main(["report", str(root), "--replication", "--docs", str(docs)]) == 0
    assert len(replication.read_table(docs / "replication_runs.csv")) == 2
    # rebuilt from the table alone (the run folders gone), the table is written as it was
    table = (docs / "replication_runs.csv").read_text()
    (tmp_path / "gone").mkdir()
    assert main(["report", str(tmp_path / "gone"), "--replication", "--docs", str(docs)]) == 0
    assert (docs / "replication_runs.csv").read_text() == table
    # a table that is not one is a one-line error and is left as it was
    (docs / "replication_runs.csv").write_text("a,b\n1,2\n")
    capsys.readouterr()
    assert main(["report", str(root), "--replication", "--docs", str(docs)]) == 2
    assert "not a replication table" in one_line_error(capsys.readouterr().err)
    assert (docs / "replication_runs.csv").read_text() == "a,b\n1,2\n"


def test_replication_document_holds_the_sparseness_sweep_and_the_four_models(tmp_path):
    """The sparseness sweep (random K with LTD) and the four models with the MLP get their own tables
    beside the paper's notebook numbers, sorted by K and in the paper's order; claims (4) and (5) read
    their numbers from the rows; a table written before the eps-0.3 columns existed still reads."""
    from analysis import replication

    def row(seed=0, **kw):
        r = {"granule": "fc", "width": 5970, "k": 0, "ltd": "none", "batch_size": 1, "seed": seed,
             "clean_accuracy": 0.95, "fgsm_mse_eps0.1": 0.3, "pgd_mse_eps0.1": 0.1, "strong_eps0.1": 0.01,
             "worst_eps0.1": 0.0, "pgd_mse_eps0.3": 0.02, "strong_eps0.3": 0.0, "checks_passed": True,
             "train_run": "t", "attack_run": "a"}
        r.update(kw)
        return r

    rows = [row(), row(seed=1, **{"fgsm_mse_eps0.1": 0.5}),
            row(ltd="ma", **{"pgd_mse_eps0.3": 0.25}),
            row(granule="random", k=4, width=200000, ltd="ma", **{"pgd_mse_eps0.1": 0.9}),
            row(granule="random", k=1, width=228571, ltd="ma", clean_accuracy=0.8, **{"pgd_mse_eps0.1": 0.4}),
            row(granule="random", k=784, width=5970, ltd="ma", **{"pgd_mse_eps0.1": 0.7}),
            row(granule="mlp", width=50, clean_accuracy=0.97)]
    docs = tmp_path / "docs"
    replication.write(rows, docs, [])
    text = replication.render(replication.read_table(docs / "replication_runs.csv"), [])
    sparse = text[text.index("## Sparse connectivity"):text.index("## The four models")]
    k_rows = [line for line in sparse.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [line.split(" | ")[0] for line in k_rows] == ["| 1", "| 4", "| 784"]  # by K
    assert k_rows[0] == "| 1 | 228,571 | 1 | 1 | 80.0 | 84.88 | 30.0 | 40.0 | 55.62 | 1.0 | 0.0 | 1 / 1 |"
    four = text[text.index("## The four models"):text.index("## Evidence")]
    names = [line.split(" | ")[0][2:] for line in four.splitlines() if line.startswith("| ") and "---" not in line]
    assert names == ["model", "Base", "Base+LTD", "Cerebellum", "MLP"]
    assert "| Base | 1 | 2 | 95.0 ± 0.0 | 96.6 | 40.0 ± 14.1 | 10.0 ± 0.0 |" in four
    assert "| Base+LTD | 1 | 1 | 95.0 | 96.93 | 30.0 | 10.0 | 1.0 | 0.0 | 25.0 | 24.585 | 0.0 | 1 / 1 |" in four
    assert "The MLP's own checks failed" not in four
    assert "| MLP | 1 | 1 | 97.0 | - |" in four  # the paper's baseline is another model
    assert "MSE-PGD 70.0% at K = 784 and 40.0% at K = 1" in text and "(the paper's MSE-PGD: 83.65% and 55.62%)" in text
    assert "Cerebellum 30.0% / 90.0% / 1.0%" in text and "(not run yet: Base+RC)" in text
    assert "random connectivity without LTD" not in text  # no Base+RC row: nothing to decompose
    # with Base+RC and the Cerebellum at batch size 16, where the Cerebellum's MSE-PGD figure comes from
    rc = row(granule="random", k=4, width=200000, ltd="none", **{"pgd_mse_eps0.1": 0.15, "strong_eps0.1": 0.02})
    c16 = row(granule="random", k=4, width=200000, ltd="ma", batch_size=16, **{"pgd_mse_eps0.1": 0.3})
    text = replication.render(rows + [rc, c16], [])
    assert ("random connectivity without LTD (Base+RC, 15.0%) is about as weak as Base (10.0%); the Cerebellum "
            "(random connectivity with the running-mean LTD) is at 90.0% at batch size 1 and at 30.0% at batch size 16"
            in text)
    assert "Under the strong evaluation the four models are at 1.0-2.0% at eps 0.1" in text
    text = replication.render(rows + [{**rc, "pgd_mse_eps0.1": 0.6}], [])
    assert "(Base+RC, 60.0%) is 50.0 points above Base (10.0%)" in text and "and at 30.0% at batch size 16" not in text
    assert (docs / "replication_sparseness.png").read_bytes()[:4] == b"\x89PNG"
    # an earlier table without the eps-0.3 columns
    with open(docs / "replication_runs.csv") as fh:
        lines = fh.read().splitlines()
    header = lines[0].split(",")
    drop = [header.index(c) for c in replication.EPS03]
    (docs / "old.csv").write_text("\n".join(",".join(v for i, v in enumerate(line.split(",")) if i not in drop)
                                            for line in lines) + "\n")
    old = replication.read_table(docs / "old.csv")
    assert len(old) == len(rows) and all(r["pgd_mse_eps0.3"] != r["pgd_mse_eps0.3"] for r in old)  # NaN
    text = replication.render(rows + [row(granule="mlp", width=50, seed=1, checks_passed=False)], [])
    assert "The MLP's own checks failed in 1 of 2 runs" in text
    assert "all-zero input gradient" not in text  # no run recorded why
    # a run that recorded the budget check's survivors says why the strong attack stopped
    flat = dict(checks_passed=False, budget_eps=0.5, budget_robust_acc=0.063, budget_left_zero_grad_frac=0.9)
    text = replication.render(rows + [row(granule="mlp", width=50, seed=1, **flat),
                                      row(granule="mlp", width=50, seed=2, **{**flat, "budget_robust_acc": 0.04})], [])
    assert ("(1 of these runs recorded it), the strong evaluation left 6.3% of the images robust at eps 0.5 "
            "(the check allows 5%), and at its last iterates 90.0% of those images have an all-zero input gradient"
            in text)
    # claim (3) speaks of the dense layer only: a robust MLP row does not widen its range
    text = replication.render(rows + [row(granule="mlp", width=50, seed=1, **{"strong_eps0.1": 0.9})], [])
    assert "every model run is at 1.0-1.0% at eps 0.1" in text
    # the sweeps without the dense width sweep keep claims (4) and (5)
    text = replication.render([r for r in rows if r["granule"] != "fc"], [])
    assert "(1)-(3) The dense width sweep is not in this table yet." in text and "(4) *Sparse connectivity*" in text
    # nothing of either study yet
    text = replication.render([row(width=1000)], [])
    assert text.count("Not run yet.") == 2 and "(4) The sparse-connectivity sweep is not in this table yet." in text


def test_replication_collects_the_mlp_baseline(tmp_path):
    """An MLP attack run becomes a replication row: granule ``mlp``, its hidden layer as the width."""
    from analysis import replication

    assert main(["train", "-q", "--model", "mlp", "--task", "digits", "--set", "model.hidden=12",
                 "--set", "train.epochs=1", "--out", str(tmp_path)]) == 0
    (run,) = find_runs(tmp_path, "mlp")
    res = cereb("attack", "-q", "--run", str(run), "--n", "20", "--out", str(tmp_path), *FAST)
    assert res.returncode == 0, res.stderr
    (row,) = replication.collect(tmp_path)
    assert (row["granule"], row["width"], row["k"], row["ltd"], row["batch_size"]) == ("mlp", 12, 0, "none", 16)
    assert replication.model_name({**row, "width": 50}) == "MLP" and row["train_run"] == run.name
    metrics = json.loads(next(p for p in tmp_path.rglob("metrics.json") if "attack-mlp" in str(p)).read_text())
    assert row["pgd_mse_eps0.3"] == pytest.approx(metrics["robust_acc_pgd_mse_eps0.3"])
    assert row["budget_eps"] == metrics["budget_eps"] and row["budget_robust_acc"] == metrics["budget_robust_acc"] <= 0.05


def test_claim_one_is_judged_from_the_slope_of_fgsm_robustness_against_width():
    """Claim (1) says "reproduces" only when the 95% interval of the slope of FGSM-MSE robust
    accuracy against log2(width) lies above zero; a flat sweep leaves it unresolved, a falling one
    contradicts it, and a peak short of the widest width is named."""
    from analysis import replication

    def rows(values):
        return [{"granule": "fc", "width": w, "k": 0, "ltd": "none", "batch_size": 1, "seed": s,
                 "clean_accuracy": 0.95, "fgsm_mse_eps0.1": v + 0.01 * s, "pgd_mse_eps0.1": 0.1,
                 "strong_eps0.1": 0.0, "worst_eps0.1": 0.0, "checks_passed": True, "train_run": "t",
                 "attack_run": "a"} for w, v in values.items() for s in range(2)]

    def claim(values):
        return next(x for x in replication.render(rows(values)).splitlines() if x.startswith("(1)"))

    rising = claim({1000: 0.2, 2000: 0.3, 4000: 0.4, 8000: 0.45})
    assert "*FGSM robustness grows with width* reproduces:" in rising
    assert "from 20.5% at width 1,000 to 45.5% at 8,000" in rising  # slope by hand: 42.5 / 5 = 8.5
    assert "+8.5 points per doubling" in rising and "over the 8 runs" in rising and "highest mean" not in rising
    flat = claim({1000: 0.3, 2000: 0.35, 4000: 0.25, 8000: 0.3})
    assert "is not resolved by the runs so far (the slope's interval includes zero)" in flat
    assert "the highest mean, 35.5%, is at width 2,000" in flat
    assert "does not reproduce: it falls with width" in claim({1000: 0.4, 2000: 0.3, 4000: 0.2})
    assert "(2 widths and 4 runs; the fit needs at least three widths and four runs)" in claim({1000: 0.2, 2000: 0.3})


def test_the_overall_conclusion_is_judged_against_chance_under_the_strong_evaluation():
    """The closing sentence of claim (3) says the paper's conclusion holds only when every dense run is
    below chance (10%) under the strong evaluation at eps 0.1, and "more strongly than its own attacks
    show" only when the strong evaluation is below FGSM-MSE and MSE-PGD in every run."""
    from analysis import replication

    def row(w, ltd, strong, fgsm=0.3, pgd=0.2):
        return {"granule": "fc", "width": w, "k": 0, "ltd": ltd, "batch_size": 1, "seed": 0, "clean_accuracy": 0.95,
                "fgsm_mse_eps0.1": fgsm, "pgd_mse_eps0.1": pgd, "strong_eps0.1": strong, "worst_eps0.1": strong,
                "checks_passed": True, "train_run": "t", "attack_run": "a"}

    def closing(rows):
        text = " ".join(replication.render(rows).splitlines())
        return text[text.index("So the paper's overall conclusion"):]

    rows = [row(1000, "none", 0.01), row(2000, "none", 0.02), row(1000, "ma", 0.0, pgd=0.7)]
    assert ("holds (all 3 dense runs are below chance, 10%, under the strong evaluation at eps 0.1), and holds more "
            "strongly than its own attacks show (the strong evaluation is below both FGSM-MSE and MSE-PGD in 3 of "
            "the 3 runs)") in closing(rows)
    rows[1] = row(2000, "none", 0.02, pgd=0.02)  # the paper's MSE-PGD already as low as the strong evaluation
    assert "holds (all 3" in closing(rows) and "though not more strongly than its own attacks show everywhere" \
        " (the strong evaluation is below both FGSM-MSE and MSE-PGD in 2 of the 3 runs)" in closing(rows)
    rows.append(row(4000, "ma", 0.25, pgd=0.8))
    assert ("does not hold for 1 of the 4 dense runs: under the strong evaluation they stay at or above chance (10%) "
            "at eps 0.1, up to 25.0% (width 4,000, with LTD, batch size 1).") in closing(rows)


def test_cost_table_gives_the_dense_throughput_of_every_layer_evaluated_as_a_dense_matrix():
    """The cost table's strong GFLOP/s is the dense layer's (4 x 784 x width per image-step): a random
    layer with 16 K >= 784 is evaluated as a dense matrix, and its recorded figure (counted over
    K) is scaled by 784 / K; a small-K layer (a gather) has no throughput columns."""
    from analysis import replication

    def row(granule, width, k, gflops, matmul=80.0):
        return {"granule": granule, "width": width, "k": k, "ltd": "ma", "batch_size": 1, "seed": 0,
                "clean_accuracy": 0.95, "fgsm_mse_eps0.1": 0.3, "pgd_mse_eps0.1": 0.5, "strong_eps0.1": 0.0,
                "worst_eps0.1": 0.0, "checks_passed": True, "train_run": "t", "attack_run": "a",
                "train_wall_s": 10.0, "attack_wall_s": 100.0, "wall_s_strong": 50.0, "strong_image_steps": 1000.0,
                "strong_gflops": gflops, "matmul_gflops": matmul, "load_per_core": 1.0, "torch_threads": 2.0}

    text = replication.render([row("fc", 1000, 0, 40.0), row("random", 11429, 400, 20.0), row("random", 200000, 4, 1.0)])
    table = {line.split(" | ")[0]: line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert table["| 1,000"][8:11] == ["40", "80", "0.5"]
    assert table["| 11,429 random K 400"][8:11] == ["39.2", "80", "0.49"]  # 20 x 784 / 400
    assert table["| 200,000 random K 4"][8:11] == ["-", "-", "-"]
    assert table["| 1,000"][-1] == "2 |"  # the torch threads the attacks ran on
    older = {**row("fc", 1000, 0, 40.0), "seed": 1}
    del older["torch_threads"]  # a run made before the threads were recorded
    text = replication.render([row("fc", 1000, 0, 40.0), older])
    line = next(x for x in text.splitlines() if x.startswith("| 1,000 | ma | 1 | 2 | 10 | 100 "))  # the cost row
    assert line.split(" | ")[-1] == "2 (1 of 2) |"  # the mean says how many runs it is over


def test_claim_two_compares_ltd_with_no_ltd_width_by_width_at_each_batch_size():
    """Claim (2) reproduces at a batch size only where LTD's MSE-PGD robust accuracy is above the same
    width's without LTD at every width run with both; above at none: it does not appear."""
    from analysis import replication

    def row(w, ltd, bs, pgd):
        return {"granule": "fc", "width": w, "k": 0, "ltd": ltd, "batch_size": bs, "seed": 0, "clean_accuracy": 0.95,
                "fgsm_mse_eps0.1": 0.3, "pgd_mse_eps0.1": pgd, "strong_eps0.1": 0.0, "worst_eps0.1": 0.0,
                "checks_passed": True, "train_run": "t", "attack_run": "a"}

    rows = [row(1000, "ma", 1, 0.6), row(1000, "none", 1, 0.1), row(2000, "ma", 1, 0.7), row(2000, "none", 1, 0.12),
            row(4000, "ma", 1, 0.8),  # no partner without LTD: not compared
            row(1000, "ma", 16, 0.11), row(1000, "none", 16, 0.13), row(2000, "ma", 16, 0.2), row(2000, "none", 16, 0.1)]
    line = next(x for x in replication.render(rows).splitlines() if x.startswith("(2)"))
    assert "at batch size 1 it reproduces (LTD higher at 2 of the 2 widths run with and without it, 1,000 to 2,000: " \
           "with LTD 60.0-70.0%, without 10.0-12.0%; the paper" in line
    assert "at batch size 16 it is mixed (LTD higher at 1 of the 2 widths" in line
    rows[-2]["pgd_mse_eps0.1"] = 0.05
    line = next(x for x in replication.render(rows).splitlines() if x.startswith("(2)"))
    assert "at batch size 16 it does not appear (LTD higher at 0 of the 2 widths" in line


def test_replication_evidence_tables_and_figures_come_from_the_committed_traces(tmp_path):
    """The evidence section is rebuilt from `replication_traces.csv` alone: a new run's traces
    replace that configuration's earlier ones (and only those), the summary row reads the first
    and last step, and the readout table averages the seeds that recorded the readout."""
    from analysis import replication

    def trace(ltd, seed, loss, step, loss_mean, margin, correct):
        return {"granule": "fc", "width": 1000, "k": 0, "ltd": ltd, "batch_size": 1, "seed": seed, "eps": 0.05,
                "loss": loss, "step": step, "n": 10, "loss_mean": loss_mean, "margin_mean": margin,
                "frac_correct": correct, "true_score_mean": 1.0, "other_score_mean": 0.1 * step, "grad_l2_mean": 1.0}

    old = [trace("ma", 0, "mse", s, 0.1 + s, 0.5, 1.0) for s in range(3)] + \
          [trace("none", 0, "mse", s, 0.2, 0.4, 0.9) for s in range(3)]
    new = [trace("ma", 0, "mse", s, 0.3 + s, 0.8 - 0.1 * s, 1.0 - 0.05 * s) for s in range(3)]
    merged = replication.merge_traces(old, new)
    assert len(merged) == 6 and sorted({t["loss_mean"] for t in merged if t["ltd"] == "ma"}) == [0.3, 1.3, 2.3]
    rows = [{"granule": "fc", "width": 1000, "k": 0, "ltd": "ma", "batch_size": 1, "seed": s,
             "clean_accuracy": 0.9, "fgsm_mse_eps0.1": 0.5, "pgd_mse_eps0.1": 0.6, "strong_eps0.1": 0.0,
             "worst_eps0.1": 0.0, "readout_weight_norm": norm, "clean_true_score_mean": 1.0,
             "clean_other_score_mean": 0.0, "clean_margin_mean": 0.5, "clean_mse_mean": 0.1,
             "checks_passed": False, "train_run": "t", "attack_run": "a"} for s, norm in ((0, 2.0), (1, 4.0))]
    docs = tmp_path / "docs"
    replication.write(rows, docs, merged)
    again = replication.read_traces(docs / "replication_traces.csv")
    assert len(again) == 6 and again[0]["loss"] == "mse"
    text = replication.render(replication.read_table(docs / "replication_runs.csv"), again)
    assert "| 1,000 | ma | 1 | 2 | 3 | 1 | 0 | 0.5 | 0.1 | 60.0 ± 0.0 | - | - |" in text  # means over the 2 seeds
    assert "| ma | 1 | mse | 0.05 | 10 | 0.3 -> 2.3 | 0.8 -> 0.6 | 1 -> 1 | 0 -> 0.2 | 90% |" in text
    assert (docs / "replication_pgd.png").read_bytes()[:4] == b"\x89PNG"
    (docs / "replication_traces.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="not a replication trace table"):
        replication.read_traces(docs / "replication_traces.csv")


# ----------------------------------------------------------------------------- executors and claims
STUDY_COMPARED = ("label", "model_kind", "seed", "status", "test_accuracy", "clean_accuracy", "robust_acc_pgd_mse_eps0.1",
                  "robust_acc_strong_eps0.1", "strong_eps_at_target", "robust_acc_worst_eps0.1", "checks_passed")


def test_dask_local_cluster_gives_the_local_executors_study(tmp_path):
    """A 4-job study on a 2-worker LocalCluster writes the same study.csv as the local process pool
    (every number; paths and wall times aside), and records its executor."""
    f = tmp_path / "tiny.yaml"
    f.write_text(STUDY)
    local, dask = tmp_path / "local", tmp_path / "dask"
    res = cereb("study", "-q", str(f), "--jobs", "2", "--out", str(local))
    assert res.returncode == 0, res.stderr
    res = cereb("study", "-q", str(f), "--executor", "dask", "--jobs", "2", "--out", str(dask))
    assert res.returncode == 0, res.stderr
    (a,), (b,) = find_runs(local, "study-tiny"), find_runs(dask, "study-tiny")
    rows_a, rows_b = read_csv(a / "study.csv"), read_csv(b / "study.csv")
    assert len(rows_a) == len(rows_b) == 4
    for ra, rb in zip(rows_a, rows_b):
        assert {k: ra[k] for k in STUDY_COMPARED} == {k: rb[k] for k in STUDY_COMPARED}
        assert Path(rb["train_run"]).is_relative_to(dask)
    assert json.loads((b / "metrics.json").read_text())["executor"] == "dask"
    assert len(find_runs(dask, "rate")) == 4 and len(find_runs(dask, "attack-rate")) == 4


def test_scheduler_needs_the_dask_executor(tmp_path, capsys):
    f = tmp_path / "tiny.yaml"
    f.write_text(STUDY)
    assert main(["study", "-q", str(f), "--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path)]) == 2
    assert "--scheduler needs --executor dask" in one_line_error(capsys.readouterr().err)


def test_killed_study_is_marked_interrupted_then_redone_and_finished_runs_reused(tmp_path):
    """SIGKILL leaves a run 'running' (no handler can run); the rerun marks it 'interrupted' (its
    pid is gone), redoes it, and reuses every run that had finished."""
    import os
    import signal

    f, out, proc = _study_caught_mid_attack(tmp_path, jobs=1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    status = lambda p: json.loads((p / "meta.json").read_text())["status"]  # noqa: E731
    (victim,) = find_runs(out, "attack-rate")
    assert status(victim) == "running"
    finished = [p for p in find_runs(out, "rate") if status(p) == "completed"]
    assert finished  # the training run of the first job
    res = cereb("study", "-q", str(f), "--jobs", "1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    meta = json.loads((victim / "meta.json").read_text())
    assert meta["status"] == "interrupted" and str(meta["pid"]) in meta["error"]
    assert all(status(p) == "completed" for p in finished)
    (srun,) = [p for p in find_runs(out, "study-tiny") if status(p) == "completed"]
    rows = read_csv(srun / "study.csv")
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    redone = [r for r in rows if Path(r["attack_run"]).name.split("_", 1)[1] == victim.name.split("_", 1)[1]]
    assert len(redone) == 1 and str(redone[0]["train_reused"]) == "True" and str(redone[0]["attack_reused"]) == "False"
    assert Path(redone[0]["attack_run"]) != victim
    assert {str(p) for p in finished} <= {r["train_run"] for r in rows}  # reused, not retrained
    assert not list(out.rglob(".claim_*"))  # every claim released


def test_two_workers_racing_for_one_run_compute_it_once(tmp_path):
    """Two processes open the same run at once: one computes it, the other waits for it and
    reuses it; a claim whose holder is dead is broken and its run marked interrupted."""
    import os
    import socket
    import textwrap

    from core.runs import open_run

    script = textwrap.dedent(f"""
        import sys, time
        from core import runs
        runs.POLL_S = 0.05
        with runs.open_run("race", {{"x": 1}}, 0, root={str(tmp_path)!r}) as run:
            if not run.reused:
                time.sleep(1.5)
                run.log_metrics(who=sys.argv[1])
            print(run.path, run.reused, run.metrics["who"])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, name], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    lines = [o[0].split() for o in outs]
    assert lines[0][0] == lines[1][0] and lines[0][2] == lines[1][2]  # one run, computed by one of them
    assert sorted(line[1] for line in lines) == ["False", "True"]
    assert len(find_runs(tmp_path, "race")) == 1
    # a stale claim (a pid that no longer exists on this host) does not block the next worker
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stuck = tmp_path / "race" / "20000101-000000_deadbeef00_s0"
    stuck.mkdir()
    (stuck / "meta.json").write_text(json.dumps({"status": "running", "pid": pid, "host": socket.gethostname()}))
    with open_run("race", {"x": 2}, 0, root=tmp_path) as run:
        chash = run.path.name.split("_")[1]
    claim = tmp_path / "race" / f".claim_{chash}_s0"
    claim.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "run": stuck.name}))
    stuck.rename(stuck.with_name(f"20000101-000000_{chash}_s0"))
    stuck = stuck.with_name(f"20000101-000000_{chash}_s0")
    with open_run("race", {"x": 2}, 0, root=tmp_path, force=True) as run:
        assert not run.reused and run.path != stuck
    assert json.loads((stuck / "meta.json").read_text())["status"] == "interrupted"
    assert not claim.exists() and os.getpid() > 0


def test_documented_slurm_config_builds_a_worker_job_script():
    """docs/jobqueue.yaml, as docs/cluster.md tells a user to install it, gives dask-jobqueue a
    SLURM job script for one 2-core worker running this project's environment (no SLURM needed)."""
    import dask
    import yaml
    from dask_jobqueue import SLURMCluster

    conf = yaml.safe_load((PROJECT_ROOT / "docs" / "jobqueue.yaml").read_text())
    # merged over dask-jobqueue's defaults, as Dask merges a user's configuration file
    with dask.config.set({f"jobqueue.slurm.{k}": v for k, v in conf["jobqueue"]["slurm"].items()}):
        cluster = SLURMCluster(scheduler_options={"dashboard_address": None})
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH -t 04:00:00" in script and "#SBATCH -J cereb-worker" in script
    assert "source ~/cereb/.venv/bin/activate" in script and "--nthreads 2" in script
    assert script.index("source ~/cereb/.venv/bin/activate") < script.index("distributed.cli.dask_worker")


def test_dry_run_prints_the_estimated_cost_per_job_kind(capsys):
    from core.study import estimate_cost

    assert main(["study", str(PROJECT_ROOT / "studies" / "full_mnist.yaml"), "--data-dir", "/some/mnist",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "estimated cost, spiking: 45 jobs" in out and "estimated cost, rate: 45 jobs" in out
    assert "estimated cost, all:" in out
    job = {"model_kind": "spiking", "overrides": {"model": {"width": 2000}, "task": {"name": "digits"}}}
    wide = {"model_kind": "spiking", "overrides": {"model": {"width": 8000}, "task": {"name": "digits"}}}
    spk = {"attack": {"n": 100}}
    # the default digits network's training took 248-277 s (two jobs side by side) on the machine
    # the model was fitted to
    assert 200 < estimate_cost(job, None, spk)[0] < 330
    assert estimate_cost(wide, None, spk)[0] > 2 * estimate_cost(job, None, spk)[0]
    assert estimate_cost(job, None, None)[1] == 0.0
    # the rate model's dense attack cost, against the paper-protocol width sweep's measured runs (one
    # core each): width 100,000 without LTD took 4,244 s, 50,000 with LTD 1,962 s
    def rate(width, ltd):
        j = {"model_kind": "rate", "overrides": {"model": {"width": width, "ltd": ltd}, "train": {"batch_size": 1},
                                                 "task": {"name": "mnist"}}}
        return estimate_cost(j, {"n": 1000}, None)[1]

    assert 0.8 * 4244 < rate(100_000, "none") < 1.25 * 4244 and 0.8 * 1962 < rate(50_000, "ma") < 1.25 * 1962
    # a small-K random layer is a blocked gather, against the sparseness and four-model studies'
    # measured runs: K 1 at width 228,571: 593 s; K 20 at 120,000: 4,147 s; K 4 at 200,000 at
    # batch size 16 without LTD: 1,911 s
    def gather(k, width, ltd="ma", batch=1):
        j = {"model_kind": "rate", "overrides": {"model": {"granule": "random", "k": k, "width": width, "ltd": ltd},
                                                 "train": {"batch_size": batch}, "task": {"name": "mnist"}}}
        return estimate_cost(j, {"n": 1000}, None)[1]

    assert 0.8 * 593 < gather(1, 228_571) < 1.25 * 593 and 0.8 * 4147 < gather(20, 120_000) < 1.25 * 4147
    assert 0.8 * 1911 < gather(4, 200_000, "none", 16) < 1.25 * 1911


def test_jobs_held_by_a_committed_findings_table_are_not_run_again(tmp_path, capsys):
    """A study spread over sessions on fresh machines: ``--skip-committed docs/findings_runs.csv``
    skips the jobs whose model, training configuration hash, seed and number of attacked images
    the table holds, and runs the rest."""
    from analysis.findings import RUN_COLUMNS
    from core.runs import write_csv
    from core.study import committed_jobs, train_config_hash

    f = tmp_path / "tiny.yaml"
    f.write_text(STUDY)
    study = load_study(f)
    by_label = {j["label"]: j for j in study["jobs"]}
    held, other_n = by_label["LTD width=60"], by_label["ltd=none width=90"]
    assert train_config_hash(held) != train_config_hash(by_label["LTD width=90"])

    def row(job, n_images, attack_run="attack-rate/x"):
        r = {c: "" for c in RUN_COLUMNS}
        r.update(model_kind=job["model_kind"], seed=job["seed"], config_hash=train_config_hash(job),
                 n_images=n_images, attack_run=attack_run, task="digits")
        return r

    table = tmp_path / "findings_runs.csv"
    write_csv(table, [row(held, 20), row(other_n, 100),  # attacked on another number of images: run
                      row(by_label["ltd=none width=60"], 20, attack_run="")],  # no attack run: run
              RUN_COLUMNS)
    assert [j["label"] for j in committed_jobs(study, table)] == ["LTD width=60"]
    # another seed is another job
    assert committed_jobs({**study, "jobs": [{**held, "seed": 1}]}, table) == []

    assert main(["study", "-q", str(f), "--out", str(tmp_path / "r"), "--dry-run", "--skip-committed",
                 str(table)]) == 0
    out = capsys.readouterr().out
    assert out.count("(committed: not run)") == 1 and "4 jobs, 1 held by" in out
    assert "estimated cost, rate: 3 jobs" in out

    out_dir = tmp_path / "r"
    assert main(["study", "-q", str(f), "--jobs", "1", "--out", str(out_dir), "--skip-committed", str(table)]) == 0
    assert len(find_runs(out_dir, "rate")) == 3 and len(find_runs(out_dir, "attack-rate")) == 3
    (srun,) = find_runs(out_dir, "study-tiny")
    status = {r["label"]: r["status"] for r in read_csv(srun / "study.csv")}
    assert status == {"LTD width=60": "committed", "LTD width=90": "ok", "ltd=none width=60": "ok",
                      "ltd=none width=90": "ok"}
    trained = {json.loads((p / "config.json").read_text())["model"]["width"] for p in find_runs(out_dir, "rate")}
    assert trained == {60, 90}

    assert main(["study", "-q", str(f), "--out", str(out_dir), "--skip-committed", str(tmp_path / "nope.csv")]) == 2
    assert "no committed table at" in one_line_error(capsys.readouterr().err)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")  # neither table: one line, not a traceback
    assert main(["study", "-q", str(f), "--out", str(out_dir), "--dry-run", "--skip-committed",
                 str(tmp_path / "other.csv")]) == 2
    assert "is not a findings table" in one_line_error(capsys.readouterr().err)


def test_jobs_held_by_a_committed_replication_table_are_not_run_again(tmp_path, capsys):
    """``--skip-committed docs/replication_runs.csv``: a rate or MLP job whose training hash and
    seed a row's ``train_run`` names (with an attack run) is held; another seed, a row without an
    attack run, or another configuration is not."""
    from analysis import replication
    from core.runs import write_csv
    from core.study import committed_jobs, train_config_hash

    f = tmp_path / "tiny.yaml"
    f.write_text("name: tiny\nseeds: [0]\nbase:\n  task.name: digits\nvariants:\n"
                 "  - {label: LTD width=60, model.width: 60, model.ltd: ma}\n"
                 "  - {label: LTD width=90, model.width: 90, model.ltd: ma}\n"
                 "  - {label: ltd=none width=90, model.width: 90, model.ltd: none}\n"
                 "  - {label: plain, model.width: 70}\n"
                 "  - {label: MLP, model_kind: mlp}\nattack:\n  n: 20\n")
    study = load_study(f)
    by_label = {j["label"]: j for j in study["jobs"]}
    held, mlp, bare = by_label["LTD width=60"], by_label["MLP"], by_label["ltd=none width=90"]

    def row(job, seed, attack_run="20261207-000000_abc_s0"):
        r = {c: "nan" for c in replication.COLUMNS}
        r.update(granule="fc", width=1, k=0, ltd="ma", batch_size=1, seed=seed, checks_passed="True",
                 train_run=f"20261207-000000_{train_config_hash(job)}_s{seed}", attack_run=attack_run)
        return r

    table = tmp_path / "replication_runs.csv"
    write_csv(table, [row(held, 0), row(mlp, 0), row(bare, 0, attack_run=""),
                      {**row(by_label["LTD width=90"], 1), "seed": 0}],  # the run's seed (s1) is not the row's
              list(replication.COLUMNS))
    assert sorted(j["label"] for j in committed_jobs(study, table)) == ["LTD width=60", "MLP"]
    assert committed_jobs({**study, "jobs": [{**held, "seed": 1}]}, table) == []
    assert main(["study", "-q", str(f), "--out", str(tmp_path / "r"), "--dry-run", "--skip-committed",
                 str(table)]) == 0
    assert "5 jobs, 2 held by" in capsys.readouterr().out
    write_csv(table, [{**row(held, 0), "train_run": "20261207-000000_0123456789_s0"}], list(replication.COLUMNS))
    assert main(["study", "-q", str(f), "--out", str(tmp_path / "r"), "--dry-run", "--skip-committed",
                 str(table)]) == 0
    assert "no job is held by" in capsys.readouterr().out  # said, not silent (e.g. another --data-dir spelling)
    table.write_text("granule,train_run\nfc,x\n")  # a replication table without its columns
    assert main(["study", "-q", str(f), "--out", str(tmp_path / "r"), "--dry-run", "--skip-committed",
                 str(table)]) == 2
    assert "not a replication table" in one_line_error(capsys.readouterr().err)
