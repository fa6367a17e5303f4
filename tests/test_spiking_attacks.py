"""The attack suite against the spiking cerebellum (``attacks/spiking.py``, ``cereb attack`` on a
spiking run).

- :class:`SpikingBlackBox` on a real (tiny) spiking engine: frozen noise is deterministic and
  independent of a query's position in the batch (every query is in slot 0), fresh noise is
  not, the query count is exact.
- :class:`HybridPGD` with a cheap linear "surrogate" and a threshold "spiking" decider: an image
  stops at the first iterate that the decider misclassifies, within eps.
- ``_reevaluate`` carries a fooling example forward under a planted non-monotone predictor.
- :func:`run_spiking_suite` on a linear stand-in for the engine: the checks pass on a correct
  run and report each planted bug (PGD ignoring eps, L2 PGD ignoring eps, a hybrid attack that
  does nothing, a decision-based attack that never succeeds).
- :class:`SpikingAttackConfig` validation.
- ``cereb attack --run`` end to end on a tiny spiking run folder, and its error exit.

The spiking networks have the shape of the engines of ``tests/test_spiking.py`` (width 60,
2 Purkinje cells per class, 20 granule cells per Golgi cell, 16 inputs, 2 classes, 7 copies per
network), so Brian2's compiled code in the project cache is shared. The run folder for the
end-to-end test is not trained by the Brian2 standalone trainer (minutes to build): its PF-PC
weights are set in one shot from the class means of the granule activity of the training
patterns (a Hebbian readout about ``w_init`` with a fitted class balance), which classifies the
patterns above chance.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import asdict, replace
from types import SimpleNamespace

import foolbox as fb
import numpy as np
import pytest
import torch

from attacks import spiking
from attacks.evaluate import Evaluation
from attacks.spiking import (DECISION_ATTACKS, SPIKING_COLUMNS, HybridPGD, SpikingAttackConfig, SpikingBlackBox,
                             _reevaluate, run_spiking_suite)
from core.errors import CerebError
from models.spiking.params import SpikingConfig

N_IN, N_CLASSES = 16, 2
CFG = SpikingConfig(width=60, pc_per_class=2, grc_per_goc=20, window_ms=100.0, dt_ms=0.2)
BATCH, CHUNKS = 7, 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ============================================================================ the black box
@pytest.fixture(scope="module")
def engine():
    from models.spiking.engine import SpikingEngine
    from models.spiking.network import make_connectivity

    conn = make_connectivity(CFG, N_IN, N_CLASSES, seed=1)
    weights = np.random.default_rng(2).random((conn.n_grc, conn.n_pc))
    with SpikingEngine(CFG, conn, weights, batch_size=BATCH, chunks_per_run=CHUNKS, workers=1, noise="frozen",
                       seed=11) as eng:
        yield eng


def test_frozen_black_box_is_deterministic_and_position_free(engine):
    bb = SpikingBlackBox(engine)
    rng = np.random.default_rng(0)
    x = rng.random((10, N_IN))
    first = bb.scores(x)
    assert first.shape == (10, N_CLASSES)
    np.testing.assert_array_equal(bb.scores(x), first)
    # the same inputs in another order, in another batch, alone: the same answers (all in slot 0)
    perm = rng.permutation(10)
    np.testing.assert_array_equal(bb.scores(x[perm]), first[perm])
    mixed = np.concatenate([rng.random((5, N_IN)), x[3:4], rng.random((2, N_IN))])
    np.testing.assert_array_equal(bb.scores(mixed)[5], first[3])
    np.testing.assert_array_equal(bb.scores(x[7:8])[0], first[7])
    np.testing.assert_array_equal(bb.labels(x), first.argmax(1))
    # it is the engine's slot 0; not vacuous: other slots see other noise, and inputs matter
    np.testing.assert_array_equal(engine.predict(x[7:8], slots=np.array([0])).scores[0], first[7])
    grc = engine.predict(np.repeat(x[7:8], 4, axis=0), slots=np.arange(4)).counts["grc"]
    assert not all(np.array_equal(grc[0], g) for g in grc[1:])
    assert len({tuple(r) for r in first}) > 1


def test_black_box_counts_every_query(engine):
    bb = SpikingBlackBox(engine)
    x = np.random.default_rng(1).random((9, N_IN))
    assert bb.queries == 0
    bb.scores(x)
    bb.labels(x[:4])
    bb.fresh_scores(x[:2])
    bb.scores(x[:0])
    assert bb.queries == 9 + 4 + 2
    assert bb.wall_s > 0
    # inputs are clipped to [0, 1] (attacks may overshoot by rounding), not refused
    np.testing.assert_array_equal(bb.scores(np.clip(x[:3] * 3 - 1, -1, 2)), bb.scores(np.clip(x[:3] * 3 - 1, 0, 1)))
    assert bb.queries == 15 + 6


def test_fresh_noise_differs_between_calls(engine):
    bb = SpikingBlackBox(engine)
    x = np.random.default_rng(2).random((10, N_IN))
    frozen = bb.scores(x)
    fresh = [bb.fresh_scores(x) for _ in range(3)]
    assert any(not np.array_equal(f, frozen) for f in fresh)
    assert any(not np.array_equal(a, b) for a, b in zip(fresh, fresh[1:]))
    np.testing.assert_array_equal(bb.scores(x), frozen)  # and frozen noise is still frozen afterwards


# ============================================================================ EOT hybrid on a toy stochastic model
class NoisyThreshold:
    """A toy stochastic "spiking network" with the black box's interface: class scores
    ``[0.5, x_0] + noise``. Frozen noise (slot 0) adds a fixed 0.06 to class 1, so the frozen
    network is fooled at x_0 > 0.44; fresh noise is Gaussian (sd 0.05 per class), so an input is
    fooled on most fresh trials only once x_0 > 0.5. Counts queries as SpikingBlackBox does."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.queries = 0

    def scores(self, x, noise: str = "frozen"):
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        self.queries += len(x)
        s = np.stack([np.full(len(x), 0.5), x[:, 0]], axis=1)
        if noise == "frozen":
            return s + np.array([0.0, 0.06])
        return s + self.rng.normal(0, 0.05, s.shape)

    def labels(self, x):
        return self.scores(x).argmax(1)

    def fresh_scores(self, x):
        return self.scores(x, noise="fresh")


