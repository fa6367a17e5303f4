"""Checks of an attack evaluation that can fail, and mean something when they do.

Each compares per-image outcomes of attacks run on the same images with an exact McNemar test
(:func:`attacks.stats.mcnemar`), so a real gap is caught and a one-image difference is not:

- :func:`check_dominance`: an attack that contains another (PGD contains FGSM's single step) is
  significantly weaker than it: the stronger attack is broken or under-budgeted;
- :func:`check_gradient_masking`: uniform noise fools significantly more images than a gradient
  attack at the same eps, or a black-box / transfer attack beats the best white-box evaluation:
  the gradients the attack follows do not lead to the decision boundary (gradient masking
  suspected, Athalye et al. 2018);
- :func:`check_budget`: the strongest attack leaves robust accuracy well above 0 at a large
  budget (L-inf 0.5 by default: half the input range, enough to draw any digit): the attack is
  too weak, or the sweep stopped too early;
- :func:`check_zero_gradients`: a large fraction of the attacked inputs have an exactly zero
  input gradient (a saturated or piecewise-constant model).

Where :func:`check_budget` fails, the suite adds to its detail how many of the images the strong
evaluation left have an all-zero input gradient at its last iterates (:func:`budget_survivors`):
a survivor there sits in a flat region the gradient attacks cannot leave (e.g. a ReLU network with
no active unit), which is gradient masking rather than robustness.

Every function returns a list of messages (empty: passed) and the per-check records
(:class:`CheckOutcome`) that the report lists with their outcome.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from attacks.stats import ALPHA, mcnemar

__all__ = ["CheckOutcome", "budget_survivors", "check_dominance", "check_gradient_masking", "check_budget",
           "check_zero_gradients", "zero_gradient_fraction",
           "LARGE_EPS", "LARGE_EPS_MAX_ACC", "ZERO_GRAD_MAX_FRAC"]

LARGE_EPS = 0.5           # L-inf budget at which every model of [0, 1] inputs should be broken
LARGE_EPS_MAX_ACC = 0.05  # ... robust accuracy above this there: the attack is too weak
ZERO_GRAD_MAX_FRAC = 0.5  # more attacked inputs than this with an all-zero input gradient: masking suspected


@dataclass(frozen=True)
class CheckOutcome:
    """One check at one eps: its name, what it compared, whether it passed, and the evidence."""

    check: str
    subject: str
    eps: float | None
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _at(ev, eps: float) -> int | None:
    return next((i for i, e in enumerate(ev.epsilons) if abs(e - eps) < 1e-9), None)


def _paired(strong_name: str, strong, weak_name: str, weak, *, check: str, alpha: float,
            verb: str) -> tuple[list[str], list[CheckOutcome]]:
    """Flag the eps where ``weak`` fools significantly more images than ``strong``."""
    messages, outcomes = [], []
    for eps in strong.epsilons:
        i, j = _at(strong, eps), _at(weak, eps)
        if j is None or eps == 0:
            continue
        a, b = strong.correct[i], weak.correct[j]
        t = mcnemar(a, b)  # only_a: robust under `strong`, fooled by `weak`
        bad = t.only_a > t.only_b and t.p_value < alpha
        detail = (f"{t.only_a} images fooled only by {weak_name}, {t.only_b} only by {strong_name} "
                  f"(exact McNemar p={t.p_value:.3g})")
        outcomes.append(CheckOutcome(check, f"{strong_name} vs {weak_name}", float(eps), not bad, detail))
        if bad:
            messages.append(f"eps={eps:g}: {verb.format(strong=strong_name, weak=weak_name)}: {detail}")
    return messages, outcomes


def check_dominance(evals: Mapping[str, Any], pairs: Sequence[tuple[str, str]], *,
                    alpha: float = ALPHA) -> tuple[list[str], list[CheckOutcome]]:
    """``(stronger, weaker)`` evaluation names: the stronger must not be significantly weaker."""
    messages, outcomes = [], []
    for s, w in pairs:
        if s in evals and w in evals:
            m, o = _paired(s, evals[s], w, evals[w], check="dominance", alpha=alpha,
                           verb="{strong} is weaker than {weak}, which it contains")
            messages += m
            outcomes += o
    return messages, outcomes


def check_gradient_masking(evals: Mapping[str, Any], *, gradient: Sequence[str], gradient_free: Sequence[str],
                           alpha: float = ALPHA) -> tuple[list[str], list[CheckOutcome]]:
    """Every gradient-free attack (noise, black-box, transfer) against every gradient attack."""
    messages, outcomes = [], []
    for g in gradient:
        for f in gradient_free:
            if g in evals and f in evals:
                m, o = _paired(g, evals[g], f, evals[f], check="gradient_masking", alpha=alpha,
                               verb="gradient masking suspected: {weak} beats the gradient attack {strong}")
                messages += m
                outcomes += o
    return messages, outcomes


def judged_index(epsilons, large_eps: float = LARGE_EPS) -> int:
    """Index of the eps the budget check judges in an ascending sweep: the first eps >= ``large_eps``,
    else the sweep's last (a sweep that stopped early, at an eps where the model was already broken)."""
    eps = [float(e) for e in epsilons]
    if not eps:
        raise ValueError("judged_index: an empty eps sweep")
    return next((k for k, e in enumerate(eps) if e >= large_eps - 1e-9), len(eps) - 1)


