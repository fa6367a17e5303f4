"""``cereb simulate``, the modellers' API (models.spiking.api) and the NWB layout (analysis.nwb).

A tiny untrained network on the digits task (64 fibres, 10 classes, 60 granule cells) stands in for
a trained run: the checks are about recording, trials, noise and files, not about learning.
"""
from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from analysis import nwb
from analysis.spikes import load_trial_spikes
from core.errors import CerebError, DataError
from core.runs import open_run, read_csv, save_npz
from models.spiking.params import SpikingConfig
from scripts.cli import main

CFG = SpikingConfig(width=60, pc_per_class=2, grc_per_goc=20, window_ms=100.0, dt_ms=0.2)
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from models.spiking.network import make_connectivity
    from models.spiking.train import save_checkpoint

    root = tmp_path_factory.mktemp("runs")
    conn = make_connectivity(CFG, 64, 10, seed=3)
    weights = np.random.default_rng(4).random((conn.n_grc, conn.n_pc))
    with open_run("spiking", {"model_kind": "spiking", "model": asdict(CFG), "task": {"name": "digits"}}, 0,
                  root=root) as run:
        save_checkpoint(run.file("checkpoint.npz"), CFG, conn, weights, 5)
    return run.path


@pytest.fixture(scope="module")
def net(tiny_run):
    from models.spiking.api import load_network

    return load_network(tiny_run)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_simulate_writes_spikes_nwb_rates_and_figures(tiny_run, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["simulate", "--run", str(tiny_run), "--index", "0,1", "--repeats", "3", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"input 0 \(test #0, label \d\): predicted( \d){3} over 3 trials", printed), printed
    assert "NWB valid" in printed
    (folder,) = (out / "simulate").iterdir()
    for name in ("spikes.npz", "spikes.nwb", "rates.csv", "config.json", "meta.json", "metrics.json",
                 "figures/raster.png", "figures/psth.png", "figures/class_rates.png"):
        assert (folder / name).is_file(), name
    trials = load_trial_spikes(folder / "spikes.npz")
    assert trials["pops"] == ["mf", "grc", "goc", "mli", "pc", "cf"]
    assert list(trials["trial_input"]) == [0, 0, 0, 1, 1, 1] and list(trials["trial_repeat"]) == [0, 1, 2] * 2
    assert trials["noise"] == "fresh" and not trials["olive"]
    assert all(len(i) == 0 for i, _ in trials["trains"]["cf"])  # olive off: climbing fibres silent
    assert sum(len(i) for i, _ in trials["trains"]["mf"]) > 0
    rows = read_csv(folder / "rates.csv")
    assert len(rows) == 6 * 6 and {r["population"] for r in rows} == set(trials["pops"])
    # the NWB file validates and holds the same spikes, trial by trial
    assert nwb.validate_nwb(folder / "spikes.nwb") == []
    back = nwb.read_nwb(folder / "spikes.nwb")
    assert back["pops"] == trials["pops"] and back["n"] == trials["n"]
    np.testing.assert_array_equal(back["trial_input"], trials["trial_input"])
    np.testing.assert_array_equal(back["trial_predicted"], trials["trial_predicted"])
    for pop in trials["pops"]:
        for (i0, t0), (i1, t1) in zip(trials["trains"][pop], back["trains"][pop]):
            o0, o1 = np.lexsort((i0, t0)), np.lexsort((i1, t1))
            np.testing.assert_array_equal(i0[o0], i1[o1])
            np.testing.assert_allclose(t0[o0], t1[o1], atol=1e-9)
    # a rerun reuses the completed folder
    assert main(["simulate", "--run", str(tiny_run), "--index", "0,1", "--repeats", "3", "--out", str(out), "-q"]) == 0
    assert "reusing completed run" in capsys.readouterr().out


def test_frozen_repeats_are_identical_and_fresh_ones_differ(net):
    from models.spiking.api import simulate

    x, y = net.test_set()
    frozen = simulate(net, x[:1], labels=y[:1], repeats=3, noise="frozen", record=("mf", "grc", "pc"))
    for pop in ("mf", "grc", "pc"):
        first = frozen.spikes(pop, 0)
        for k in (1, 2):
            np.testing.assert_array_equal(frozen.spikes(pop, k)[0], first[0])
            np.testing.assert_array_equal(frozen.spikes(pop, k)[1], first[1])
    fresh = simulate(net, x[:1], labels=y[:1], repeats=3, noise="fresh", record=("mf", "pc"), seed=1)
    mf = [fresh.spikes("mf", k) for k in range(3)]
    assert not all(len(a[0]) == len(mf[0][0]) and np.array_equal(a[1], mf[0][1]) for a in mf[1:])
    again = simulate(net, x[:1], labels=y[:1], repeats=3, noise="fresh", record=("mf", "pc"), seed=1)
    for k in range(3):  # the same seed gives the same trials
        np.testing.assert_array_equal(again.spikes("mf", k)[1], fresh.spikes("mf", k)[1])
    np.testing.assert_array_equal(again.scores_hz, fresh.scores_hz)
    # frozen noise is the attack suite's realisation: noise slot 0 of the network's own seed
    from models.spiking.engine import SpikingEngine

    with SpikingEngine(net.cfg, net.conn, net.weights, seed=net.seed, workers=1) as eng:
        ref = eng.predict(x[:1], noise="frozen", slots=np.zeros(1, dtype=np.int64)).scores
    np.testing.assert_allclose(frozen.scores_hz[0], ref[0])


def test_olive_on_fires_climbing_fibres_and_changes_no_weight(net, tiny_run, tmp_path):
    from models.spiking.api import simulate

    x, y = net.test_set()
    rec = simulate(net, x[:2], labels=y[:2], repeats=2, noise="frozen", olive=True, record=("pc", "cf"))
    assert rec.olive and rec.n_trials == 4
    assert sum(len(i) for i, _ in rec.trains["cf"]) > 0
    np.testing.assert_array_equal(rec.spikes("cf", 0)[1], rec.spikes("cf", 1)[1])  # frozen: same trial twice
    # the olive run's Purkinje output equals inference's on the same noise (the olive does not feed back
    # within a trial except through plasticity, which is off)
    off = simulate(net, x[:2], labels=y[:2], repeats=1, noise="frozen", record=("pc",))
    np.testing.assert_allclose(rec.scores_hz[[0, 2]], off.scores_hz)
    with pytest.raises(CerebError, match="needs labels"):
        simulate(net, x[:1], olive=True)


def test_from_attack_presents_clean_and_adversarial_pairs(tiny_run, net, tmp_path, capsys):
    x, y = net.test_set()
    adv = np.clip(x[:10] + 0.1, 0, 1)
    with open_run("attack-spiking", {"model_kind": "spiking", "source_run": f"spiking/{tiny_run.name}"}, 0,
                  root=tmp_path) as run:
        save_npz(run.file("adversarials.npz"), x_clean=x[:10], y=y[:10], **{
            "hybrid_margin.eps": np.array([0.0, 0.1]), "hybrid_margin.x_adv": np.stack([x[:10], adv])})
    out = tmp_path / "res"
    assert main(["simulate", "--run", str(tiny_run), "--from-attack", str(run.path), "--index", "2",
                 "--out", str(out), "-q"]) == 0
    (folder,) = (out / "simulate").iterdir()
    trials = load_trial_spikes(folder / "spikes.npz")
    assert list(trials["input_condition"]) == ["clean", "adversarial"]
    np.testing.assert_allclose(trials["x"], np.stack([x[2], adv[2]]))
    assert list(trials["input_label"]) == [y[2], y[2]]
    capsys.readouterr()
    assert main(["simulate", "--run", str(tiny_run), "--from-attack", str(run.path), "--eps", "0.3",
                 "--out", str(out), "-q"]) == 2
    assert "at eps 0, 0.1, not at --eps 0.3" in _one_error_line(capsys)


def test_from_attack_default_picks_examples_that_fooled_the_frozen_network(net):
    from models.spiking.api import simulate
    from scripts.simulate import fooling_examples

    x, y = net.test_set()
    pred = simulate(net, x[:30], repeats=1, noise="frozen", record=("pc",)).predicted
    right = np.flatnonzero(pred == y[:30])
    assert len(right) >= 4, "the tiny network must get 4 of 30 test images right"
    xc, yc = x[right[:4]], y[right[:4]]
    xa = xc.copy()  # examples 1 and 3 become images the network calls another class; 0 and 2 stay clean
    for k in (1, 3):
        xa[k] = x[next(j for j in range(30) if pred[j] != yc[k])]
    assert fooling_examples(net, xc, xa, yc) == [1, 3]
    assert fooling_examples(net, xc, xc, yc) == [0, 1]  # none fooled: the first two


@pytest.mark.parametrize("case, message", [
    ("index", "past the end of the test set"),
    ("shape", "holds an array of shape (3, 5)"),
    ("range", "must be finite numbers in [0, 1]"),
    ("population", "unknown population 'dcn'"),
    ("missing", "does not exist"),
    ("olive-npy", "give --label"),
])
def test_bad_input_gives_one_clear_line(tiny_run, tmp_path, capsys, case, message):
    argv = ["simulate", "--run", str(tiny_run), "--out", str(tmp_path / "res"), "-q"]
    if case == "index":
        argv += ["--index", "0,100000"]
    elif case in ("shape", "range", "olive-npy"):
        arr = {"shape": np.zeros((3, 5)), "range": np.full((2, 64), 1.5), "olive-npy": np.zeros((1, 64))}[case]
        np.save(tmp_path / "x.npy", arr)
        argv += ["--npy", str(tmp_path / "x.npy")] + (["--olive"] if case == "olive-npy" else [])
    elif case == "population":
        argv += ["--record", "pc,dcn"]
    elif case == "missing":
        argv[2] = str(tmp_path / "nothing")
    assert main(argv) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "res" / "simulate").exists()  # nothing half-written


def test_read_nwb_says_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        nwb.read_nwb(tmp_path / "none.nwb")
    (tmp_path / "bad.nwb").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="not a readable NWB file"):
        nwb.read_nwb(tmp_path / "bad.nwb")


def test_readme_api_example_runs(tiny_run, tmp_path, monkeypatch):
    """The README's Python example, run as written, on the tiny network."""
    text = README.read_text()
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README has no api-example block"
    code = m.group(1)
    assert 'RUN = "results/spiking/<run folder>"' in code
    code = code.replace('RUN = "results/spiking/<run folder>"', f"RUN = {str(tiny_run)!r}")
    monkeypatch.chdir(tmp_path)
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {}
    exec(compile(code, "README api-example", "exec"), namespace)
    assert (tmp_path / "raster.png").is_file()
    assert namespace["rec"].n_trials == 6
