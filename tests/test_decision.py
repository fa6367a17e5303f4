"""Decision-based attacks: exact query counting, the hard budget, slot-true starting points,
HopSkipJump / Boundary against a linear black box with a known minimal distance, determinism,
re-evaluation under fresh noise and the robust-accuracy curve."""
from __future__ import annotations

import foolbox as fb
import numpy as np
import pytest

from attacks.decision import (ATTACKS, QueryBudgetExceeded, QueryCounter, default_params, estimate_queries,
                              reevaluate, robust_curve, run_decision_attack, starting_points)
from core.errors import ConfigError

D, C = 16, 3


class Linear:
    """A fixed random linear classifier on [0, 1]^D that records every call (a counting stub)."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(C, D))
        self.b = -self.w @ np.full(D, 0.5)
        self.calls: list[np.ndarray] = []

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.w.T + self.b

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(np.array(x, dtype=np.float64, copy=True))
        return self.scores(x)

    @property
    def rows_evaluated(self) -> int:
        return sum(len(c) for c in self.calls)

    def min_distance(self, x: np.ndarray, y: np.ndarray, norm: str = "l2", to: np.ndarray | None = None) -> np.ndarray:
        """Exact minimal distance to a point classified != y (to class ``to`` only, if given).

        The dual norm of the weight difference: l2 -> l2, linf -> l1. Exact as long as the closest
        point stays inside [0, 1], which the inputs below (in [0.3, 0.7]) and margins guarantee."""
        s = self.scores(x)
        out = np.full(len(x), np.inf)
        for i in range(len(x)):
            for j in range(C):
                if j == y[i] or (to is not None and j != to[i]):
                    continue
                w = self.w[y[i]] - self.w[j]
                dual = np.linalg.norm(w, 2) if norm == "l2" else np.abs(w).sum()
                out[i] = min(out[i], (s[i, y[i]] - s[i, j]) / dual)
        return out


class SlotBox(Linear):
    """Deterministic and slot-dependent: in even rows of a call, a class-1 answer reads as class 0."""

    def scores(self, x: np.ndarray) -> np.ndarray:
        s = super().scores(x)
        flip = (np.arange(len(s)) % 2 == 0) & (s.argmax(axis=1) == 1)
        s[flip, 0] = s[flip].max(axis=1) + 1.0
        return s


@pytest.fixture(scope="module")
def data():
    """20 test images in [0.3, 0.7] (labelled by the linear box itself) and a pool of 600."""
    rng = np.random.default_rng(1)
    box = Linear()
    x = rng.uniform(0.3, 0.7, size=(20, D))
    pool = rng.uniform(0.0, 1.0, size=(600, D))
    return x, box.scores(x).argmax(axis=1), pool, box.scores(pool).argmax(axis=1)


# ----------------------------------------------------------------------------- the counter
def test_counter_counts_exactly_and_enforces_the_budget(data):
    x, y, _, _ = data
    box = Linear()
    counter = QueryCounter(box, x, y, max_queries=3)
    for _ in range(2):
        counter(x)
    counter.mark_done([1, 4])
    counter(x)
    assert counter.calls == len(box.calls) == 3
    assert counter.images_evaluated == box.rows_evaluated == 3 * len(x)
    expected = np.full(len(x), 3)
    expected[[1, 4]] = 2  # done rows are passengers: evaluated, not charged
    assert counter.queries.tolist() == expected.tolist()
    with pytest.raises(QueryBudgetExceeded):
        counter(x)
    assert len(box.calls) == 3  # the black box was not called past the budget
    counter.max_queries += 1
    counter(x)
    assert len(box.calls) == 4 and counter.queries.max() == 4


def test_counter_keeps_the_full_batch_in_slot_order(data):
    x, y, _, _ = data
    box = Linear()
    counter = QueryCounter(box, x, y, max_queries=10)
    with pytest.raises(ValueError, match="slot"):
        counter(x[:-1])
    counter.mark_done([2])
    probe = x.copy()
    probe[2] = np.nan  # passengers are replaced by their clean image before the box sees them
    counter(probe)
    assert np.array_equal(box.calls[-1][2], x[2])
    probe[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        counter(probe)


def test_counter_records_the_closest_confirmed_adversarial(data):
    x, y, pool, yp = data
    box = Linear()
    counter = QueryCounter(box, x, y, max_queries=10)
    far, near = pool[:20], 0.5 * x + 0.5 * pool[:20]
    batches = (near, far, x)  # the closer point comes first: the best is not simply the latest
    for batch in batches:
        counter(batch)
    fooled = np.stack([box.scores(b).argmax(axis=1) != y for b in batches])
    assert (fooled[0] & fooled[1]).any()
    for i in range(len(x)):
        seen = [b[i] for b, f in zip(batches, fooled) if f[i]]
        if not seen:
            assert not counter.found[i] and np.array_equal(counter.best_x[i], x[i])
            continue
        norms = [np.linalg.norm(p - x[i]) for p in seen]
        assert counter.found[i]
        assert counter.best_norm[i] == pytest.approx(min(norms))
        assert np.array_equal(counter.best_x[i], seen[int(np.argmin(norms))])
    assert counter.found.any() and not counter.found.all()


# ----------------------------------------------------------------------------- starting points
def test_starting_points_are_adversarial_in_their_own_slot(data):
    x, y, pool, yp = data
    box = SlotBox()
    # images the slot box gets right in their row (odd rows for class 1)
    keep = box.scores(x).argmax(axis=1) == y
    xs, ys = x[keep], y[keep]
    sp = starting_points(box, xs, ys, pool, yp, n_candidates=8)
    assert sp.found.all()
    assert (box.scores(sp.points).argmax(axis=1) != ys).all()  # in the very rows they will be attacked
    assert sp.calls == len(box.calls) and (sp.queries == sp.calls).all()
    assert all(len(c) == len(xs) for c in box.calls)
    # the nearest candidate of class 1 is refused in even rows of class-0 images and accepted in odd ones
    d2 = ((pool[None] - xs[:, None]) ** 2).sum(-1)
    d2[yp[None] == ys[:, None]] = np.inf
    nearest = d2.argmin(axis=1)
    refused = (ys == 0) & (yp[nearest] == 1) & (np.arange(len(xs)) % 2 == 0)
    assert refused.any()
    assert (sp.pool_index[refused] != nearest[refused]).all()
    assert (sp.pool_index[~refused] == nearest[~refused]).all()


def test_user_starts_are_verified_and_fall_back_to_the_pool(data):
    x, y, pool, yp = data
    box = Linear()
    other = np.flatnonzero(yp != y[0])[0]
    starts = np.full_like(x, np.nan)
    starts[0] = pool[other]  # adversarial
    starts[1] = x[1]  # not adversarial: must fall back to the pool
    sp = starting_points(box, x, y, pool, yp, starts=starts)
    assert sp.found.all()
    assert sp.from_user.tolist() == [True] + [False] * (len(x) - 1)
    assert np.array_equal(sp.points[0], pool[other])
    assert sp.pool_index[1] >= 0 and yp[sp.pool_index[1]] != y[1]
    # without a pool, a refused start is reported, not dropped
    sp = starting_points(box, x[:3], y[:3], starts=starts[:3])
    assert sp.found.tolist() == [True, False, False]
    assert np.array_equal(sp.points[1], x[1])


# ----------------------------------------------------------------------------- the attacks
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_generous_budget_finds_near_minimal_adversarials(data, attack):
    x, y, pool, yp = data
    box = Linear()
    norm = ATTACKS[attack][1]
    r = run_decision_attack(box, x, y, attack=attack, max_queries=3000, x_pool=pool, y_pool=yp)
    assert r.success.mean() >= 0.95
    assert (r.queries <= 3000).all()
    ok = r.success
    assert (box.scores(r.x_adv[ok]).argmax(axis=1) != y[ok]).all()
    assert ((r.x_adv >= 0) & (r.x_adv <= 1)).all()
    found = r.l2 if norm == "l2" else r.linf
    exact = box.min_distance(x, y, norm)
    assert (found[ok] >= exact[ok] * (1 - 1e-9)).all()  # nothing beats the true boundary
    assert np.median(found[ok] / exact[ok]) <= 1.5
    if attack.startswith("hsja"):
        # each image converges to the boundary of the class it reached (a local minimum when a
        # third class's boundary happens to be nearer)
        reached = box.min_distance(x, y, norm, to=r.pred_adv)
        assert (found[ok] <= 1.5 * reached[ok]).all()


def test_budget_is_enforced_and_the_result_is_the_best_confirmed_point(data):
    x, y, pool, yp = data
    box = Linear()
    budget = 40
    r = run_decision_attack(box, x, y, attack="hsja-l2", max_queries=budget, x_pool=pool, y_pool=yp,
                            steps=50, initial_gradient_eval_steps=20)
    assert r.budget_hit
    assert r.queries.max() == budget and (r.queries <= budget).all()
    assert r.calls == len(box.calls) and r.queries.sum() == box.rows_evaluated  # counting is exact
    assert all(len(c) == len(x) for c in box.calls)
    assert r.success.all()
    for i in range(len(x)):
        seen = [c[i] for c in box.calls if box.scores(c[i:i + 1]).argmax() != y[i]]
        assert r.l2[i] == pytest.approx(min(np.linalg.norm(p - x[i]) for p in seen))
    assert (box.scores(r.x_adv).argmax(axis=1) != y).all()


def test_misclassified_images_are_not_attacked_and_rows_keep_their_slots(data):
    x, y, pool, yp = data
    box = SlotBox()
    r = run_decision_attack(box, x, y, attack="hsja-l2", max_queries=300, x_pool=pool, y_pool=yp)
    wrong = r.pred_clean != y
    assert wrong.any() and (~wrong).any()
    assert r.success[wrong].all() and (r.l2[wrong] == 0).all() and (r.queries[wrong] == 1).all()
    assert (r.slots[wrong] == -1).all()
    rows = np.flatnonzero(~wrong)
    assert r.slots[rows].tolist() == list(range(len(rows)))
    assert all(len(c) == len(rows) for c in box.calls[1:])
    # success is what the box says in the attack slot: re-check the attacked batch in its order
    pred = box.scores(r.x_adv[rows]).argmax(axis=1)
    assert np.array_equal(pred, r.pred_adv[rows])
    assert np.array_equal(pred != y[rows], r.success[rows])
    assert r.success[rows].mean() >= 0.95


def test_budget_that_ends_in_the_starting_point_search(data):
    x, y, pool, yp = data
    box = SlotBox()  # some images need a second candidate, which a budget of 3 does not allow
    r = run_decision_attack(box, x, y, attack="hsja-l2", max_queries=3, x_pool=pool, y_pool=yp)
    assert r.budget_hit and (r.queries <= 3).all()
    assert r.no_start.any() and not r.success[r.no_start].any()
    rows = np.flatnonzero(r.slots >= 0)
    assert r.success[rows].mean() > 0.5
    # every success is adversarial in its attack slot; every failure is the clean image
    pred = box.scores(r.x_adv[rows]).argmax(axis=1)
    assert np.array_equal(pred != y[rows], r.success[rows])
    assert np.array_equal(r.x_adv[~r.success], x[~r.success])


@pytest.mark.parametrize("attack", ["hsja-l2", "boundary-l2"])
def test_images_without_a_start_ride_along_and_are_reported(data, attack):
    x, y, pool, yp = data
    box = Linear()
    starts = np.full_like(x, np.nan)
    for i in range(len(x)):
        starts[i] = pool[np.flatnonzero(yp != y[i])[0]]
    starts[5] = x[5]
    r = run_decision_attack(box, x, y, attack=attack, max_queries=200, starting_points=starts)
    assert r.no_start.tolist() == [i == 5 for i in range(len(x))]
    assert not r.success[5] and r.l2[5] == np.inf and np.array_equal(r.x_adv[5], x[5])
    assert r.queries[5] == 2  # clean call and the starting-point round; then a passenger
    assert all(np.array_equal(c[5], x[5]) for c in box.calls)
    others = np.arange(len(x)) != 5
    assert r.success[others].all()
    start_l2 = np.linalg.norm(starts - x, axis=1)
    assert (r.l2[others] < start_l2[others]).all()


def test_same_seed_same_result_and_global_rng_restored(data):
    x, y, pool, yp = data
    np.random.seed(123)
    expected_draw = np.random.rand()
    np.random.seed(123)
    a = run_decision_attack(Linear(), x, y, attack="hsja-linf", max_queries=150, x_pool=pool, y_pool=yp, seed=7)
    assert np.random.rand() == expected_draw
    b = run_decision_attack(Linear(), x, y, attack="hsja-linf", max_queries=150, x_pool=pool, y_pool=yp, seed=7)
    c = run_decision_attack(Linear(), x, y, attack="hsja-linf", max_queries=150, x_pool=pool, y_pool=yp, seed=8)
    assert np.array_equal(a.x_adv, b.x_adv) and np.array_equal(a.queries, b.queries)
    assert not np.array_equal(a.x_adv, c.x_adv)


def test_query_estimate_and_defaults_fit_the_budget(data):
    x, y, pool, yp = data
    for attack in ATTACKS:
        p = default_params(attack, 500, D)
        assert estimate_queries(attack, D, **p) <= 500
        assert estimate_queries(attack, D, **{**p, "steps": p["steps"] + 1}) > 500
    starts = np.stack([pool[np.flatnonzero(yp != y[i])[0]] for i in range(len(x))])
    hsja = {"steps": 10, "initial_gradient_eval_steps": 20, "max_gradient_eval_steps": 200}
    for attack, params, tol in (("boundary-l2", {"steps": 95}, 0.0), ("hsja-l2", hsja, 0.05),
                                ("hsja-linf", hsja, 0.05)):
        r = run_decision_attack(Linear(), x, y, attack=attack, max_queries=10**5, starting_points=starts, **params)
        assert not r.budget_hit
        attack_calls = r.calls - 3  # clean call, one starting-point round, confirmation
        est = estimate_queries(attack, D, **params)
        assert abs(attack_calls - est) <= tol * est


def test_gradient_attacks_are_refused_clearly(data):
    x, y, pool, yp = data
    box = Linear()
    for attack in ("pgd", fb.attacks.LinfPGD(), fb.attacks.L2CarliniWagnerAttack()):
        with pytest.raises(ConfigError, match="needs gradients"):
            run_decision_attack(box, x, y, attack=attack, max_queries=100, x_pool=pool, y_pool=yp)
    assert box.calls == []  # refused before any query
    with pytest.raises(ConfigError, match="unknown decision attack"):
        run_decision_attack(box, x, y, attack="hsja-l3", max_queries=100, x_pool=pool, y_pool=yp)

    class AsksForGradients(fb.attacks.HopSkipJumpAttack):
        def run(self, model, inputs, criterion, **kwargs):
            labels = np.zeros(len(inputs), np.int64)
            return fb.attacks.L2PGD().run(model, inputs, fb.criteria.Misclassification(labels), epsilon=0.1)

    with pytest.raises(ConfigError, match="needs gradients"):
        run_decision_attack(box, x, y, attack=AsksForGradients(), max_queries=100, x_pool=pool, y_pool=yp)


# ----------------------------------------------------------------------------- evaluation
def test_reevaluate_gives_success_probabilities(data):
    x, y, _, _ = data
    box = Linear()
    p = reevaluate(box, x, y, repeats=3)
    assert len(box.calls) == 3 and all(len(c) == len(x) for c in box.calls)
    assert np.array_equal(p, np.zeros(len(x)))  # clean images, deterministic box: never fooled
    wrong = (y + 1) % C
    assert np.array_equal(reevaluate(box, x, wrong, repeats=2), np.ones(len(x)))

    calls = []

    def flaky(a):  # fresh noise stand-in: right on even calls, wrong on odd calls for image 0
        s = box.scores(a)
        if len(calls) % 2:
            s[0] = 0.0
            s[0, (y[0] + 1) % C] = 1.0
        calls.append(1)
        return s

    p = reevaluate(flaky, x, y, repeats=4)
    assert p[0] == 0.5 and (p[1:] == 0).all()


def test_robust_curve_matches_a_hand_computed_example():
    norms = np.array([0.05, 0.2, np.inf, 0.0, 0.1])
    success = np.array([True, True, False, True, True])
    clean_correct = np.array([True, True, True, False, True])
    curve = robust_curve(norms, success, clean_correct, [0.0, 0.05, 0.1, 0.3])
    assert curve.tolist() == pytest.approx([0.8, 0.6, 0.4, 0.2])
