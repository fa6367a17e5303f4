"""The attack checks that can fail: each catches the bug planted for it and stays quiet on a healthy model.

Planted: a broken PGD (it never moves), a gradient-masked model (its logits see a rounded input, so
every input gradient is zero), a budget too small (the strong sweep stopped at eps 0.02); and a
one-image difference between two attacks, which must not fail a check.
"""
from __future__ import annotations

import foolbox as fb
import numpy as np
import pytest
import torch

from attacks.checks import (budget_survivors, check_budget, check_dominance, check_gradient_masking, check_zero_gradients,
                            judged_index)
from attacks.config import AttackConfig
from attacks.evaluate import Evaluation, evaluate_attack
from attacks.foolbox_attacks import FGSM, PGD, uniform_noise
from attacks.stats import add_intervals, mcnemar, proportion_ci
from attacks.suite import run_suite
from core.runs import open_run
from models.rate import RateConfig, RateTrainConfig, fit, load, predict_labels
from tasks import TaskConfig, load_task


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    ds = load_task(TaskConfig(name="digits"))
    root = tmp_path_factory.mktemp("runs")
    with open_run("rate", {"model_kind": "rate", "model": RateConfig(width=200).__dict__}, 0, root=root) as run:
        fit("rate", ds, RateConfig(width=200), RateTrainConfig(epochs=2), 0, run)
    model = load(run.path)
    return model, ds.x_test[:80].copy(), ds.y_test[:80].copy()


class Rounded(torch.nn.Module):
    """The trained model behind a rounding of its input: same decisions, zero gradients."""

    def __init__(self, inner: torch.nn.Module, levels: int = 4):
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x):
        return self.inner(torch.round(x * self.levels) / self.levels)


def _predict(model):
    def predict(a):
        with torch.no_grad():
            return model(torch.as_tensor(np.array(a, dtype=np.float32))).argmax(1).numpy()
    return predict


class Frozen(PGD):
    """A broken PGD: it returns the clean inputs whatever the budget."""

    def run(self, model, inputs, criterion, *, epsilon, **kwargs):
        return inputs


# ----------------------------------------------------------------------------- statistics
def test_intervals_and_paired_test_match_scipy_and_textbook_values():
    lo, hi = proportion_ci(50, 100)
    assert lo == pytest.approx(0.3983, abs=1e-3) and hi == pytest.approx(0.6017, abs=1e-3)
    assert proportion_ci(0, 20)[0] == 0.0 and proportion_ci(20, 20)[1] == 1.0
    rows = [{"n": 10, "n_correct": 3}, {"n": 0, "n_correct": 0}]
    add_intervals(rows)
    assert 0 < rows[0]["ci_low"] < 0.3 < rows[0]["ci_high"] < 1 and np.isnan(rows[1]["ci_low"])
    a = np.array([True] * 10 + [False] * 10)
    t = mcnemar(a, np.zeros(20, bool))
    assert (t.only_a, t.only_b) == (10, 0) and t.p_value == pytest.approx(2 * 0.5 ** 10)
    assert mcnemar(a, a).p_value == 1.0


# ----------------------------------------------------------------------------- dominance
def _ev(correct_by_eps, eps=(0.0, 0.1)):
    c = np.asarray(correct_by_eps, dtype=bool)
    rows = [{"eps": e, "robust_acc": float(c[i].mean())} for i, e in enumerate(eps)]
    return Evaluation(rows, list(eps), c, np.zeros((len(eps), c.shape[1], 1), np.float32), c[0].copy())


def test_a_one_image_difference_is_not_a_failure_but_a_real_gap_is():
    clean = np.ones(100, bool)
    fgsm = clean.copy()
    fgsm[:50] = False
    pgd_one_worse = fgsm.copy()
    pgd_one_worse[0] = True  # PGD misses one image FGSM fooled
    msgs, outs = check_dominance({"pgd/mse": _ev([clean, pgd_one_worse]), "fgsm/mse": _ev([clean, fgsm])},
                                 [("pgd/mse", "fgsm/mse")])
    assert msgs == [] and len(outs) == 1 and outs[0].passed
    pgd_much_worse = clean.copy()
    pgd_much_worse[:10] = False
    msgs, outs = check_dominance({"pgd/mse": _ev([clean, pgd_much_worse]), "fgsm/mse": _ev([clean, fgsm])},
                                 [("pgd/mse", "fgsm/mse")])
    assert len(msgs) == 1 and "pgd/mse is weaker than fgsm/mse" in msgs[0] and "40 images fooled only by fgsm" in msgs[0]
    assert not outs[0].passed