def test_noise_averaged_hybrid_beats_the_frozen_hybrid_under_fresh_noise():
    """Frozen-noise adversarials of the toy sit just past the frozen boundary and mostly fail on
    fresh trials; the EOT hybrid keeps moving until most fresh trials fail, so its fresh-noise
    success is higher, and it pays repeats x images queries per step."""
    from attacks.spiking import EOTHybridPGD, fresh_votes

    n, eps, steps, repeats = 40, 0.2, 20, 9
    x = np.full((n, N_IN), 0.3, dtype=np.float32)
    x[:, 0] = np.linspace(0.30, 0.34, n)  # class 0 under every noise
    y = np.zeros(n, dtype=np.int64)
    bb = NoisyThreshold()
    assert np.all(bb.labels(x) == 0) and fresh_votes(bb, x, y, repeats)[0].mean() > 0.95
    frozen = HybridPGD(bb.labels, loss="margin", steps=steps, abs_stepsize=0.01, random_start=False)
    eot = EOTHybridPGD(bb, repeats, loss="margin", steps=steps, abs_stepsize=0.01, random_start=False)
    adv_frozen = _run_attack(frozen, x, y, eps)
    q0 = bb.queries
    adv_eot = _run_attack(eot, x, y, eps)
    assert eot.queries == bb.queries - q0 == steps * repeats * n  # every fresh trial of every step is charged
    assert np.all(bb.labels(adv_frozen) == 1)  # the frozen hybrid fools the frozen network everywhere ...
    fresh_ok_frozen, _ = fresh_votes(bb, adv_frozen, y, 25)
    fresh_ok_eot, _ = fresh_votes(bb, adv_eot, y, 25)
    # ... but mostly not under fresh noise; the noise-averaged attack does much better
    assert (~fresh_ok_frozen).mean() < 0.3
    assert (~fresh_ok_eot).mean() > (~fresh_ok_frozen).mean() + 0.4
    assert np.abs(adv_eot - x).max() <= eps + 1e-6


# ============================================================================ hybrid PGD
class ThresholdSurrogate(torch.nn.Module):
    """Logits ``[0, 10 (x_0 - 0.5)]``: the margin loss of class 0 climbs along x_0 only."""

    def forward(self, x):
        x = x.reshape(len(x), -1)
        z = 10.0 * (x[:, :1] - 0.5)
        return torch.cat([torch.zeros_like(z), z], 1)


def threshold_decider(calls: list):
    """The "spiking network": class 1 iff x_0 > 0.5. Records each call's inputs."""

    def labels(x):
        x = np.asarray(x)
        calls.append(x.copy())
        return (x[:, 0] > 0.5).astype(np.int64)

    return labels


def _hybrid_inputs():
    x = np.full((3, N_IN), 0.3, dtype=np.float32)
    x[:, 0] = [0.9, 0.455, 0.1]  # fooled from the start / fooled after 5 steps / out of reach at eps 0.1
    return x, np.zeros(3, dtype=np.int64)


def _run_attack(attack, x, y, eps):
    fmodel = fb.PyTorchModel(ThresholdSurrogate().eval(), bounds=(0, 1), device="cpu")
    _, clipped, _ = attack(fmodel, torch.from_numpy(x), torch.from_numpy(y), epsilons=[eps])
    return clipped[0].numpy()


