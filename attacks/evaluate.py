"""Robust accuracy of any model under any Foolbox-style attack, and the checks every result passes.

:func:`evaluate_attack` is the one evaluation loop of the project. It is model-agnostic: the
attack crafts inputs on a Foolbox model ``fmodel`` (the model itself, a differentiable surrogate,
or a black box wrapped in ``fb.models.NumPyModel``), and a plain ``predict`` function (numpy in,
labels out) decides whether each crafted input fools the model under test. So the same loop
serves white-box attacks on the rate model, transfer attacks from a surrogate to a spiking
network, and decision-based attacks on a black box.

Definitions (one row per eps):

- an image is *robust* at eps when it is classified correctly without perturbation and every
  attack in ``attacks`` (restarts, or several losses: the worst case per image is taken) fails
  to fool ``predict`` at eps; with ``prune=True`` also at every smaller eps of the sweep (an
  input that fools the model at eps_i lies inside every larger ball, so it is carried forward and,
  with ``recheck=True``, re-checked with ``predict`` for a model that may answer differently the
  next time; only still-robust images are attacked again, which is what makes wide models
  affordable);
- ``n_correct``: robust images; ``robust_acc = n_correct / n``; ``ci_low``, ``ci_high``: its exact
  95% interval, the image as the unit (:func:`attacks.stats.proportion_ci`);
- ``n_attacked``: images handed to the attacks at that eps, summed over restarts (the cost);
  ``n_known_fooled``: images decided by an earlier evaluation instead (``known``);
- ``mean_linf``, ``mean_l2``: mean distance from the clean images of the inputs that decided
  each image's outcome (the fooling input, or the last attempt for robust images; 0 for images
  misclassified without perturbation, which are never attacked); ``max_linf``, ``x_min``,
  ``x_max`` feed the checks.

:func:`check_rows` returns one message per violated invariant: robust accuracy rising with eps;
a stronger attack (PGD) weaker than a weaker one (FGSM) at the same eps and loss; a perturbation
larger than eps; an input outside [0, 1].
"""
from __future__ import annotations

import logging
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import eagerpy as ep
import numpy as np

from attacks.stats import proportion_ci
from core.errors import CerebError

log = logging.getLogger(__name__)

__all__ = ["ROBUSTNESS_COLUMNS", "DOMINANCE", "Evaluation", "evaluate_attack", "worst_case", "attack_once", "derive_seed",
           "check_rows"]

# one schema for both suites (attacks.specs.stamp fills the last six columns of a rate model's rows:
# queries 0, noise_mode "none", success_prob / trial_acc NaN, the spec's norm and gradient source)
ROBUSTNESS_COLUMNS = ["model", "attack", "loss", "eps", "seed", "n", "n_correct", "robust_acc", "mean_linf", "mean_l2",
                      "ci_low", "ci_high", "queries", "noise_mode", "success_prob", "trial_acc", "norm", "source"]
# the columns evaluate_attack's rows begin with (the suites add the rest)
EVALUATION_COLUMNS = ROBUSTNESS_COLUMNS[:12]

# (stronger, weaker): the stronger attack's robust accuracy must not exceed the weaker one's at the
# same eps for a shared loss (rows that combine losses name them joined by "+", e.g. "margin+ce").
DOMINANCE: tuple[tuple[str, str], ...] = (("pgd", "fgsm"),)

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class Evaluation:
    """The result of :func:`evaluate_attack`.

    Attributes
    ----------
    rows : one dict per eps (columns :data:`ROBUSTNESS_COLUMNS` and more).
    epsilons : the eps values evaluated, ascending (the sweep may have been extended).
    correct : (n_eps, n) bool, robust images per eps.
    adversarial : (n_eps, n, n_inputs) float32, the inputs that decided each outcome.
    """

    rows: list[dict]
    epsilons: list[float]
    correct: np.ndarray
    adversarial: np.ndarray
    clean_correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def eps_at(self, target_acc: float) -> float | None:
        """The smallest evaluated eps with robust accuracy <= ``target_acc`` (None if none)."""
        for row in self.rows:
            if row["robust_acc"] <= target_acc:
                return row["eps"]
        return None


