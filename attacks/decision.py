"""Decision-based black-box attacks (Foolbox HopSkipJump and Boundary) under a hard query budget.

The black box is any function ``fn(x) -> scores`` with ``x`` of shape ``(n_images, n_inputs)``,
floats in [0, 1], and ``scores`` of shape ``(n_images, n_classes)``; its prediction is the argmax.
In the real use it is the batched spiking engine in frozen-noise mode, whose answer for row ``r``
of a call depends on the input, the seed *and the slot* ``r``. Everything here is built around that:

- **Slots.** The slot of an image is its row index in the array handed to ``fn``. An attack fixes
  one row order (the *attacked batch*: the images that ``fn`` classifies correctly, in their order
  in ``x``) and passes exactly that batch, in that order, on every call from the starting-point
  search to the final confirmation. :class:`QueryCounter` refuses a call with another number of
  rows. Foolbox's HopSkipJumpAttack and BoundaryAttack (3.3.4) always evaluate the whole batch
  they were given (``is_adversarial`` on tensors shaped like the originals: binary searches, the
  gradient estimate one evaluation per call, step-size searches, Boundary's candidates), so one
  Foolbox call is one query for every image. Images without a starting point stay in the batch as
  *passengers* (marked done: evaluated at their clean input to keep the others' slots, never
  charged, and treated as already adversarial by the criterion so that Foolbox leaves them alone).
- **Budget.** :class:`QueryCounter` charges one query per (non-done) image per call, exactly, and
  raises :class:`QueryBudgetExceeded` *before* calling ``fn`` when a call would take an image past
  ``max_queries``. The budget covers everything spent on an image: the clean call, the
  starting-point search, the attack, and one query reserved for the final confirmation.
- **Best confirmed point.** The counter remembers, per image, the adversarial point (prediction
  != label) with the smallest perturbation norm among *all* points it passed to ``fn``. That is
  the attack's result, whether Foolbox finished or the budget ran out in the middle of a step.
- **Randomness.** Foolbox's eagerpy numpy backend draws from numpy's legacy global generator
  (``np.random.normal`` / ``np.random.uniform``). :func:`run_decision_attack` seeds it for the run
  and restores its previous state afterwards.

Query cost of HopSkipJump (Foolbox 3.3.4, ``stepsize_search='geometric_progression'``), per
image, with ``G0 = initial_gradient_eval_steps``, ``Gmax = max_gradient_eval_steps``, ``T = steps``,
``d = n_inputs`` and ``B`` bisection calls per binary search (``ceil(log2(d**1.5 / gamma))`` for
l2, ``ceil(log2(d**2 / gamma))`` for linf)::

    1 (check the starting points) + B + 1 (project them onto the boundary, check)
    + sum over steps s = 0..T-1 of  min(G0 * sqrt(s + 1), Gmax)   gradient estimate, 1 call each
                                    + S_s                         step-size search (halvings, >= 1)
                                    + 1 + B + 1                   check, binary search, check

so the gradient evaluations grow like ``(2/3) G0 T**1.5`` and dominate. ``S_s`` is the number of
halvings the batch's *worst* image needs (the search repeats until all images are adversarial);
:func:`estimate_queries` assumes ``HSJA_SEARCH_CALLS`` = 3 per step (2.4 to 4.6 measured on a
linear and a random-feature digits model; the estimate was then within 5% of the measured calls). BoundaryAttack costs ``1 + steps + steps // update_stats_every_k`` per image.
:func:`default_params` picks the number of steps that fits the budget left after the clean call
and the starting-point search.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import eagerpy as ep
import foolbox as fb
import numpy as np

from core.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "ATTACKS", "QueryBudgetExceeded", "QueryCounter", "StartingPoints", "DecisionResult",
    "make_fmodel", "make_decision_attack", "estimate_queries", "default_params", "starting_points",
    "run_decision_attack", "reevaluate", "robust_curve",
]

BlackBox = Callable[[np.ndarray], np.ndarray]

# attack name -> (Foolbox class, norm that the attack minimises)
ATTACKS: dict[str, tuple[type, str]] = {
    "hsja-l2": (fb.attacks.HopSkipJumpAttack, "l2"),
    "hsja-linf": (fb.attacks.HopSkipJumpAttack, "linf"),
    "boundary-l2": (fb.attacks.BoundaryAttack, "l2"),
}
NORMS = ("l2", "linf")

# HopSkipJump defaults for a budget (see the module docstring for the cost model).
HSJA_INITIAL_EVALS = 20
HSJA_MAX_EVALS_FACTOR = 10  # max_gradient_eval_steps = factor * initial_gradient_eval_steps
HSJA_SEARCH_CALLS = 3  # assumed step-size-search calls per step (2.4-4.6 measured)
MIN_BUDGET = 3  # clean call + one starting-point round + the confirmation

# Foolbox attack families that need gradients (a NumPyModel has none).
_GRADIENT_ATTACKS: tuple[type, ...] = tuple(
    cls for cls in (
        getattr(fb.attacks.gradient_descent_base, "BaseGradientDescent", None),
        getattr(fb.attacks.deepfool, "DeepFoolAttack", None),
        getattr(fb.attacks.brendel_bethge, "BrendelBethgeAttack", None),
        getattr(fb.attacks.fast_minimum_norm, "FMNAttackLp", None),
        getattr(fb.attacks, "L2CarliniWagnerAttack", None),
        getattr(fb.attacks, "EADAttack", None),
        getattr(fb.attacks, "DDNAttack", None),
        getattr(fb.attacks, "NewtonFoolAttack", None),
        getattr(fb.attacks, "VirtualAdversarialAttack", None),
    ) if cls is not None
)
_GRADIENT_NAMES = ("fgsm", "fgm", "pgd", "bim", "mifgsm", "deepfool", "cw", "carlini", "ead", "ddn", "fmn",
                   "newtonfool", "brendel", "vat", "strongpgd")


class QueryBudgetExceeded(RuntimeError):
    """A call to the black box would take at least one image past its query budget (fn not called)."""


def _gradient_message(what: str) -> str:
    return (f"{what} needs gradients, but a decision-based black box (fb.models.NumPyModel) has none "
            f"(eagerpy's numpy backend raises a bare NotImplementedError). Use one of "
            f"{', '.join(ATTACKS)} here, or run the gradient attack on a differentiable surrogate and "
            f"transfer its adversarials")


def _lp(delta: np.ndarray, norm: str) -> np.ndarray:
    """Per-row norm of ``delta`` (n, D): 'l2' or 'linf'."""
    if norm == "l2":
        return np.sqrt(np.einsum("ij,ij->i", delta, delta))
    return np.abs(delta).max(axis=1) if delta.shape[1] else np.zeros(len(delta))


def _as_images(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (n_images, n_inputs), got {a.shape}")
    if not np.isfinite(a).all() or a.min(initial=0.0) < 0.0 or a.max(initial=0.0) > 1.0:
        raise ValueError(f"{name} must be finite and inside [0, 1]")
    return a


def _as_labels(y: Any, n: int, name: str = "y") -> np.ndarray:
    a = np.asarray(y)
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be {n} integer labels, got shape {a.shape} dtype {a.dtype}")
    return a.astype(np.int64)


def _scores(fn: BlackBox, x: np.ndarray) -> np.ndarray:
    s = np.asarray(fn(x))
    if s.ndim != 2 or s.shape[0] != len(x):
        raise ValueError(f"the black box returned scores of shape {s.shape} for {len(x)} images; "
                         f"expected (n_images, n_classes)")
    return s


# ----------------------------------------------------------------------------- query counter
class QueryCounter:
    """Counts queries per image, enforces a per-image budget, and keeps the best adversarial seen.

    Parameters
    ----------
    fn : the black box, ``(n, D) -> (n, C)`` scores.
    x0 : (n, D) the clean images, in the fixed row (slot) order of every call.
    y : (n,) their labels.
    max_queries : per-image budget; a call that would take an image (not marked done) past it raises
        :class:`QueryBudgetExceeded` without calling ``fn``. May be raised or lowered between calls.
    norm : 'l2' or 'linf', the norm by which "best" adversarial is judged.

    Attributes
    ----------
    queries : (n,) int, queries charged to each image (one per call while it is not done).
    calls : number of calls of ``fn``.
    images_evaluated : rows passed to ``fn`` in all (``calls * n``, passengers included).
    done : (n,) bool, images that are no longer charged; their rows are replaced by ``x0`` before
        ``fn`` sees them (passengers that only keep the other images in their slots).
    found : (n,) bool, an adversarial point has been seen.
    best_x : (n, D) the adversarial point with the smallest norm seen (``x0`` where none).
    best_norm : (n,) its norm (inf where none).
    best_pred : (n,) the black box's prediction there (-1 where none).

    Calling the counter with an array of another number of rows is an error: the rows of a call are
    the slots of the black box, so a shorter batch would move images into other slots.
    """

    def __init__(self, fn: BlackBox, x0: np.ndarray, y: np.ndarray, max_queries: int, *, norm: str = "l2"):
        if norm not in NORMS:
            raise ConfigError(f"unknown norm {norm!r} (known: {', '.join(NORMS)})")
        self.fn = fn
        self.x0 = _as_images(x0, "x0")
        self.y = _as_labels(y, len(self.x0))
        self.max_queries = int(max_queries)
        self.norm = norm
        n = len(self.x0)
        self.queries = np.zeros(n, np.int64)
        self.calls = 0
        self.images_evaluated = 0
        self.done = np.zeros(n, bool)
        self.found = np.zeros(n, bool)
        self.best_x = self.x0.copy()
        self.best_norm = np.full(n, np.inf)
        self.best_pred = np.full(n, -1, np.int64)

    def __repr__(self) -> str:
        return (f"QueryCounter(n={self.n}, max_queries={self.max_queries}, norm={self.norm!r}, "
                f"calls={self.calls})")

    @property
    def n(self) -> int:
        return len(self.x0)

    @property
    def remaining(self) -> np.ndarray:
        """(n,) queries each image may still spend (0 for done images)."""
        return np.where(self.done, 0, np.maximum(self.max_queries - self.queries, 0))

    def mark_done(self, rows: Any) -> None:
        """Stop charging (and budget-checking) ``rows``: a bool mask (n,) or row indices."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (self.n,):
                raise ValueError(f"done mask must have shape ({self.n},), got {rows.shape}")
            self.done |= rows
        else:
            self.done[rows.astype(np.int64)] = True

    def __call__(self, x: Any) -> np.ndarray:
        xa = np.asarray(x)
        if xa.shape != self.x0.shape:
            raise ValueError(
                f"the black box must see the whole batch of {self.n} images in its fixed order "
                f"(row = slot), got an array of shape {xa.shape}; expected {self.x0.shape}")
        active = ~self.done
        over = active & (self.queries + 1 > self.max_queries)
        if over.any():
            raise QueryBudgetExceeded(
                f"{int(over.sum())} of {int(active.sum())} images would exceed the budget of "
                f"{self.max_queries} queries (after {self.calls} calls)")
        xq = np.array(xa, copy=True)
        if self.done.any():
            xq[self.done] = self.x0[self.done]
        if not np.isfinite(xq).all():
            raise ValueError("the attack proposed non-finite inputs")
        scores = _scores(self.fn, xq)
        self.calls += 1
        self.images_evaluated += self.n
        self.queries[active] += 1
        self._record(xq, scores)
        return scores

    def _record(self, xq: np.ndarray, scores: np.ndarray) -> None:
        pred = scores.argmax(axis=1)
        adv = pred != self.y
        if not adv.any():
            return
        xq = np.asarray(xq, dtype=np.float64)
        dist = _lp(xq - self.x0, self.norm)
        better = adv & (dist < self.best_norm)
        self.best_x[better] = xq[better]
        self.best_norm[better] = dist[better]
        self.best_pred[better] = pred[better]
        self.found |= better


