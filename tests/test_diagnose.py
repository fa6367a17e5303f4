"""The learning diagnosis: readout ceilings under the Purkinje cell's sign constraint."""
import numpy as np
import pytest

from scripts.diagnose import nonneg_readout


def _task(n=600, seed=0):
    # class 1 iff feature 0 is active and feature 1 is not: needs a negative weight on feature 1
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 6)) < 0.5).astype(float)
    y = ((x[:, 0] > 0) & (x[:, 1] == 0)).astype(int)
    return x, y


def test_nonneg_readout_respects_the_sign_and_needs_the_subtractive_term():
    x, y = _task()
    plain = nonneg_readout(x, y, 2, subtractive=False, lam=1e-3)
    sub = nonneg_readout(x, y, 2, subtractive=True, lam=1e-3)
    acc_plain = (plain(x).argmax(1) == y).mean()
    acc_sub = (sub(x).argmax(1) == y).mean()
    assert acc_sub == pytest.approx(1.0)
    assert acc_plain < acc_sub  # without a subtractive term a feature can only add evidence


def test_nonneg_readout_matches_least_squares_when_the_constraint_is_inactive():
    rng = np.random.default_rng(1)
    x = rng.random((400, 5))
    w_true = np.array([[1.0, 0.2], [0.5, 0.9], [0.3, 0.3], [0.8, 0.1], [0.1, 0.7]])
    y = (x @ w_true).argmax(1)
    score = nonneg_readout(x, y, 2, subtractive=False, lam=1e-6, iters=4000)
    f = np.c_[x, np.ones(len(x))]
    t = np.eye(2)[y]
    ls = np.linalg.lstsq(f, t, rcond=None)[0]
    if (ls[:5] >= 0).all():
        assert np.allclose(score(x), f @ ls, atol=1e-3)
    else:  # the constrained optimum is no worse than the unconstrained one restricted to w >= 0
        assert ((score(x) - t) ** 2).sum() <= ((f @ np.c_[np.maximum(ls[:5], 0).T, ls[5:].T].T - t) ** 2).sum() + 1e-6


def test_diagnose_on_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    from scripts.cli import main

    assert main(["diagnose", "learning", "--run", str(tmp_path / "missing")]) == 2
    (tmp_path / "config.json").write_text("{}")
    assert main(["diagnose", "learning", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no config.json" in err[0] and "checkpoint not found" in err[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # nothing written