def derive_seed(seed: int, *parts: Any) -> int:
    """A 32-bit seed derived from ``seed`` and labels (attack, loss, eps, restart, batch)."""
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _to_model_input(fmodel: Any, arr: np.ndarray):
    try:
        import foolbox as fb
        import torch

        if isinstance(fmodel, fb.PyTorchModel):
            return torch.from_numpy(np.ascontiguousarray(arr)).to(fmodel.device)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return np.ascontiguousarray(arr)


def attack_once(attack: Any, fmodel: Any, xb: np.ndarray, yb: np.ndarray, eps: float, seed: int) -> np.ndarray:
    """One Foolbox call ``attack(fmodel, x, y, epsilons=[eps])``; returns the clipped inputs.

    Torch's and numpy's global generators (which Foolbox's random starts draw from) are seeded
    with ``seed`` and restored afterwards.
    """
    import torch

    np_state = np.random.get_state()
    try:
        np.random.seed(seed % (2**32))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, clipped, _ = attack(fmodel, _to_model_input(fmodel, xb), _to_model_input(fmodel, yb), epsilons=[eps])
    except NotImplementedError as exc:
        raise CerebError(
            f"{attack!r} needs gradients that this model does not provide ({type(exc).__name__}); "
            "use a decision-based attack or a differentiable surrogate"
        ) from None
    finally:
        np.random.set_state(np_state)
    out = clipped[0] if isinstance(clipped, (list, tuple)) else clipped
    return np.asarray(ep.astensor(out).numpy(), dtype=np.float32).reshape(xb.shape)


def _eps_sequence(epsilons: Sequence[float], until_acc: float | None, eps_step: float, eps_max: float):
    """Yields the sorted eps list, then (if asked) more eps in ``eps_step`` until told to stop."""
    eps_sorted = sorted({float(e) for e in epsilons})
    for e in eps_sorted:
        yield e
    if until_acc is None:
        return
    k = 1
    last = eps_sorted[-1] if eps_sorted else 0.0
    while True:
        e = round(last + k * eps_step, 6)
        if e > eps_max + 1e-9:
            return
        yield e
        k += 1