def test_hybrid_pgd_stops_where_the_spiking_network_is_fooled():
    x, y = _hybrid_inputs()
    calls: list = []
    eps, steps, step = 0.1, 20, 0.01
    hyb = HybridPGD(threshold_decider(calls), loss="margin", steps=steps, abs_stepsize=step, random_start=False)
    adv = _run_attack(hyb, x, y, eps)
    # one decision per image per step, counted exactly
    assert len(calls) == steps and all(len(c) == 3 for c in calls)
    assert hyb.queries == steps * 3
    # image 0, misclassified by the decider at the start: never moves
    np.testing.assert_array_equal(adv[0], x[0])
    # image 1: the first iterate past the threshold (5 steps), then it stays there
    assert adv[1, 0] == pytest.approx(0.505, abs=1e-5)
    # image 2: never fooled, walks to the edge of the ball
    assert adv[2, 0] == pytest.approx(0.2, abs=1e-6)
    np.testing.assert_array_equal(adv[:, 1:], x[:, 1:])  # the gradient is zero elsewhere
    assert np.abs(adv - x).max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    # the decider saw image 1 fooled in the last steps
    assert calls[-1][1, 0] > 0.5
    # not vacuous: the same PGD without the spiking decisions walks image 1 on to the edge
    plain = _run_attack(spiking.PGD(loss="margin", steps=steps, abs_stepsize=step, random_start=False), x, y, eps)
    assert plain[1, 0] == pytest.approx(0.555, abs=1e-5) and plain[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("eps", [0.02, 0.3])
def test_hybrid_pgd_stays_within_eps_with_random_start(eps):
    x, y = _hybrid_inputs()
    x = np.concatenate([x, np.random.default_rng(3).random((5, N_IN)).astype(np.float32)])
    y = np.zeros(len(x), dtype=np.int64)
    calls: list = []
    hyb = HybridPGD(threshold_decider(calls), loss="margin", steps=6, abs_stepsize=0.05, random_start=True)
    torch.manual_seed(0)
    adv = _run_attack(hyb, x, y, eps)
    assert np.abs(adv - x).max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert hyb.queries == 6 * len(x)
    # an image misclassified at its (random) start stays there: its last two decisions are the same point
    fooled_at_start = calls[0][:, 0] > 0.5
    assert fooled_at_start[0]
    np.testing.assert_array_equal(adv[fooled_at_start], calls[0][fooled_at_start])


# ============================================================================ re-evaluation
def test_reevaluate_never_lets_robust_accuracy_rise():
    """A planted non-monotone predictor: fooled only when 0.55 < x_0 < 0.65. The attack at eps 0.1
    lands images 0 and 1 inside that band, at eps 0.2 beyond it; image 3 is wrong when clean."""
    eps = [0.0, 0.1, 0.2]
    x = np.full((4, N_IN), 0.5, dtype=np.float32)
    x[3, 0] = 0.6
    y = np.zeros(4, dtype=np.int64)
    adv = np.repeat(x[None], 3, axis=0)
    adv[1, :2, 0] = 0.6
    adv[2, :2, 0] = 0.7
    adv[2, 2, 0] = 0.52  # image 2: never fooled

    def predict(a):
        a = np.asarray(a)
        return ((a[:, 0] > 0.55) & (a[:, 0] < 0.65)).astype(np.int64)

    naive = [float(np.mean((predict(x) == y) & (predict(adv[k]) == y))) for k in range(3)]
    assert naive[2] > naive[1]  # the planted predictor does break monotonicity
    rows = [{"model": "surrogate", "attack": "pgd", "loss": "margin", "eps": e, "seed": 0, "n": 4, "n_correct": 4,
             "robust_acc": 1.0, "mean_linf": 0.0, "mean_l2": 0.0, "max_linf": 0.0} for e in eps]
    ev = Evaluation(rows, eps, np.ones((3, 4), bool), adv.copy(), np.ones(4, bool))
    out = _reevaluate(ev, predict, x, y, model="spiking", attack="transfer-x")
    acc = [r["robust_acc"] for r in out.rows]
    assert acc == [0.75, 0.25, 0.25]
    assert all(a >= b for a, b in zip(acc, acc[1:]))
    np.testing.assert_array_equal(out.correct, [[1, 1, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(out.clean_correct, [True, True, True, False])
    # the carried examples are the eps-0.1 ones, which do fool the predictor
    np.testing.assert_array_equal(out.adversarial[2, :2], adv[1, :2])
    assert np.all(predict(out.adversarial[2, :2]) != 0)
    np.testing.assert_array_equal(out.adversarial[2, 2], adv[2, 2])
    assert all(r["model"] == "spiking" and r["attack"] == "transfer-x" for r in out.rows)
    assert [r["n_correct"] for r in out.rows] == [3, 1, 1]
    # norms describe the examples kept
    assert out.rows[2]["max_linf"] == pytest.approx(0.1, abs=1e-6)
    assert out.rows[2]["mean_linf"] == pytest.approx((0.1 + 0.1 + 0.02 + 0.0) / 4, abs=1e-6)
    # the input evaluation is left alone
    np.testing.assert_array_equal(ev.adversarial, adv)
    assert ev.rows[2]["robust_acc"] == 1.0


# ============================================================================ the suite on a stand-in engine
class LinearEngine:
    """Stands in for :class:`~models.spiking.engine.SpikingEngine`: scores ``x W^T + b``, plus
    Gaussian noise on the scores with ``noise='fresh'``. Records each call's size, mode and slots."""

    def __init__(self, w: np.ndarray, b: np.ndarray, fresh_sd: float = 0.3):
        self.w, self.b, self.fresh_sd = w, b, fresh_sd
        self.calls: list[tuple[int, str, np.ndarray]] = []
        self.rng = np.random.default_rng(0)

    def predict(self, x, *, noise=None, slots=None, seed=None):
        x = np.asarray(x, dtype=np.float64)
        assert x.ndim == 2 and x.shape[1] == self.w.shape[1]
        assert x.min(initial=0) >= 0 and x.max(initial=0) <= 1
        self.calls.append((len(x), noise, np.asarray(slots)))
        s = x @ self.w.T + self.b
        if noise == "fresh":
            s = s + self.rng.normal(0.0, self.fresh_sd, s.shape)
        return SimpleNamespace(scores=s)


class LinearSurrogate(torch.nn.Module):
    def __init__(self, w: np.ndarray, b: np.ndarray):
        super().__init__()
        self.register_buffer("w", torch.tensor(w, dtype=torch.float32))
        self.register_buffer("b", torch.tensor(b, dtype=torch.float32))

    def forward(self, x):
        return x.reshape(len(x), -1).to(torch.float32) @ self.w.T + self.b


N_SUITE = 24
SUITE_CFG = SpikingAttackConfig(n=N_SUITE, eps=(0.0, 0.02, 0.05, 0.1), l2_eps=(0.05, 0.2, 1.0), pgd_steps=10,
                                pgd_rel_stepsize=0.3, hybrid_steps=10, decision=("hsja-l2",), max_queries=100,
                                fresh_repeats=2, fresh_eps=(0.05,))


@pytest.fixture(scope="module")
def linear_task():
    """A two-class linear problem in [0.3, 0.7]^16; two labels are wrong (clean accuracy 22/24)."""
    rng = np.random.default_rng(10)
    w = rng.normal(size=(N_CLASSES, N_IN))
    b = -w @ np.full(N_IN, 0.5)
    x = rng.uniform(0.3, 0.7, (N_SUITE, N_IN)).astype(np.float32)
    y = (x @ w.T + b).argmax(1)
    y[[4, 9]] = 1 - y[[4, 9]]
    x_pool = rng.uniform(0.0, 1.0, (60, N_IN)).astype(np.float32)
    y_pool = (x_pool @ w.T + b).argmax(1)
    return w, b, x, y, x_pool, y_pool


def run_suite(linear_task, cfg=SUITE_CFG):
    w, b, x, y, x_pool, y_pool = linear_task
    eng = LinearEngine(w, b)
    bb = SpikingBlackBox(eng)
    res = run_spiking_suite(bb, LinearSurrogate(w, b), x, y, cfg, seed=0, x_pool=x_pool, y_pool=y_pool)
    return res, bb, eng


@pytest.fixture(scope="module")
def clean_suite(linear_task):
    return run_suite(linear_task)


def test_suite_checks_pass_on_a_correct_run(clean_suite, linear_task):
    res, bb, eng = clean_suite
    w, b, x, y, _, _ = linear_task
    m = res.metrics
    assert m["check_messages"] == [] and m["checks_passed"] is True
    assert m["clean_accuracy"] == pytest.approx(22 / 24) and m["surrogate_clean_accuracy"] == pytest.approx(22 / 24)
    # every query went through the black box and was counted, in slot 0 except the noise-averaged
    # decision's and scores' fixed realisations (frozen slots 1..fresh_repeats, 1..square_repeats)
    assert bb.queries == sum(n for n, _, _ in eng.calls)
    R = max(SUITE_CFG.fresh_repeats, SUITE_CFG.square_repeats)
    assert all(np.all(slots == 0) or (mode == "frozen" and np.all(slots == slots[0]) and 1 <= slots[0] <= R)
               for _, mode, slots in eng.calls)
    assert any(mode == "frozen" and len(slots) and slots[0] == SUITE_CFG.fresh_repeats for _, mode, slots in eng.calls)
    assert any(mode == "frozen" and len(slots) and slots[0] == SUITE_CFG.square_repeats for _, mode, slots in eng.calls)
    assert {mode for _, mode, _ in eng.calls} == {"frozen", "fresh"}
    # rows: every attack, the columns of the table, both noise modes
    attacks = {(r["attack"], r["model"], r["noise_mode"]) for r in res.rows}
    for expected in [("noise", "spiking", "frozen"), ("fgsm", "surrogate", "frozen"), ("fgsm", "spiking", "frozen"),
                     ("pgd", "spiking", "frozen"), ("pgd", "spiking", "fresh"), ("pgd-l2", "spiking", "frozen"),
                     ("hybrid", "spiking", "frozen"), ("hybrid", "spiking", "fresh"), ("hsja-l2", "spiking", "frozen"),
                     ("eot-hybrid", "spiking", "fresh"), ("hsja-linf-fresh", "spiking", "fresh"),
                     ("square", "spiking", "fresh"), ("square", "spiking", "frozen")]:
        assert expected in attacks
    for r in res.rows:
        assert set(SPIKING_COLUMNS) <= set(r), r
        assert 0 <= r["robust_acc"] <= 1 and r["norm"] in ("linf", "l2")
    frozen = [r for r in res.rows if r["noise_mode"] == "frozen"]
    groups: dict = {}
    for r in frozen:
        groups.setdefault((r["model"], r["attack"], r["loss"]), []).append(r)
    for key, rows in groups.items():
        acc = [r["robust_acc"] for r in sorted(rows, key=lambda r: r["eps"])]
        assert all(a >= b for a, b in zip(acc, acc[1:])), (key, acc)
    # the attacks do work on this problem: PGD transfers perfectly (the stand-in is the surrogate)
    pgd = {r["eps"]: r["robust_acc"] for r in frozen if r["attack"] == "pgd" and r["loss"] == "margin"
           and r["model"] == "spiking"}
    assert pgd[0.0] == pytest.approx(22 / 24) and pgd[0.1] < 0.2
    hyb = {r["eps"]: r["robust_acc"] for r in frozen if r["attack"] == "hybrid"}
    assert all(hyb[e] <= pgd[e] for e in pgd)
    assert m["robust_acc_worst_eps0.1"] <= pgd[0.1]
    # the per-image worst case: robust only if robust under every L-inf attack on the spiking network
    worst = {r["eps"]: r for r in frozen if r["attack"] == "worst" and r["model"] == "spiking"}
    assert set(worst) == {0.0, 0.02, 0.05, 0.1}
    for e, r in worst.items():
        others = [o["n_correct"] for o in frozen if o["model"] == "spiking" and o["norm"] == "linf"
                  and o["attack"] != "worst" and o["eps"] == e]
        assert r["n_correct"] <= min(others) and r["ci_low"] <= r["robust_acc"] <= r["ci_high"]
    assert m["robust_acc_worst_eps0.1"] == worst[0.1]["robust_acc"]
    assert 0 <= m["surrogate_agreement_adv_eps0.1"] <= 1
    assert len(res.transfer) > 0 and {t["target"] for t in res.transfer} == {"spiking"}
    fresh = [r for r in res.rows if r["noise_mode"] == "fresh"]
    assert {r["eps"] for r in fresh} == {0.05}
    assert all(0 <= r["success_prob"] <= 1 for r in fresh if np.isfinite(r["success_prob"]))
    # the noise-averaged HopSkipJump: each decision is R charged simulations, within the budget
    (hsja_fresh,) = [r for r in fresh if r["attack"] == "hsja-linf-fresh"]
    R = SUITE_CFG.fresh_repeats
    assert hsja_fresh["queries"] % R == 0 and hsja_fresh["queries"] <= R * SUITE_CFG.max_queries * N_SUITE
    assert m["hsja-linf-fresh_queries_per_image"] == pytest.approx(hsja_fresh["queries"] / N_SUITE, abs=0.1)


def test_suite_decision_attack_results(clean_suite, linear_task):
    res, _, _ = clean_suite
    w, b, x, y, _, _ = linear_task
    d = res.decision["hsja-l2"]
    assert set(d) == {"x_clean", "x_adv", "y", "pred_clean", "pred_adv", "l2", "linf", "queries", "success",
                      "success_prob", "scores_adv", "tied", "silent"}
    ok = d["pred_clean"] == y
    # tie flags of what the black box answers for the adversarials (a linear model's float scores never tie)
    np.testing.assert_array_equal(d["scores_adv"].argmax(1), d["pred_adv"])
    tied, silent = spiking.tie_flags(d["scores_adv"])
    np.testing.assert_array_equal(d["tied"], tied)
    np.testing.assert_array_equal(d["silent"], silent)
    assert res.metrics["hsja-l2_tied_frac"] == pytest.approx(float(tied[d["success"] & ok].mean()))
    assert ok.sum() == 22 and res.metrics["hsja-l2_success_rate"] == 1.0
    assert np.all(d["queries"] <= SUITE_CFG.max_queries)  # the hard budget per image
    s = d["success"] & ok
    delta = d["x_adv"].astype(np.float64) - x.astype(np.float64)
    np.testing.assert_allclose(d["l2"][s], np.sqrt((delta[s] ** 2).sum(1)), rtol=1e-5)
    # a point of another class is at least the exact distance to the decision boundary away
    dw = w[1] - w[0]
    margin = np.abs(x.astype(np.float64) @ dw + (b[1] - b[0]))
    assert np.all(d["l2"][s] >= margin[s] / np.linalg.norm(dw) - 1e-5)
    assert np.all(d["pred_adv"][s] != y[s])
    assert res.metrics["hsja-l2_median_l2"] == pytest.approx(float(np.median(d["l2"][s])))
    l2_rows = sorted((r for r in res.rows if r["attack"] == "hsja-l2"), key=lambda r: r["eps"])
    assert [r["eps"] for r in l2_rows] == list(SUITE_CFG.l2_eps)
    for r in l2_rows:
        assert r["robust_acc"] == pytest.approx(np.mean(ok & ~(s & (d["l2"] <= r["eps"]))))


class _EpsTimes3:
    """Planted bug: the attack is called with three times the budget it was given."""

    def __call__(self, model, inputs, criterion, *, epsilons, **kwargs):
        return super().__call__(model, inputs, criterion, epsilons=[3 * e for e in epsilons], **kwargs)


class _NoOp:
    """An "attack" that returns the images unchanged."""

    def __call__(self, model, inputs, criterion, *, epsilons):
        return inputs, [inputs for _ in epsilons], None


def _plant_pgd_ignores_eps(monkeypatch):
    import attacks.foolbox_attacks as fa  # where the attack table's factories (attacks.specs) find PGD

    monkeypatch.setattr(fa, "PGD", type("GreedyPGD", (_EpsTimes3, fa.PGD), {}))


def _plant_l2_ignores_eps(monkeypatch):
    monkeypatch.setattr(spiking, "L2PGD", type("GreedyL2PGD", (_EpsTimes3, spiking.L2PGD), {}))


def _plant_idle_hybrid(monkeypatch):
    real = spiking.evaluate_attack

    def evaluate(attacks, *args, **kwargs):
        if kwargs.get("attack") == "hybrid":
            attacks = [_NoOp()]
        return real(attacks, *args, **kwargs)

    monkeypatch.setattr(spiking, "evaluate_attack", evaluate)


def _plant_failing_decision(monkeypatch):
    import attacks.decision as decision

    real = decision.run_decision_attack

    def run(*args, **kwargs):
        res = real(*args, **kwargs)
        fail = res.pred_clean == np.asarray(args[2])
        return replace(res, success=res.success & ~fail, l2=np.where(fail, np.inf, res.l2),
                       linf=np.where(fail, np.inf, res.linf))

    monkeypatch.setattr(decision, "run_decision_attack", run)


PLANTED = {
    "pgd_ignores_eps": (_plant_pgd_ignores_eps, r"pgd/margin eps=0\.05: perturbation \S+ exceeds eps"),
    "l2_pgd_ignores_eps": (_plant_l2_ignores_eps, r"pgd-l2 eps=0\.2: L2 perturbation \S+ exceeds eps"),
    "idle_hybrid": (_plant_idle_hybrid, r"spiking eps=0\.\d+: hybrid/margin on its own restarts is weaker than pgd/margin"),
    "failing_decision": (_plant_failing_decision, r"hsja-l2: the unbounded decision-based attack fooled only 0\.0%"),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_suite_checks_catch_a_planted_bug(case, monkeypatch, linear_task):
    plant, pattern = PLANTED[case]
    plant(monkeypatch)
    cfg = SUITE_CFG if case == "failing_decision" else replace(SUITE_CFG, decision=(), fresh_repeats=0)
    res, _, _ = run_suite(linear_task, cfg)
    messages = res.metrics["check_messages"]
    assert res.metrics["checks_passed"] is False
    assert any(re.search(pattern, msg) for msg in messages), messages


# ============================================================================ configuration
@pytest.mark.parametrize("bad, fragment", [
    (dict(eps=(0.0, -0.1)), "attack.eps must be >= 0"),
    (dict(eps=(float("nan"),)), "attack.eps must be >= 0"),
    (dict(l2_eps=(-1.0,)), "attack.l2_eps must be >= 0"),
    (dict(fresh_eps=(-0.2,)), "attack.fresh_eps must be >= 0"),
    (dict(decision=("hsja-l2", "square")), "unknown decision-based attack 'square'"),
    (dict(losses=("margin", "hinge")), "unknown attack loss 'hinge'"),
    (dict(n=0), "attack.n"),
    (dict(pgd_steps=0), "pgd_steps"),
    (dict(hybrid_steps=0), "hybrid_steps"),
    (dict(restarts=0), "restarts"),
    (dict(pgd_rel_stepsize=0.0), "pgd_rel_stepsize"),
    (dict(max_queries=2), "max_queries"),
    (dict(fresh_repeats=-1), "fresh_repeats"),
    (dict(n=10, decision_n=11), "decision_n"),
    (dict(decision_n=0), "decision_n"),
    (dict(headline_eps=(-0.1,)), "attack.headline_eps must be >= 0"),
])
def test_spiking_attack_config_rejects_bad_values(bad, fragment):
    with pytest.raises((ValueError, CerebError), match=re.escape(fragment)):
        SpikingAttackConfig(**bad)


def test_spiking_attack_config_accepts_good_values():
    cfg = SpikingAttackConfig(n=10, eps=(0.0,), l2_eps=(), decision=DECISION_ATTACKS, decision_n=10, max_queries=3,
                              fresh_repeats=0, losses=("margin", "ce", "mse"))
    assert cfg.decision == DECISION_ATTACKS


# ============================================================================ cereb attack, end to end
TASK = dict(name="patterns", n_patterns=40, dim=N_IN, pattern_kind="gaussian", test_per_pattern=1)


@pytest.fixture(scope="module")
def spiking_run(tmp_path_factory):
    """A completed spiking run folder (config, meta, metrics, checkpoint) on 16-dimensional patterns."""
    from core.config import to_dict
    from core.runs import open_run
    from models.spiking.engine import SpikingEngine
    from models.spiking.network import initial_weights, make_connectivity
    from models.spiking.params import SpikingTrainConfig
    from models.spiking.train import save_checkpoint
    from tasks import TaskConfig, load_task

    task = TaskConfig(**TASK)
    ds = load_task(task)
    conn = make_connectivity(CFG, N_IN, N_CLASSES, seed=0)
    w0 = initial_weights(CFG, conn, 0)
    with SpikingEngine(CFG, conn, w0, batch_size=BATCH, chunks_per_run=CHUNKS, workers=1, seed=0) as eng:
        grc = eng.predict(ds.x_train).counts["grc"].astype(np.float64)
        diff = grc[ds.y_train == 1].mean(0) - grc[ds.y_train == 0].mean(0)

        def readout(bias: float) -> np.ndarray:
            """Weights about w_init (where the interneurons' inhibition balances the PF input): up
            for class 1 and down for class 0 on the fibres more active for class 1, shifted by bias."""
            w = np.empty_like(w0)
            for c, sign in ((0, -1.0), (1, 1.0)):
                w[:, c * CFG.pc_per_class:(c + 1) * CFG.pc_per_class] = \
                    np.clip(CFG.w_init + sign * (2.0 * diff / np.abs(diff).max() + bias), 0, CFG.w_max)[:, None]
            return w

        # the Purkinje cells' intrinsic drives differ from cell to cell, so the balance of the two
        # classes is fitted: bisection on the mean score difference over the training patterns
        lo, hi = -0.5, 0.5
        for _ in range(8):
            eng.set_weights(readout(0.5 * (lo + hi)))
            s = eng.predict(ds.x_train).scores
            lo, hi = (0.5 * (lo + hi), hi) if (s[:, 1] - s[:, 0]).mean() < 0 else (lo, 0.5 * (lo + hi))
        w = readout(0.5 * (lo + hi))
        eng.set_weights(w)
        acc = float((eng.predict(ds.x_test).labels == ds.y_test).mean())
    config = {"model_kind": "spiking", "task": to_dict(task), "model": asdict(CFG),
              "train": asdict(SpikingTrainConfig(epochs=0))}
    root = tmp_path_factory.mktemp("runs")
    with open_run("spiking", config, 0, root=root) as run:
        save_checkpoint(run.path / "checkpoint.npz", CFG, conn, w, 0, {"task": ds.name, "n_inputs": ds.n_inputs})
        run.log_metrics(test_accuracy=acc)
    assert acc >= 0.6, acc  # the readout does classify the patterns
    return run.path, ds


ATTACK_ARGS = ["--n", "8", "--set", "attack.eps=0,0.1", "--set", "attack.l2_eps=1.0", "--set", "attack.max_queries=30",
               "--set", "attack.pgd_steps=5", "--set", "attack.hybrid_steps=5", "--set", "attack.fresh_repeats=1",
               "--set", "attack.decision=hsja-l2", "--set", "surrogate.n_calibration=40",
               "--set", "surrogate.n_fidelity=20", "--set", "surrogate.fit_steps=30", "--set", "engine.workers=1",
               "--set", f"engine.batch_size={BATCH}", "--set", f"engine.chunks_per_run={CHUNKS}",
               "--set", "attack.square_iters=50"]

ROBUSTNESS_COLUMNS = ["model", "attack", "loss", "eps", "seed", "n", "n_correct", "robust_acc", "mean_linf", "mean_l2",
                      "queries", "noise_mode", "success_prob"]


def test_cereb_attack_on_a_spiking_run(spiking_run, tmp_path, capsys):
    from core.runs import load_npz, read_csv
    from models.surrogate import POPS, load_surrogate
    from scripts.cli import main

    run_dir, ds = spiking_run
    rc = main(["attack", "--run", str(run_dir), *ATTACK_ARGS, "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc in (0, 1), err[-3000:]
    runs = list((tmp_path / "attack-spiking").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert f"run: {run}" in out
    for name in ("robustness.csv", "transfer.csv", "decision_hsja-l2.npz", "fidelity.npz", "surrogate.npz",
                 "spikes.npz", "adversarials.npz", "metrics.json", "config.json", "meta.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "meta.json").read_text())["status"] == "completed"
    config = json.loads((run / "config.json").read_text())
    assert config["model_kind"] == "spiking" and config["attack"]["n"] == 8 and config["attack"]["eps"] == [0.0, 0.1]
    # the spike-domain settings stay out of a pixel run's identity (its hash is what it was before them)
    assert not [k for k in config["attack"] if k in ("domain", "shift_ms") or k.startswith(("spike_", "silence_"))]

    # robustness.csv
    with open(run / "robustness.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert set(ROBUSTNESS_COLUMNS) <= set(header), header
    rows = read_csv(run / "robustness.csv")
    attacks = {r["attack"] for r in rows}
    assert {"noise", "fgsm", "pgd", "pgd-l2", "hybrid", "hsja-l2"} <= attacks
    assert {r["noise_mode"] for r in rows} == {"frozen", "fresh"}
    for r in rows:
        assert 0 <= r["robust_acc"] <= 1 and r["n"] == 8 and r["queries"] >= 0
        assert r["eps"] in ((0.0, 0.1) if r["norm"] == "linf" else (1.0,))
    # transfer.csv
    transfer = read_csv(run / "transfer.csv")
    assert transfer and {t["source"] for t in transfer} >= {"surrogate", "hybrid"}

    # the decision-based attack: per-image arrays, the hard budget
    d = load_npz(run / "decision_hsja-l2.npz")
    assert set(d) == {"x_clean", "x_adv", "y", "pred_clean", "pred_adv", "l2", "linf", "queries", "success",
                      "success_prob", "scores_adv", "tied", "silent"}
    assert d["scores_adv"].shape == (8, 2) and "hsja-l2_tied_frac" in json.loads((run / "metrics.json").read_text())
    assert d["x_clean"].shape == d["x_adv"].shape == (8, N_IN)
    np.testing.assert_allclose(d["x_clean"], ds.x_test[:8], rtol=1e-6)
    np.testing.assert_array_equal(d["y"], ds.y_test[:8])
    assert np.all(d["queries"] <= 30) and np.all(d["queries"] >= 1)
    assert d["x_adv"].min() >= 0 and d["x_adv"].max() <= 1
    s = d["success"]
    np.testing.assert_allclose(d["l2"][s], np.linalg.norm(d["x_adv"][s].astype(np.float64) - d["x_clean"][s], axis=1),
                               rtol=1e-4, atol=1e-6)

    # metrics and the checks
    m = json.loads((run / "metrics.json").read_text())
    for key in ("fidelity_agreement", "fidelity_r_grc", "fidelity_r_goc", "fidelity_r_pc", "fidelity_readout_r2",
                "clean_accuracy", "checks_passed", "check_messages", "hsja-l2_success_rate", "spiking_queries"):
        assert key in m, key
    assert 0 <= m["fidelity_agreement"] <= 1 and m["fidelity_n"] == 20
    assert m["spiking_queries"] > 0
    assert m["checks_passed"] is (rc == 0)
    if rc == 1:
        assert m["check_messages"]
        for msg in m["check_messages"]:
            assert f"FAILED: {msg}" in out
    else:
        assert m["check_messages"] == [] and "checks: all passed" in out

    # the surrogate file rebuilds the calibrated surrogate whose rates fidelity.npz holds
    fid = load_npz(run / "fidelity.npz")
    sur = load_surrogate(run / "surrogate.npz", run_dir / "checkpoint.npz")
    with torch.no_grad():
        scores = sur.rates(torch.as_tensor(ds.x_test[:20], dtype=torch.float64))["scores"].numpy()
    np.testing.assert_allclose(fid["surrogate_scores"], scores, rtol=1e-4, atol=1e-3)
    assert fid["spiking_grc"].shape == (20, CFG.width)
    assert set(sur.param_dict()) == set(POPS) and all(sur.param_dict()[pop] != [1.0, 0.0, 1.0, 1.0] for pop in POPS)

    # spike trains of a clean and an adversarial image
    spikes = load_npz(run / "spikes.npz")
    for pop in ("mf", "grc", "goc", "pc", "cf"):
        for cond in ("clean", "adv"):
            assert f"{cond}_{pop}_i" in spikes and f"{cond}_{pop}_t_ms" in spikes
    assert spikes["clean_grc_t_ms"].max(initial=0) <= CFG.window_ms
    assert bool(spikes["olive_pc_matches"]) and int(spikes["n_cf"]) == int(spikes["n_pc"])
    assert spikes["clean_cf_t_ms"].min(initial=CFG.window_ms) >= CFG.teach_delay_ms - 1e-9
    adv = load_npz(run / "adversarials.npz")
    assert "x_clean" in adv and "pgd_margin.x_adv" in adv and "hybrid_margin.x_adv" in adv

    # the same command again reuses the completed run (nothing is simulated)
    rc_again = main(["attack", "--run", str(run_dir), "-q", *ATTACK_ARGS, "--out", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert rc_again == rc and f"reusing completed run {run}" in out
    assert len(list((tmp_path / "attack-spiking").iterdir())) == 1


def test_cereb_attack_rejects_a_negative_eps_on_a_spiking_run(spiking_run, tmp_path, capsys):
    from scripts.cli import main

    run_dir, _ = spiking_run
    rc = main(["attack", "--run", str(run_dir), "-q", "--set", "attack.eps=-0.1", "--out", str(tmp_path)])
    _, err = capsys.readouterr()
    assert rc == 2
    lines = [line for line in err.splitlines() if line.startswith("cereb: error:")]
    assert len(lines) == 1 and "eps" in lines[0] and "-0.1" in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "attack-spiking").exists()  # nothing was started


def test_tie_flags_mark_shared_top_scores_and_silent_readouts():
    scores = np.array([[0.0, 0.0, 0.0],      # silent: every class ties at zero
                       [5.0, 5.0, 1.0],      # tie at the top
                       [5.0, 1.0, 5.0],
                       [2.0, 7.0, 7.0 - 1e-9],
                       [1.0, 1.0, 3.0]])     # a tie below the top does not count
    tied, silent = spiking.tie_flags(scores)
    np.testing.assert_array_equal(tied, [True, True, True, False, False])
    np.testing.assert_array_equal(silent, [True, False, False, False, False])
    t0, s0 = spiking.tie_flags(np.zeros((0, 3)))
    assert t0.shape == s0.shape == (0,)


def test_fresh_votes_take_the_majority_and_score_ties_against_the_network():
    from attacks.spiking import fresh_votes

    class Scripted:  # fresh_scores answers from a script, one (n, 3) array per call
        def __init__(self, script):
            self.script = list(script)

        def fresh_scores(self, x):
            return self.script.pop(0)

    y = np.array([0, 0, 0, 1])
    right, wrong, tie = [5, 1, 1], [1, 5, 1], [4, 4, 0]
    script = [np.array([right, right, tie, [1, 2, 0]]),
              np.array([right, wrong, tie, [2, 1, 0]]),
              np.array([wrong, wrong, right, [0, 3, 0]])]
    majority, trial = fresh_votes(Scripted(script), np.zeros((4, 2)), y, 3)
    # image 0: 2 of 3 right; image 1: 1 of 3; image 2: ties count against, 1 of 3; image 3: 2 of 3
    assert majority.tolist() == [True, False, False, True]
    assert np.allclose(trial, [2 / 3, 1 / 3, 1 / 3, 2 / 3])
    # a tied vote (one right, one wrong, one for a third class... here 1 vs 1 over two trials) is not a win
    majority, _ = fresh_votes(Scripted([np.array([right]), np.array([wrong])]), np.zeros((1, 2)), y[:1], 2)
    assert majority.tolist() == [False]


def test_square_on_noise_averaged_scores_charges_every_trial(linear_task):
    from dataclasses import replace

    cfg = replace(SUITE_CFG, decision=(), decision_fresh=(), square=True, square_iters=20, square_repeats=3,
                  fresh_eps=(0.0, 0.1))
    res, bb, eng = run_suite(linear_task, cfg)
    sq = [r for r in res.rows if r["attack"] == "square"]
    frozen = {r["eps"]: r for r in sq if r["noise_mode"] == "frozen"}
    fresh = {r["eps"]: r for r in sq if r["noise_mode"] == "fresh"}
    assert set(frozen) == set(fresh) == {0.0, 0.1}  # the fresh-noise budgets only
    assert frozen[0.1]["robust_acc"] < frozen[0.0]["robust_acc"]  # it finds adversarials on this problem
    # the attack's queries: every simulated trial charged to the black box, each on frozen slots 1..3
    assert frozen[0.1]["queries"] > 0 and res.metrics["square_queries_per_image"] > 0
    assert bb.queries == sum(n for n, _, _ in eng.calls)
    # inputs scored before are answered from memory: the trials are the distinct inputs times the repeats
    sq_calls = [(k, slots) for k, mode, slots in eng.calls if mode == "frozen" and len(slots) and slots.min() >= 1]
    assert {int(s) for _, slots in sq_calls for s in slots} == {1, 2, 3}
    sims = sum(k for k, _ in sq_calls)
    assert sims % 3 == 0  # the metric is rounded to 0.1 per image
    assert sims == pytest.approx(3 * res.metrics["square_score_evaluations_per_image"] * N_SUITE, abs=3 * 0.05 * N_SUITE)
    assert res.metrics["square_score_evaluations_per_image"] < 3 * cfg.square_iters  # ART asks ~3 times per iteration
    assert res.metrics["checks_passed"], res.metrics["check_messages"]


def test_suite_flags_gradient_masking_when_the_surrogate_points_away(linear_task):
    """A surrogate whose gradient points away from the boundary (its weights negated): PGD and FGSM
    on it fool nothing, uniform noise fools images near the boundary, and the paired check says so;
    the correct run above passes the same check (its outcomes are listed)."""
    w, b, x, y, x_pool, y_pool = linear_task
    cfg = replace(SUITE_CFG, decision=(), fresh_repeats=0, eps=(0.0, 0.1, 0.2, 0.3))
    res = run_spiking_suite(SpikingBlackBox(LinearEngine(w, b)), LinearSurrogate(-w, -b), x, y, cfg, seed=0,
                            x_pool=x_pool, y_pool=y_pool)
    masking = [m for m in res.metrics["check_messages"] if "gradient masking suspected" in m]
    assert any("noise_none beats the gradient attack pgd_margin" in m for m in masking), res.metrics["check_messages"]
    assert any(c["check"] == "gradient_masking" and not c["passed"] for c in res.metrics["checks"])


def test_headline_metrics_follow_the_configured_eps(clean_suite, linear_task):
    from dataclasses import replace

    default = clean_suite[0].metrics
    assert "robust_acc_worst_eps0.1" in default and "fresh_noise_robust_acc_eps0.05" not in default
    cfg = replace(SUITE_CFG, decision=(), decision_fresh=(), square=False, headline_eps=(0.05,))
    m = run_suite(linear_task, cfg)[0].metrics
    assert {"robust_acc_worst_eps0.05", "fresh_noise_robust_acc_eps0.05", "fresh_noise_ci_eps0.05",
            "fresh_noise_strongest_eps0.05", "surrogate_agreement_adv_eps0.05"} <= set(m)
    # hybrid_own_robust_acc_eps<e> is written at every eps (the hybrid's own check)
    assert not [k for k in m if k.endswith("eps0.1") and not k.startswith("hybrid_own_")]


def test_correct_suite_lists_passed_gradient_masking_checks(clean_suite):
    checks = clean_suite[0].metrics["checks"]
    assert checks and all(c["passed"] for c in checks if c["check"] == "gradient_masking")
    assert {c["subject"] for c in checks} >= {"pgd_margin vs noise_none", "hybrid_margin vs noise_none"}


def test_noise_averaged_scores_simulate_each_input_once_and_charge_every_trial():
    from attacks.spiking import NoiseAveragedScores

    class Slotted:
        """Scores that depend on the slot, so the average is over distinct realisations."""

        def __init__(self):
            self.queries, self.slots = 0, []

        def scores(self, x, slot=0):
            x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
            self.queries += len(x)
            self.slots.append(slot)
            return np.stack([x[:, 0] + 0.1 * slot, 1 - x[:, 0]], axis=1)

    bb = Slotted()
    avg = NoiseAveragedScores(bb, repeats=4)
    a = np.array([[0.2, 0.0], [0.7, 1.0]], dtype=np.float32)
    first = avg(a)
    np.testing.assert_allclose(first[:, 0], a[:, 0] + 0.25)  # mean of slots 1..4: +0.1 * 2.5
    assert bb.queries == 8 and sorted(set(bb.slots)) == [1, 2, 3, 4]
    again = avg(np.concatenate([a, a[:1], np.array([[0.5, 0.5]], dtype=np.float32)]))
    np.testing.assert_array_equal(again[:2], first)
    assert bb.queries == 12 and avg.evaluations == 3  # only the new input was simulated (4 trials)


def test_cereb_attack_in_the_spike_domain_writes_edits_that_replay_on_the_network(spiking_run, tmp_path, capsys):
    """``--set attack.domain=spikes``: the table's columns, the budgets, and every exported
    stimulation protocol flips the frozen trial when replayed on a new engine."""
    from analysis.nwb import read_nwb
    from attacks.spikes import margins
    from core.runs import read_csv
    from models.spiking.engine import SpikingEngine
    from models.spiking.train import load_checkpoint
    from scripts.cli import main

    run_dir, ds = spiking_run
    spike_args = [*ATTACK_ARGS, "--set", "attack.domain=spikes", "--set", "attack.fresh_repeats=3",
                  "--set", "attack.spike_queries=80", "--set", "attack.spike_eot_trials=2",
                  "--set", "attack.spike_variability_pairs=2", "--set", "attack.spike_budget=60"]
    rc = main(["attack", "--run", str(run_dir), "-q", *spike_args, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "spike-domain attacks:" in out and "natural variability" in out
    run = next((tmp_path / "attack-spiking").iterdir())
    assert json.loads((run / "config.json").read_text())["attack"]["domain"] == "spikes"
    header = (run / "robustness_spikes.csv").read_text().splitlines()[0]
    assert header == "image,method,edits,inserted,deleted,shifted_ms,queries,fooled_frozen,success_fresh"
    rows = read_csv(run / "robustness_spikes.csv")
    assert rows and {r["method"] for r in rows} == {"gradient", "gradient-eot", "search", "search-eot", "shift"}
    for r in rows:
        assert 1 <= r["queries"] <= 80 and r["fooled_frozen"] in (0, 1)
        if r["method"] != "shift":
            assert r["edits"] == r["inserted"] + r["deleted"] and r["inserted"] <= 60 and r["shifted_ms"] == 0
            assert 0 <= r["success_fresh"] <= 1
    variability = read_csv(run / "spike_variability.csv")
    assert [v["image"] for v in variability] == list(range(8))
    assert all(v["natural_variability"] > 0 for v in variability)
    flipped = [(r["image"], r["method"]) for r in rows if r["fooled_frozen"] == 1 and r["method"] != "shift"]
    assert flipped, rows
    stim = read_csv(run / "stimulation.csv")
    cfg, conn, w, seed, _ = load_checkpoint(run_dir / "checkpoint.npz")
    with SpikingEngine(cfg, conn, w, workers=1, seed=seed) as eng:
        for image, method in flipped:
            mask = np.zeros((eng.n_steps, conn.n_mf), np.int8)
            mine = [s for s in stim if s["image"] == image and s["method"] == method]
            for s in mine:
                if s["action"] == "silence":
                    a = int(round(s["time_ms"] / cfg.dt_ms))
                    mask[a:a + int(round(s["duration_ms"] / cfg.dt_ms)), s["fibre"]] = -1
            for s in mine:
                if s["action"] == "insert":
                    mask[int(round(s["time_ms"] / cfg.dt_ms)), s["fibre"]] = 1
            scores = eng.predict(ds.x_test[image][None], slots=np.zeros(1, np.int64), mf_edits=mask[None]).scores
            assert margins(scores, int(ds.y_test[image]))[0] < 0, (image, method)
    back = read_nwb(run / "stimulation.nwb")
    assert len(back["stimulation"]) == len(back["trial_input"]) == 2 * json.loads((run / "metrics.json").read_text())[
        "spike_exported"]
    assert list(back["trial_condition"][:2]) == ["clean", "adversarial"]
    assert (run / "spike_example.npz").is_file()
    # same configuration and seed, same numbers
    again = tmp_path / "again"
    assert main(["attack", "--run", str(run_dir), "-q", *spike_args, "--out", str(again)]) == 0
    run2 = next((again / "attack-spiking").iterdir())
    for name in ("robustness_spikes.csv", "spike_variability.csv", "stimulation.csv"):
        assert (run2 / name).read_bytes() == (run / name).read_bytes(), name
    shutil.rmtree(again)
    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    section = report.split("## Spike-domain attacks")[1].split("\n## ")[0]
    assert "| search-eot |" in section and "spike_edits.png" in section and "spike_example.png" in section
    assert (tmp_path / "figures" / "spike_example.png").is_file()
    # the committed page: from the run folder, then again from the committed tables alone
    docs = tmp_path / "docs"
    assert main(["report", str(tmp_path), "--spikes", "--docs", str(docs)]) == 0
    table = read_csv(docs / "spikes_runs.csv")
    assert sorted(r["method"] for r in table) == sorted({r["method"] for r in rows})
    search = next(r for r in table if r["method"] == "search")
    assert search["flipped_frozen"] == pytest.approx(np.mean([r["fooled_frozen"] for r in rows
                                                              if r["method"] == "search"]))
    assert len(read_csv(docs / "spikes_images.csv")) == len(rows)
    page = (docs / "spikes.md").read_text()
    assert f"w={CFG.width}" in page
    assert (docs / "spikes_edits.png").is_file()
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert main(["report", str(empty), "--spikes", "--docs", str(docs)]) == 0
    assert (docs / "spikes.md").read_text() == page
    capsys.readouterr()
    rc = main(["attack", "--run", str(run_dir), "-q", "--set", "attack.domain=spikes",
               "--set", "attack.spike_methods=teleport", "--out", str(tmp_path)])
    assert rc != 0 and "unknown spike-domain method 'teleport'" in capsys.readouterr().err