# ----------------------------------------------------------------------------- Foolbox glue
class _MisclassifiedOrDone(fb.criteria.Criterion):
    """Misclassification of ``labels``; rows in ``done`` always count as adversarial."""

    def __init__(self, labels: np.ndarray, done: np.ndarray):
        self.labels = np.asarray(labels)
        self.done = np.asarray(done, bool)

    def __repr__(self) -> str:
        return f"MisclassifiedOrDone(n={len(self.labels)}, done={int(self.done.sum())})"

    def __call__(self, perturbed: Any, outputs: Any) -> Any:
        outputs_, restore_type = ep.astensor_(outputs)
        pred = outputs_.argmax(axis=-1).numpy()
        return restore_type(ep.from_numpy(outputs_, (pred != self.labels) | self.done))


def make_fmodel(counter: QueryCounter) -> fb.models.NumPyModel:
    """A Foolbox model over the counter (bounds (0, 1)); decision-based attacks only (no gradients)."""
    return fb.models.NumPyModel(counter, bounds=(0, 1))


def _check_attack(attack: Any) -> tuple[str, str]:
    """(name, norm) of a supported decision attack, or a ConfigError that says what is wrong."""
    if isinstance(attack, str):
        if attack in ATTACKS:
            return attack, ATTACKS[attack][1]
        if any(attack.lower().replace("-", "").replace("_", "").startswith(g) for g in _GRADIENT_NAMES):
            raise ConfigError(_gradient_message(f"attack {attack!r}"))
        raise ConfigError(f"unknown decision attack {attack!r} (known: {', '.join(ATTACKS)})")
    if isinstance(attack, _GRADIENT_ATTACKS):
        raise ConfigError(_gradient_message(f"{type(attack).__name__}"))
    if isinstance(attack, fb.attacks.HopSkipJumpAttack):
        return f"hsja-{attack.constraint}", attack.constraint
    if isinstance(attack, fb.attacks.BoundaryAttack):
        return "boundary-l2", "l2"
    raise ConfigError(f"{attack!r} is not supported here: pass one of {', '.join(ATTACKS)}, or a "
                      f"HopSkipJumpAttack / BoundaryAttack instance")