def evaluate_attack(
    attacks: Any | Sequence[Any],
    fmodel: Any,
    predict: Predict,
    x: np.ndarray,
    y: np.ndarray,
    epsilons: Sequence[float],
    *,
    model: str,
    attack: str,
    loss: str,
    seed: int = 0,
    prune: bool = True,
    recheck: bool = True,
    batch_size: int = 256,
    until_acc: float | None = None,
    eps_step: float = 0.05,
    eps_max: float = 1.0,
    extra: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    known: Sequence[Evaluation] = (),
    resume: Evaluation | None = None,
    on_eps: Callable[[Evaluation], None] | None = None,
) -> Evaluation:
    """Robust accuracy of ``predict`` under ``attacks`` at each eps.

    Parameters
    ----------
    attacks : a Foolbox attack, or a sequence of them (restarts and/or losses): an image is
        robust only if all fail. Anything with Foolbox's call signature
        ``attack(fmodel, inputs, labels, epsilons=[eps]) -> (raw, clipped, success)`` works.
    fmodel : the Foolbox model the attacks run on.
    predict : ``(n, n_inputs) float32 in [0, 1] -> (n,) int`` labels of the model under test.
    x : (n, n_inputs) clean inputs in [0, 1]; y : (n,) labels.
    epsilons : L-inf budgets (>= 0); evaluated in ascending order.
    model, attack, loss : labels written into every row.
    seed : base of the per-call seeds of the attacks' random starts.
    prune : attack only images still robust at the previous eps (see the module docstring).
    recheck : with ``prune``, ask ``predict`` again at every eps about the carried inputs (needed
        when ``predict`` is not a fixed function of its input; for a deterministic model it only
        repeats a forward pass of every fooled image at every eps, which at width 200,000 cost
        ~2 s per eps and attack).
    batch_size : images per attack call.
    until_acc : if given, extend the sweep by ``eps_step`` (up to ``eps_max``) until robust
        accuracy <= ``until_acc``.
    extra : more columns for every row (e.g. steps, stepsize).
    progress : called with a short label after each eps.
    known : earlier evaluations of the same images (cheaper attacks): at an eps one of them
        evaluated, an image it fooled is not attacked again if its fooling input, asked of
        ``predict`` once more, still fools the model; it counts as fooled, with that input. The
        row's ``n_known_fooled`` says how many. An image is then robust only if the earlier
        attacks *and* these failed (the cheap attack first, as the evaluation literature does).
    resume : the evaluation of the first eps of this same sweep, from an interrupted earlier call
        with the same arguments (``on_eps`` wrote it): those eps are not attacked again and the
        sweep goes on from the next, with the images and inputs it carried. Every attack call's
        seed depends only on the labels, eps, restart and batch, so the result equals an
        uninterrupted call's. A resume whose eps or clean predictions differ is an error.
    on_eps : called after each eps with the evaluation so far (to save it for ``resume``).
    """
    attack_list = list(attacks) if isinstance(attacks, (list, tuple)) else [attacks]
    if not attack_list:
        raise ValueError("evaluate_attack needs at least one attack")
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x must be (n, n_inputs) and y (n,), got {x.shape} and {y.shape}")
    bad = [e for e in epsilons if not e >= 0]
    if bad:
        raise CerebError(f"eps must be >= 0, got {bad[0]}")
    n = len(y)
    clean_correct = np.asarray(predict(x)) == y
    robust = clean_correct.copy()
    carried = x.copy()
    rows, eps_done, correct_all, adv_all = [], [], [], []
    if resume is not None and len(resume.epsilons):
        if not np.array_equal(resume.clean_correct, clean_correct) or resume.adversarial.shape[1:] != x.shape:
            raise CerebError(f"cannot resume {attack}/{loss}: the saved evaluation is of other images or another model")
        rows = [dict(r) for r in resume.rows]
        eps_done = [float(e) for e in resume.epsilons]
        correct_all = [c.copy() for c in resume.correct]
        adv_all = [a.copy() for a in resume.adversarial]
        if prune:
            robust, carried = correct_all[-1].copy(), adv_all[-1].copy()

    def partial() -> Evaluation:
        return Evaluation(list(rows), list(eps_done), np.array(correct_all, dtype=bool).reshape(len(eps_done), n),
                          np.array(adv_all, dtype=np.float32).reshape(len(eps_done), *x.shape), clean_correct)

    for i, eps in enumerate(_eps_sequence(epsilons, until_acc, eps_step, eps_max)):
        if i < len(eps_done):  # evaluated before the interruption
            if abs(eps_done[i] - eps) > 1e-9:
                raise CerebError(f"cannot resume {attack}/{loss}: the saved evaluation has eps {eps_done[i]:g} "
                                 f"where this sweep has {eps:g}")
            if progress:
                progress(f"{attack}/{loss} eps={eps:g}")
            if (until_acc is not None and eps >= max(epsilons, default=0) and i == len(eps_done) - 1
                    and rows[i]["robust_acc"] <= until_acc):
                break
            continue
        t0 = time.time()
        alive = (robust if prune else clean_correct).copy()
        adv = (carried if prune else x).copy()
        if eps > 0 and prune and recheck:
            # re-check carried inputs with predict: a stochastic model may now get them right
            back = np.flatnonzero(clean_correct & ~alive)
            if len(back):
                again = np.asarray(predict(adv[back])) == y[back]
                alive[back[again]] = True
        n_known = n_attacked = 0
        if eps > 0:
            for ev in known:
                i = next((i for i, e in enumerate(ev.epsilons) if abs(e - eps) < 1e-9), None)
                if i is None:
                    continue
                cand = np.flatnonzero(alive & ~ev.correct[i] & ev.clean_correct)
                if len(cand):
                    still = np.asarray(predict(ev.adversarial[i][cand])) != y[cand]
                    hit = cand[still]
                    adv[hit] = ev.adversarial[i][hit]
                    alive[hit] = False
                    n_known += len(hit)
            for r, atk in enumerate(attack_list):
                todo = np.flatnonzero(alive)
                for b, lo in enumerate(range(0, len(todo), batch_size)):
                    idx = todo[lo:lo + batch_size]
                    n_attacked += len(idx)
                    xa = attack_once(atk, fmodel, x[idx], y[idx], eps, derive_seed(seed, model, attack, loss, eps, r, b))
                    fooled = np.asarray(predict(xa)) != y[idx]
                    adv[idx] = xa
                    alive[idx[fooled]] = False
                if not alive.any():
                    break
        delta = (adv - x).reshape(n, -1)
        linf = np.abs(delta).max(axis=1) if n else np.zeros(0)
        l2 = np.sqrt((delta.astype(np.float64) ** 2).sum(axis=1)) if n else np.zeros(0)
        n_correct = int(alive.sum())
        row = {
            "model": model, "attack": attack, "loss": loss, "eps": float(eps), "seed": seed, "n": n,
            "n_correct": n_correct, "robust_acc": n_correct / n if n else float("nan"),
            "mean_linf": float(linf.mean()) if n else float("nan"),
            "mean_l2": float(l2.mean()) if n else float("nan"),
            **dict(zip(("ci_low", "ci_high"), proportion_ci(n_correct, n))),
            "max_linf": float(linf.max()) if n else 0.0,
            "x_min": float(adv.min()) if n else 0.0, "x_max": float(adv.max()) if n else 0.0,
            "restarts": len(attack_list), "prune": prune, "n_known_fooled": n_known, "n_attacked": n_attacked,
            "wall_s": time.time() - t0,
            **dict(extra or {}),
        }
        rows.append(row)
        eps_done.append(float(eps))
        correct_all.append(alive.copy())
        adv_all.append(adv)
        log.info("%s %s/%s eps=%g: robust acc %.4f (%d/%d), %.1f s", model, attack, loss, eps,
                 row["robust_acc"], n_correct, n, row["wall_s"])
        if prune:
            robust, carried = alive, adv
        if on_eps is not None:
            on_eps(partial())
        if progress:
            progress(f"{attack}/{loss} eps={eps:g}")
        if until_acc is not None and eps >= max(epsilons, default=0) and row["robust_acc"] <= until_acc:
            break
    return partial()