def test_dominance_catches_a_broken_pgd_and_passes_a_working_one(healthy):
    model, x, y = healthy
    fmodel, predict = fb.PyTorchModel(model, bounds=(0, 1)), _predict(model)
    eps = (0.0, 0.1, 0.2)
    fgsm = evaluate_attack(FGSM(loss="ce"), fmodel, predict, x, y, eps, model="m", attack="fgsm", loss="ce")
    good = evaluate_attack(PGD(loss="ce", steps=10, rel_stepsize=0.25), fmodel, predict, x, y, eps, model="m",
                           attack="pgd", loss="ce")
    broken = evaluate_attack(Frozen(loss="ce", steps=10), fmodel, predict, x, y, eps, model="m", attack="pgd", loss="ce")
    assert check_dominance({"pgd/ce": good, "fgsm/ce": fgsm}, [("pgd/ce", "fgsm/ce")])[0] == []
    msgs, _ = check_dominance({"pgd/ce": broken, "fgsm/ce": fgsm}, [("pgd/ce", "fgsm/ce")])
    assert msgs and all("pgd/ce is weaker than fgsm/ce" in m for m in msgs)


# ----------------------------------------------------------------------------- gradient masking
def test_masked_gradients_are_caught_and_a_healthy_model_is_not(healthy):
    model, x, y = healthy
    masked = Rounded(model).eval()
    cfg = AttackConfig(n=len(y), eps=(0.0, 0.1, 0.3), losses=("ce",), pgd_steps=10, pgd_stepsize=0.03,
                       strong_steps=20, strong_restarts=1, strong_rel_stepsize=0.1, trace=False)
    sick = run_suite(fb.PyTorchModel(masked, bounds=(0, 1)), _predict(masked), x, y, cfg, model="masked")
    assert not sick.checks_passed
    # masking shows as an attack too weak to break the model at L-inf 0.5, and as zero gradients
    assert any(m.startswith("attack too weak: strong") for m in sick.messages), sick.messages
    assert any("all-zero ce input gradient" in m for m in sick.messages)
    assert sick.metrics["zero_gradient_frac"] == 1.0
    # ... and the budget check says why the strong attack stopped: every image it left is flat
    too_weak = next(m for m in sick.messages if m.startswith("attack too weak: strong"))
    assert "images left have an all-zero ce input gradient" in too_weak
    assert sick.metrics["budget_eps"] >= 0.5 and sick.metrics["budget_robust_acc"] > 0.05
    assert sick.metrics["budget_left_zero_grad_frac"] == 1.0
    ok = run_suite(fb.PyTorchModel(model, bounds=(0, 1)), _predict(model), x, y, cfg, model="rate")
    assert ok.checks_passed, ok.messages
    assert ok.metrics["zero_gradient_frac"] == 0.0
    assert ok.metrics["budget_robust_acc"] <= 0.05
    kinds = {c["check"] for c in ok.metrics["checks"]}
    assert kinds == {"dominance", "gradient_masking", "budget", "zero_gradients"}
    assert all(c["passed"] for c in ok.metrics["checks"])
    # every row carries its interval
    assert all(r["ci_low"] <= r["robust_acc"] <= r["ci_high"] for r in ok.rows)


def test_zero_gradient_check_alone(healthy):
    model, x, y = healthy
    msgs, outs, frac = check_zero_gradients(fb.PyTorchModel(Rounded(model).eval(), bounds=(0, 1)), x, y)
    assert frac == 1.0 and msgs and not outs[0].passed
    msgs, outs, frac = check_zero_gradients(fb.PyTorchModel(model, bounds=(0, 1)), x, y)
    assert frac == 0.0 and msgs == [] and outs[0].passed


def test_noise_beating_fgsm_on_a_masked_model_is_caught(healthy):
    model, x, y = healthy
    masked = Rounded(model).eval()
    fmodel, predict = fb.PyTorchModel(masked, bounds=(0, 1)), _predict(masked)
    kw = dict(model="m", seed=0)
    noise = evaluate_attack(uniform_noise(), fmodel, predict, x, y, (0.0, 0.6), attack="noise", loss="none", **kw)
    fgsm = evaluate_attack(FGSM(loss="ce"), fmodel, predict, x, y, (0.0, 0.6), attack="fgsm", loss="ce", **kw)
    msgs, outs = check_gradient_masking({"fgsm/ce": fgsm, "noise/none": noise}, gradient=["fgsm/ce"],
                                        gradient_free=["noise/none"])
    assert len(msgs) == 1 and "noise/none beats the gradient attack fgsm/ce" in msgs[0], msgs
    fmodel, predict = fb.PyTorchModel(model, bounds=(0, 1)), _predict(model)
    noise = evaluate_attack(uniform_noise(), fmodel, predict, x, y, (0.0, 0.6), attack="noise", loss="none", **kw)
    fgsm = evaluate_attack(FGSM(loss="ce"), fmodel, predict, x, y, (0.0, 0.6), attack="fgsm", loss="ce", **kw)
    assert check_gradient_masking({"fgsm/ce": fgsm, "noise/none": noise}, gradient=["fgsm/ce"],
                                  gradient_free=["noise/none"])[0] == []