def estimate_queries(attack: str, d: int, **params: Any) -> int:
    """Estimated queries per image of one Foolbox run (starting-point check included).

    ``params`` are the attack's keyword arguments (Foolbox defaults where missing); see the module
    docstring for the cost model.
    """
    _, norm = _check_attack(attack)
    if attack.startswith("hsja"):
        steps = int(params.get("steps", 64))
        g0 = int(params.get("initial_gradient_eval_steps", 100))
        gmax = int(params.get("max_gradient_eval_steps", 10000))
        gamma = float(params.get("gamma", 1.0))
        search = int(params.get("search_calls", HSJA_SEARCH_CALLS))
        b = math.ceil(math.log2(max(d ** (1.5 if norm == "l2" else 2.0) / gamma, 1.0)))
        grads = sum(int(min(g0 * math.sqrt(s + 1), gmax)) for s in range(steps))
        return 1 + b + 1 + grads + steps * (search + 1 + b + 1)
    steps = int(params.get("steps", 25000))
    k = int(params.get("update_stats_every_k", 10))
    return 1 + steps + steps // k


def default_params(attack: str, budget: int, d: int) -> dict[str, Any]:
    """Foolbox keyword arguments for ``attack`` whose estimated cost fits ``budget`` queries per image.

    HopSkipJump: ``initial_gradient_eval_steps`` = min(20, budget // 10), at most 10x that per
    step, and the largest ``steps`` (>= 1) that :func:`estimate_queries` fits into ``budget``.
    Boundary: the largest ``steps`` that fits. An attack that is cut short by the budget still
    returns its best confirmed point, so an estimate that is slightly off costs little.
    """
    _check_attack(attack)
    budget = int(budget)
    if attack.startswith("hsja"):
        g0 = max(1, min(HSJA_INITIAL_EVALS, budget // 10))
        p = {"initial_gradient_eval_steps": g0, "max_gradient_eval_steps": HSJA_MAX_EVALS_FACTOR * g0,
             "constraint": attack.split("-")[1]}
        steps = 1
        while estimate_queries(attack, d, steps=steps + 1, **p) <= budget:
            steps += 1
        return {"steps": steps, **p}
    k = 10
    steps = max(1, ((budget - 1) * k) // (k + 1))
    while steps > 1 and estimate_queries(attack, d, steps=steps, update_stats_every_k=k) > budget:
        steps -= 1
    while estimate_queries(attack, d, steps=steps + 1, update_stats_every_k=k) <= budget:
        steps += 1
    return {"steps": steps, "update_stats_every_k": k}


def make_decision_attack(attack: Any, budget: int, d: int, **params: Any) -> tuple[Any, str, dict[str, Any]]:
    """(Foolbox attack, norm, the keyword arguments used) for a name, or a checked instance as is.

    Names take :func:`default_params` for the budget, overridden by ``params``.
    """
    name, norm = _check_attack(attack)
    if not isinstance(attack, str):
        if params:
            raise ConfigError("pass attack parameters either in the Foolbox instance or as keywords, not both")
        return attack, norm, {}
    kwargs = {**default_params(name, budget, d), **params}
    cls = ATTACKS[name][0]
    if cls is fb.attacks.HopSkipJumpAttack and kwargs.get("constraint", norm) != norm:
        raise ConfigError(f"{name} minimises {norm}; constraint={kwargs['constraint']!r} contradicts it")
    try:
        return cls(**kwargs), norm, kwargs
    except TypeError as e:
        raise ConfigError(f"bad parameters for {name}: {e}") from e


@contextmanager
def _numpy_global_seed(seed: int) -> Iterator[None]:
    """Seed numpy's legacy global generator (what eagerpy's numpy backend draws from); restore it after."""
    state = np.random.get_state()
    np.random.seed(int(seed) % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


# ----------------------------------------------------------------------------- starting points
@dataclass(frozen=True)
class StartingPoints:
    """Result of :func:`starting_points`.

    Attributes
    ----------
    points : (n, D) a point the black box classifies != y *in the image's own row*; the clean image
        where none was found.
    found : (n,) bool.
    from_user : (n,) bool, the point is the user's (confirmed), not a pool sample.
    pool_index : (n,) int, index of the pool sample used (-1 for user points and failures).
    queries : (n,) int, queries spent on each image (every call passes all n rows).
    calls : number of calls of the black box.
    """

    points: np.ndarray
    found: np.ndarray
    from_user: np.ndarray
    pool_index: np.ndarray
    queries: np.ndarray
    calls: int


def _nearest_other_class(x: np.ndarray, y: np.ndarray, x_pool: np.ndarray, y_pool: np.ndarray,
                         k: int) -> np.ndarray:
    """(n, k) indices into the pool of the k nearest (L2) samples with another label, nearest first; -1 pads."""
    k = max(0, min(int(k), len(x_pool)))
    out = np.full((len(x), k), -1, np.int64)
    if k == 0:
        return out
    pool_sq = np.einsum("ij,ij->i", x_pool, x_pool)
    for i0 in range(0, len(x), 256):
        xi, yi = x[i0:i0 + 256], y[i0:i0 + 256]
        d2 = pool_sq[None, :] - 2.0 * xi @ x_pool.T + np.einsum("ij,ij->i", xi, xi)[:, None]
        d2[y_pool[None, :] == yi[:, None]] = np.inf
        part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < len(x_pool) else np.tile(np.arange(k), (len(xi), 1))
        order = np.take_along_axis(d2, part, axis=1).argsort(axis=1, kind="stable")
        idx = np.take_along_axis(part, order, axis=1)
        valid = np.isfinite(np.take_along_axis(d2, idx, axis=1))
        out[i0:i0 + len(xi)] = np.where(valid, idx, -1)
    return out


def starting_points(fn: BlackBox, x: np.ndarray, y: np.ndarray, x_pool: np.ndarray | None = None,
                    y_pool: np.ndarray | None = None, *, starts: np.ndarray | None = None,
                    n_candidates: int = 5) -> StartingPoints:
    """Adversarial starting points, each checked in the row (slot) where it will be attacked.

    Every call passes all n rows in the order of ``x``: round r offers, for each image still
    without a point, its next candidate; images already resolved are passed at their point (so the
    call has n rows and nobody changes slot). Round 0 offers the user's ``starts`` (e.g. from a
    transfer attack) where given, else the nearest pool candidate; a user start that the black box
    does not confirm falls back to the pool. Pool candidates are the ``n_candidates`` nearest (L2)
    pool samples whose label differs from the image's, nearest first; any prediction != y counts.

    Parameters
    ----------
    fn : black box ``(n, D) -> (n, C)`` (e.g. a :class:`QueryCounter`, which then charges the queries).
    x : (n, D) clean images in attack order; y : (n,) labels.
    x_pool, y_pool : (P, D) candidates and their (P,) labels (e.g. the training set); optional if
        ``starts`` is given.
    starts : (n, D) user starting points; rows containing NaN mean "none for this image".
    n_candidates : pool candidates tried per image at most.

    Images for which nothing was found have ``found`` False and are logged as a warning.
    """
    x = _as_images(x, "x")
    n, d = x.shape
    y = _as_labels(y, n)
    if starts is None and x_pool is None:
        raise ValueError("starting_points needs a pool (x_pool, y_pool) or user starts")
    user = np.full((n, d), np.nan)
    if starts is not None:
        user = np.array(starts, dtype=np.float64)
        if user.shape != (n, d):
            raise ValueError(f"starts must have shape {(n, d)}, got {user.shape}")
        ok_rows = ~np.isnan(user).any(axis=1)
        if ((user[ok_rows] < 0) | (user[ok_rows] > 1)).any():
            raise ValueError("starts must lie inside [0, 1]")
    has_user = ~np.isnan(user).any(axis=1)
    if x_pool is not None:
        pool = _as_images(x_pool, "x_pool")
        if pool.shape[1] != d:
            raise ValueError(f"x_pool has {pool.shape[1]} inputs, x has {d}")
        pool_y = _as_labels(y_pool, len(pool), "y_pool")
        cand = _nearest_other_class(x, y, pool, pool_y, n_candidates)
    else:
        pool = np.zeros((0, d))
        cand = np.full((n, 0), -1, np.int64)

    points = x.copy()
    found = np.zeros(n, bool)
    from_user = np.zeros(n, bool)
    pool_index = np.full(n, -1, np.int64)
    next_cand = np.zeros(n, np.int64)  # next pool candidate to offer per image
    pending_user = has_user.copy()
    calls = 0
    while True:
        offer = x.copy()
        offer[found] = points[found]
        offered_pool = np.full(n, -1, np.int64)
        offered = np.zeros(n, bool)
        for i in np.flatnonzero(~found):
            if pending_user[i]:
                offer[i] = user[i]
                offered[i] = True
                continue
            while next_cand[i] < cand.shape[1] and cand[i, next_cand[i]] >= 0:
                j = cand[i, next_cand[i]]
                next_cand[i] += 1
                offer[i], offered_pool[i], offered[i] = pool[j], j, True
                break
        if not offered.any():
            break
        pred = _scores(fn, offer).argmax(axis=1)
        calls += 1
        hit = offered & (pred != y)
        points[hit] = offer[hit]
        found |= hit
        from_user |= hit & pending_user
        pool_index[hit & ~pending_user] = offered_pool[hit & ~pending_user]
        pending_user[:] = False
    if not found.all():
        log.warning("no adversarial starting point for %d of %d images (rows %s)", int((~found).sum()), n,
                    np.flatnonzero(~found)[:20].tolist())
    return StartingPoints(points=points, found=found, from_user=from_user, pool_index=pool_index,
                          queries=np.full(n, calls, np.int64), calls=calls)


_starting_points = starting_points  # run_decision_attack has an argument of that name


# ----------------------------------------------------------------------------- the attack
@dataclass(frozen=True)
class DecisionResult:
    """Result of :func:`run_decision_attack`; arrays are per image, in the order of ``x``.

    Attributes
    ----------
    x_adv : (N, D) best confirmed adversarial point (the clean image where none was found).
    success : (N,) bool, the black box classifies ``x_adv`` != y, confirmed by a final call in the
        image's attack slot (True with zero perturbation for images misclassified when clean).
    queries : (N,) int, all queries spent on each image (clean call, starting points, attack,
        confirmation); never above ``max_queries``.
    l2, linf : (N,) perturbation norms of ``x_adv`` (inf where not successful).
    pred_adv : (N,) prediction at ``x_adv`` (in the attack slot; the clean prediction when not attacked).
    pred_clean : (N,) prediction of the clean call (the whole of ``x``, slot = index in ``x``).
    wall_s : seconds for the whole run.
    calls : calls of the black box.
    budget_hit : the query budget stopped the starting-point search or the attack.
    slots : (N,) int, each image's row in the attacked batch (-1: not attacked, misclassified clean).
    no_start : (N,) bool, attacked images for which no starting point was found (not attacked).
    attack : the Foolbox attack's repr; params : the keyword arguments it was built with.
    """

    x_adv: np.ndarray
    success: np.ndarray
    queries: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    pred_adv: np.ndarray
    pred_clean: np.ndarray
    wall_s: float
    calls: int
    budget_hit: bool
    slots: np.ndarray
    no_start: np.ndarray
    attack: str = ""
    params: dict = field(default_factory=dict)


def run_decision_attack(fn: BlackBox, x: np.ndarray, y: np.ndarray, *, attack: Any, max_queries: int,
                        starting_points: np.ndarray | None = None, x_pool: np.ndarray | None = None,
                        y_pool: np.ndarray | None = None, seed: int = 0, n_candidates: int = 5,
                        **params: Any) -> DecisionResult:
    """Attack ``x`` through the black box ``fn`` with a decision-based Foolbox attack and a hard budget.

    Steps: one clean call on all of ``x``; the correctly classified images form the attacked batch
    (their order in ``x``; it stays fixed to the end, because the row is the slot); starting points
    are searched (or the user's verified) in that batch; the attack runs over a
    :class:`QueryCounter` limited to ``max_queries - 2`` per image (one for the clean call, one kept
    for the confirmation); finally the best confirmed point per image is evaluated once more.

    Parameters
    ----------
    fn : black box ``(n, D) -> (n, C)``; it must answer deterministically per (input, slot)
        (frozen noise) for the result to be meaningful.
    x : (N, D) in [0, 1]; y : (N,) labels.
    attack : 'hsja-l2', 'hsja-linf', 'boundary-l2', or a HopSkipJumpAttack / BoundaryAttack
        instance. Gradient attacks are refused with a ConfigError.
    max_queries : hard per-image budget (>= 3).
    starting_points : (N, D) user starting points (NaN rows: none), verified in their slots; rows that
        are not adversarial fall back to the pool.
    x_pool, y_pool : pool for starting points (e.g. the training set).
    seed : seeds Foolbox's random draws (numpy's global generator, restored afterwards).
    n_candidates : pool candidates tried per image.
    **params : Foolbox keyword arguments overriding :func:`default_params` for the budget.
    """
    t0 = time.perf_counter()
    _check_attack(attack)  # refuse gradient attacks before spending a query
    x = _as_images(x, "x")
    n_all, d = x.shape
    y = _as_labels(y, n_all)
    max_queries = int(max_queries)
    if max_queries < MIN_BUDGET:
        raise ConfigError(f"max_queries must be >= {MIN_BUDGET} (clean call, a starting point, "
                          f"a confirmation), got {max_queries}")
    if starting_points is not None:
        starting_points = np.asarray(starting_points, dtype=np.float64)
        if starting_points.shape != x.shape:
            raise ValueError(f"starting_points must have shape {x.shape}, got {starting_points.shape}")

    pred_clean = _scores(fn, x).argmax(axis=1)
    calls = 1
    queries = np.ones(n_all, np.int64)
    correct = pred_clean == y
    rows = np.flatnonzero(correct)
    slots = np.full(n_all, -1, np.int64)
    slots[rows] = np.arange(len(rows))

    x_adv = x.copy()
    success = ~correct
    pred_adv = pred_clean.copy()
    no_start = np.zeros(n_all, bool)
    budget_hit = False
    attack_repr = repr(attack)
    used: dict[str, Any] = {}
    if len(rows):
        xa, ya = x[rows], y[rows]
        name, norm = _check_attack(attack)
        counter = QueryCounter(fn, xa, ya, max_queries - 2, norm=norm)
        user = None if starting_points is None else starting_points[rows]
        sp = None
        try:
            sp = _starting_points(counter, xa, ya, x_pool, y_pool, starts=user, n_candidates=n_candidates)
        except QueryBudgetExceeded:
            budget_hit = True
            log.warning("the query budget ran out during the starting-point search")
        found = sp.found if sp is not None else counter.found.copy()
        counter.mark_done(~found)
        no_start[rows] = ~found
        left = int(counter.remaining[found].min()) if found.any() else 0
        if found.any() and left > 0:
            fb_attack, _, used = make_decision_attack(attack, left, d, **params)
            attack_repr = repr(fb_attack)
            # passengers (no start) get any point other than their image: the criterion calls them
            # adversarial anyway, and Boundary divides by the distance to the image
            starts = np.where(found[:, None], sp.points if sp is not None else counter.best_x,
                              np.where(xa < 0.5, 1.0, 0.0))
            log.info("%s on %d images (%d without a start), budget %d queries per image, %d left",
                     attack_repr, len(rows), int((~found).sum()), max_queries, left)
            with _numpy_global_seed(seed):
                try:
                    fb_attack.run(make_fmodel(counter), xa.copy(), _MisclassifiedOrDone(ya, ~found),
                                  starting_points=starts)
                except QueryBudgetExceeded:
                    budget_hit = True
                except NotImplementedError as e:
                    raise ConfigError(_gradient_message(attack_repr)) from e
        elif found.any():
            budget_hit = True
        # confirm the best point of each image in its own slot, with the query kept for that
        counter.max_queries += 1
        candidate = np.where(counter.found[:, None], counter.best_x, xa)
        pa = counter(candidate).argmax(axis=1)
        ok = pa != ya
        x_adv[rows] = candidate
        pred_adv[rows] = pa
        success[rows] = ok
        queries[rows] += counter.queries
        calls += counter.calls
    delta = x_adv - x
    l2 = np.where(success, _lp(delta, "l2"), np.inf)
    linf = np.where(success, _lp(delta, "linf"), np.inf)
    wall_s = time.perf_counter() - t0
    log.info("%s: success %d/%d (%d correct when clean), %d calls, max %d queries per image, %.1f s%s",
             attack_repr, int(success.sum()), n_all, int(correct.sum()), calls, int(queries.max()), wall_s,
             " (budget hit)" if budget_hit else "")
    return DecisionResult(x_adv=x_adv, success=success, queries=queries, l2=l2, linf=linf, pred_adv=pred_adv,
                          pred_clean=pred_clean, wall_s=wall_s, calls=calls, budget_hit=budget_hit, slots=slots,
                          no_start=no_start, attack=attack_repr, params=dict(used))


# ----------------------------------------------------------------------------- evaluation
def reevaluate(fn_fresh: BlackBox, x_adv: np.ndarray, y: np.ndarray, repeats: int) -> np.ndarray:
    """(n,) success probability of each ``x_adv`` under fresh noise: the fraction of ``repeats``
    calls of ``fn_fresh`` on the whole batch whose prediction differs from ``y``."""
    x_adv = _as_images(x_adv, "x_adv")
    y = _as_labels(y, len(x_adv))
    repeats = int(repeats)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    fooled = np.zeros(len(x_adv))
    for _ in range(repeats):
        fooled += _scores(fn_fresh, x_adv).argmax(axis=1) != y
    return fooled / repeats


def robust_curve(norms: np.ndarray, success: np.ndarray, clean_correct: np.ndarray,
                 eps_list: Sequence[float]) -> np.ndarray:
    """(len(eps_list),) robust accuracy from minimal perturbation norms.

    An image is robust at eps when it is classified correctly when clean and either no adversarial
    was found (``success`` False) or the adversarial's norm is larger than eps. The fraction is over
    all n images.
    """
    norms = np.asarray(norms, dtype=np.float64)
    success = np.asarray(success, bool)
    clean_correct = np.asarray(clean_correct, bool)
    if not (norms.shape == success.shape == clean_correct.shape) or norms.ndim != 1:
        raise ValueError("norms, success and clean_correct must be (n,) arrays of one length")
    eps = np.asarray(list(eps_list), dtype=np.float64)
    if len(norms) == 0:
        return np.full(len(eps), np.nan)
    robust = clean_correct[None, :] & (~success[None, :] | (norms[None, :] > eps[:, None]))
    return robust.mean(axis=1)