def worst_case(evaluations: Sequence[Evaluation], x: np.ndarray, *, model: str, seed: int = 0,
               attack: str = "worst", loss: str = "all", partial: bool = False) -> list[dict]:
    """Rows of the per-image worst case over several evaluations of the same images.

    At each eps that every evaluation has, an image is robust only if it is robust under all of
    them; its recorded input is the first fooling one (in the order given), else the last
    evaluation's. ``partial``: at every eps of any evaluation, over the evaluations that have it
    (an attack run only at some budgets, e.g. the headline ones, counts where it ran); ``attacks``
    in each row says how many evaluations it covers.
    """
    if not evaluations:
        return []
    if partial:
        common = sorted({e for ev in evaluations for e in ev.epsilons})
    else:
        common = [e for e in evaluations[0].epsilons if all(e in ev.epsilons for ev in evaluations)]
    n = len(x)
    rows = []
    for eps in common:
        these = [ev for ev in evaluations if eps in ev.epsilons]
        idx = [ev.epsilons.index(eps) for ev in these]
        correct = np.logical_and.reduce([ev.correct[i] for ev, i in zip(these, idx)])
        adv = these[-1].adversarial[idx[-1]].copy()
        for ev, i in reversed(list(zip(these, idx))):
            fooled = ~ev.correct[i] & ev.clean_correct
            adv[fooled] = ev.adversarial[i][fooled]
        delta = (adv - x).reshape(n, -1)
        linf = np.abs(delta).max(axis=1)
        l2 = np.sqrt((delta.astype(np.float64) ** 2).sum(axis=1))
        n_correct = int(correct.sum())
        rows.append({"model": model, "attack": attack, "loss": loss, "eps": float(eps), "seed": seed, "n": n,
                     "n_correct": n_correct, "robust_acc": n_correct / n, "mean_linf": float(linf.mean()),
                     "mean_l2": float(l2.mean()), **dict(zip(("ci_low", "ci_high"), proportion_ci(n_correct, n))),
                     "max_linf": float(linf.max()), "x_min": float(adv.min()),
                     "x_max": float(adv.max()), "restarts": sum(ev.rows[0].get("restarts", 1) for ev in these),
                     "prune": all(ev.rows[0].get("prune", False) for ev in these), "wall_s": 0.0,
                     **({"attacks": len(these)} if partial else {})})
    return rows