def check_budget(name: str, ev, *, large_eps: float = LARGE_EPS,
                 max_acc: float = LARGE_EPS_MAX_ACC) -> tuple[list[str], list[CheckOutcome]]:
    """The strongest evaluation must leave robust accuracy <= ``max_acc`` at ``large_eps``; its
    sweep must reach ``large_eps`` or stop earlier at robust accuracy <= ``max_acc``."""
    if ev is None or not ev.rows:
        return [], []
    i = judged_index([r["eps"] for r in ev.rows], large_eps)
    row = ev.rows[i]
    ok = row["robust_acc"] <= max_acc
    if row["eps"] >= large_eps - 1e-9:
        detail = f"robust accuracy {row['robust_acc']:.3f} at eps={row['eps']:g} (must be <= {max_acc:g})"
    else:
        detail = (f"the sweep stopped at eps={row['eps']:g} with robust accuracy {row['robust_acc']:.3f}, "
                  f"short of eps={large_eps:g}" if not ok else
                  f"robust accuracy {row['robust_acc']:.3f} by eps={row['eps']:g} (<= {max_acc:g})")
    out = CheckOutcome("budget", name, float(row["eps"]), ok, detail)
    return ([] if ok else [f"attack too weak: {name} {detail}"]), [out]


def zero_gradient_fraction(fmodel: Any, x: np.ndarray, y: np.ndarray, loss: str = "ce", batch_size: int = 256) -> float:
    """Fraction of inputs whose input gradient of ``loss`` is exactly zero everywhere."""
    import eagerpy as ep

    from attacks.foolbox_attacks import PGD

    atk = PGD(loss=loss, steps=1)
    zero = 0
    for lo in range(0, len(x), batch_size):
        xb = np.ascontiguousarray(x[lo:lo + batch_size], dtype=np.float32)
        yb = np.asarray(y[lo:lo + batch_size], dtype=np.int64)
        import torch

        device = getattr(fmodel, "device", "cpu")
        inputs = ep.astensor(torch.as_tensor(xb).to(device))
        labels = ep.astensor(torch.as_tensor(yb).to(device))
        loss_fn = atk.get_loss_fn(fmodel, labels)
        _, grad = ep.value_and_grad(loss_fn, inputs)
        g = grad.numpy().reshape(len(xb), -1)
        zero += int((np.abs(g).max(axis=1) == 0).sum())
    return zero / max(len(x), 1)


def budget_survivors(ev, y: np.ndarray, *, large_eps: float = LARGE_EPS) -> tuple[float | None, np.ndarray, np.ndarray]:
    """``(eps, inputs, labels)`` of the images ``ev`` left robust at the eps :func:`check_budget`
    judges (the first eps >= ``large_eps``, else the sweep's last), at the inputs that decided them
    (the attack's last iterates); ``(None, empty, empty)`` without rows."""
    if ev is None or not ev.rows:
        return None, np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    i = judged_index(ev.epsilons, large_eps)
    left = np.asarray(ev.correct[i], bool)
    return float(ev.epsilons[i]), np.asarray(ev.adversarial[i])[left], np.asarray(y)[left]


def check_zero_gradients(fmodel: Any, x: np.ndarray, y: np.ndarray, *, loss: str = "ce", subject: str = "model",
                         max_frac: float = ZERO_GRAD_MAX_FRAC) -> tuple[list[str], list[CheckOutcome], float]:
    """Flag a model whose input gradient is zero on more than ``max_frac`` of ``x``."""
    frac = zero_gradient_fraction(fmodel, x, y, loss)
    ok = frac <= max_frac
    detail = f"{frac:.1%} of the attacked inputs have an all-zero {loss} input gradient (limit {max_frac:.0%})"
    out = CheckOutcome("zero_gradients", subject, None, ok, detail)
    return ([] if ok else [f"gradient masking suspected: {subject}: {detail}"]), [out], frac