def test_gradient_masking_check_compares_only_what_it_is_given():
    clean = np.ones(60, bool)
    strong_attack = clean.copy()
    strong_attack[:40] = False
    weak_noise = clean.copy()
    weak_noise[:3] = False
    evals = {"pgd/ce": _ev([clean, strong_attack]), "noise/none": _ev([clean, weak_noise])}
    assert check_gradient_masking(evals, gradient=["pgd/ce"], gradient_free=["noise/none"])[0] == []
    assert check_gradient_masking(evals, gradient=["pgd/ce"], gradient_free=[])[0] == []
    swapped = {"pgd/ce": evals["noise/none"], "noise/none": evals["pgd/ce"]}
    assert check_gradient_masking(swapped, gradient=["pgd/ce"], gradient_free=["noise/none"])[0]


# ----------------------------------------------------------------------------- budget
def test_a_budget_too_small_is_caught(healthy):
    model, x, y = healthy
    fmodel, predict = fb.PyTorchModel(model, bounds=(0, 1)), _predict(model)
    strong = [PGD(loss="margin", steps=20, rel_stepsize=0.1)]
    short = evaluate_attack(strong, fmodel, predict, x, y, (0.0, 0.02), model="m", attack="strong", loss="margin",
                            until_acc=0.01, eps_step=0.01, eps_max=0.02)
    msgs, outs = check_budget("strong", short)
    assert msgs and msgs[0].startswith("attack too weak: strong") and not outs[0].passed
    full = evaluate_attack(strong, fmodel, predict, x, y, (0.0, 0.1), model="m", attack="strong", loss="margin",
                           until_acc=0.01, eps_step=0.1, eps_max=1.0)
    msgs, outs = check_budget("strong", full)
    assert msgs == [] and outs[0].passed


def test_budget_survivors_are_the_images_left_at_the_judged_eps_at_their_last_iterates():
    eps = [0.0, 0.3, 0.5, 0.6]
    correct = np.array([[1, 1, 1, 1], [1, 1, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1]], bool)
    adversarial = np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2)
    ev = Evaluation(rows=[{"eps": e, "robust_acc": c.mean()} for e, c in zip(eps, correct)], epsilons=eps,
                    correct=correct, adversarial=adversarial)
    y = np.array([3, 4, 5, 6])
    e, xs, ys = budget_survivors(ev, y)
    assert e == 0.5 and ys.tolist() == [4, 6]  # the first eps >= 0.5, not the sweep's last
    np.testing.assert_array_equal(xs, adversarial[2][[1, 3]])
    short = Evaluation(rows=ev.rows[:2], epsilons=eps[:2], correct=correct[:2], adversarial=adversarial[:2])
    e, xs, ys = budget_survivors(short, y)  # the sweep stopped short: its last eps is the one judged
    assert e == 0.3 and ys.tolist() == [3, 4, 6]
    assert budget_survivors(None, y)[0] is None
    for sweep in (ev, short):  # the survivors come from the eps the budget check judges
        assert check_budget("strong", sweep)[1][0].eps == budget_survivors(sweep, y)[0]
    assert judged_index([0.0, 0.2, 0.45]) == 2 and judged_index([0.1, 0.5, 0.7], 0.5) == 1
    with pytest.raises(ValueError, match="empty eps sweep"):
        judged_index([])


# ----------------------------------------------------------------------------- Square (ART), score-based
def test_square_attack_runs_in_the_suite_and_exposes_masked_gradients(healthy):
    from attacks.square import Square

    model, x, y = healthy
    cfg = AttackConfig(n=len(y), eps=(0.0, 0.1, 0.3), losses=("ce",), pgd_steps=10, pgd_stepsize=0.03,
                       strong_steps=20, strong_restarts=1, strong_rel_stepsize=0.1, trace=False, square=True,
                       square_iters=200)
    ok = run_suite(fb.PyTorchModel(model, bounds=(0, 1)), _predict(model), x, y, cfg, model="rate")
    sq = {r["eps"]: r for r in ok.rows if r["attack"] == "square"}
    assert set(sq) == {0.0, 0.1, 0.3} and sq[0.3]["robust_acc"] < sq[0.0]["robust_acc"]
    assert all(r["max_linf"] <= r["eps"] + 1e-6 for r in sq.values())
    assert ok.checks_passed, ok.messages
    masked = Rounded(model).eval()
    sick = run_suite(fb.PyTorchModel(masked, bounds=(0, 1)), _predict(masked), x, y, cfg, model="masked")
    assert any("square/none beats the gradient attack fgsm/ce" in m for m in sick.messages), sick.messages
    # queries: every scored input is counted
    atk = Square(iterations=5)
    evaluate_attack(atk, fb.PyTorchModel(model, bounds=(0, 1)), _predict(model), x[:10], y[:10], (0.1,),
                    model="m", attack="square", loss="none")
    assert atk.queries >= 10  # at least the first evaluation of each image, and every later one counted
    with pytest.raises(ValueError, match="norm"):
        Square(norm="l1")