# ----------------------------------------------------------------------------- checks
def _key(row: Mapping) -> tuple:
    return (row["model"], row["attack"], row["loss"], row["seed"])


def check_rows(rows: Iterable[Mapping[str, Any]], *, eps_tol: float = 1e-5,
               dominance: Sequence[tuple[str, str]] = DOMINANCE) -> list[str]:
    """Messages for every violated invariant of a robustness table (empty list: all passed).

    - robust accuracy never rises with eps (per model, attack, loss, seed);
    - for each ``(stronger, weaker)`` pair, the stronger attack's robust accuracy is not above
      the weaker one's at the same eps for a shared loss;
    - ``max_linf <= eps + eps_tol`` and ``0 <= x_min``, ``x_max <= 1`` where those columns exist;
    - ``0 <= n_correct <= n``.
    """
    rows = list(rows)
    messages = []
    groups: dict[tuple, list] = defaultdict(list)
    for row in rows:
        groups[_key(row)].append(row)
        label = f"{row['model']} {row['attack']}/{row['loss']} eps={row['eps']:g}"
        if "max_linf" in row and row["max_linf"] > row["eps"] + eps_tol:
            messages.append(f"{label}: perturbation {row['max_linf']:.6g} exceeds eps (tolerance {eps_tol:g})")
        if "x_min" in row and row["x_min"] < 0:
            messages.append(f"{label}: input value {row['x_min']:.6g} below 0")
        if "x_max" in row and row["x_max"] > 1:
            messages.append(f"{label}: input value {row['x_max']:.6g} above 1")
        if not 0 <= row["n_correct"] <= row["n"]:
            messages.append(f"{label}: n_correct {row['n_correct']} outside [0, n={row['n']}]")
    for (model, attack, loss, seed), group in groups.items():
        group = sorted(group, key=lambda r: r["eps"])
        for a, b in zip(group, group[1:]):
            if b["robust_acc"] > a["robust_acc"]:
                messages.append(
                    f"{model} {attack}/{loss}: robust accuracy rises with eps "
                    f"({a['robust_acc']:.4f} at eps={a['eps']:g} -> {b['robust_acc']:.4f} at eps={b['eps']:g})"
                )
    for stronger, weaker in dominance:
        weak = {(r["model"], r["loss"], round(r["eps"], 9), r["seed"]): r for r in rows if r["attack"] == weaker}
        for s in (r for r in rows if r["attack"] == stronger):
            for loss in s["loss"].split("+"):
                w = weak.get((s["model"], loss, round(s["eps"], 9), s["seed"]))
                if w is not None and s["robust_acc"] > w["robust_acc"]:
                    messages.append(
                        f"{s['model']} eps={s['eps']:g}: {stronger}/{s['loss']} is weaker than {weaker}/{loss} "
                        f"(robust accuracy {s['robust_acc']:.4f} > {w['robust_acc']:.4f})"
                    )
    return messages
