"""The seed paper's attacks plus a strong evaluation, run on one model, checked, with evidence.

Paper's protocol (Yuezhang, Li & Chen 2021): uniform noise, FGSM and PGD (L-inf, 40 steps of
0.01, random start) ascending the MSE to the one-hot target, at eps 0 to 0.3. Here FGSM and PGD
also run with the cross-entropy and margin (Carlini & Wagner 2017) losses.

Strong evaluation (Carlini et al. 2019, "On evaluating adversarial robustness"): PGD with
``strong_steps`` (100) steps of ``strong_rel_stepsize * eps`` and ``strong_restarts`` (5) random
restarts, cycling through ``strong_losses`` (margin, cross-entropy); an image counts as robust only
if every restart fails. Its eps sweep continues past the paper's 0.3 in steps of ``eps_step``
until robust accuracy <= ``target_acc`` (1%); that eps is reported.

Evidence: where MSE-PGD leaves robust accuracy at least ``trace_gap`` above the strong
evaluation at some eps, the images that survive MSE-PGD but not the strong attack are attacked
again by PGD with the paper's settings under the MSE and the margin loss, recording loss, margin,
accuracy and input-gradient norms at every step (``pgd_traces.csv``).

Cheap first: with ``strong_after_cheap`` (default) the strong evaluation runs last and skips, at
each eps, the images an earlier attack of the suite already fooled there (re-checked once with
``predict``), so its cost goes to the images that are still undecided.

AutoAttack's white-box core: APGD-CE and APGD-DLR (Croce & Hein 2020, ART's implementation,
``attack.apgd``, 100 iterations) run last, on the images no earlier attack fooled at that eps. The
strong PGD stays beside it for what APGD lacks: the Carlini-Wagner margin loss and the eps sweep
continued until robust accuracy <= 1%.

Resumable: with ``checkpoint`` (a folder), every evaluation is saved there after each eps
(``<attack>_<loss>.npz``, loadable without pickle), and a later call with the same folder takes
what is saved instead of attacking again: a finished evaluation whole, an interrupted one from its
next eps (:func:`attacks.evaluate.evaluate_attack`'s ``resume``). The attack calls' seeds depend
only on their labels, so a resumed suite gives the numbers an uninterrupted one gives.

Worst case: rows with attack ``worst`` (loss ``all``) count an image as robust only if it
survived every attack above at that eps.

Checks that can fail (:mod:`attacks.checks`; each listed in ``metrics["checks"]`` with its
outcome): PGD significantly weaker than FGSM with the same loss (paired, exact McNemar at 5%, so a
one-image difference does not fail), uniform noise or the score-based Square attack
(``attack.square``) beating a gradient attack (gradient masking suspected), the strong evaluation leaving more than 5% robust at L-inf 0.5 (attack too weak), and
more than half of the attacked inputs with an all-zero input gradient. Perturbation within eps
and inputs within [0, 1] are checked per row; the worst case containing every attack is asserted.

The suite is model-agnostic like :func:`attacks.evaluate.evaluate_attack`: it takes a Foolbox
model and a ``predict`` function.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from attacks.checks import (budget_survivors, check_budget, check_dominance, check_gradient_masking,
                            check_zero_gradients, zero_gradient_fraction)
from attacks.config import AttackConfig
from attacks.evaluate import Evaluation, attack_once, check_rows, derive_seed, evaluate_attack, worst_case
from attacks.foolbox_attacks import TracedPGD
from attacks.specs import build, spec, stamp

log = logging.getLogger(__name__)

__all__ = ["AttackConfig", "SuiteResult", "run_suite", "plan_size", "TRACE_COLUMNS", "save_evaluation", "load_evaluation"]

TRACE_COLUMNS = ["model", "eps", "loss", "step", "n", "loss_mean", "margin_mean", "frac_correct", "true_score_mean",
                 "other_score_mean", "grad_l1_mean", "grad_l2_mean", "grad_linf_mean", "grad_zero_frac"]


@dataclass
class SuiteResult:
    """What either suite returns (:func:`run_suite`, :func:`attacks.spiking.run_spiking_suite`):
    rows of ``robustness.csv`` (:data:`attacks.evaluate.ROBUSTNESS_COLUMNS`), failed-check messages,
    PGD trace rows (rate suite), scalar metrics, the evaluations by name; the spiking suite also
    fills the transfer matrix rows, the decision-based attacks' arrays and example adversarials."""

    rows: list[dict]
    messages: list[str]
    traces: list[dict]
    metrics: dict
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    transfer: list[dict] = field(default_factory=list)
    decision: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def checks_passed(self) -> bool:
        return not self.messages


def plan_size(cfg: AttackConfig) -> int:
    """Number of (attack, eps) cells the suite runs before any extension of the strong sweep."""
    per_loss = int(cfg.fgsm) + int(cfg.pgd)
    return len(cfg.eps) * (int(cfg.noise) + per_loss * len(cfg.losses) + int(cfg.square) + int(cfg.strong)
                           + int(cfg.apgd))


def _logits(fmodel: Any, x: np.ndarray):
    import eagerpy as ep

    from attacks.evaluate import _to_model_input

    return ep.astensor(fmodel(_to_model_input(fmodel, np.asarray(x, dtype=np.float32)))).numpy()


def save_evaluation(path: str | Path, ev: Evaluation, *, complete: bool, wall_s: float) -> Path:
    """Write ``ev`` to ``path`` (``.npz``, no pickle: the rows as JSON), marked complete or not, with
    the seconds spent on it so far."""
    from core.runs import save_npz

    return save_npz(path, rows=np.array(json.dumps(ev.rows)), epsilons=np.asarray(ev.epsilons, dtype=np.float64),
                    correct=ev.correct, adversarial=ev.adversarial, clean_correct=ev.clean_correct,
                    complete=np.array(complete), wall_s=np.array(float(wall_s)))


def load_evaluation(path: str | Path) -> tuple[Evaluation, bool, float]:
    """``(evaluation, complete, wall_s)`` from a file :func:`save_evaluation` wrote; a file that is not
    one is a :class:`~core.errors.CerebError` naming it."""
    from core.errors import CerebError

    try:
        with np.load(path, allow_pickle=False) as z:
            ev = Evaluation(json.loads(str(z["rows"])), [float(e) for e in z["epsilons"]], z["correct"].astype(bool),
                            z["adversarial"].astype(np.float32), z["clean_correct"].astype(bool))
            return ev, bool(z["complete"]), float(z["wall_s"])
    except (OSError, ValueError, KeyError) as exc:
        raise CerebError(f"{path}: not a saved attack evaluation ({exc})") from None


def run_suite(fmodel: Any, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
              cfg: AttackConfig, *, model: str, seed: int = 0, batch_size: int = 256,
              progress: Callable[[str], None] | None = None, checkpoint: str | Path | None = None) -> SuiteResult:
    """Run every attack of ``cfg`` on ``(x, y)``, check the table, and gather evidence.

    Parameters
    ----------
    fmodel : Foolbox model the attacks run on (bounds (0, 1)).
    predict : labels of the model under test, ``(n, n_inputs) -> (n,)``.
    x, y : (n, n_inputs) test inputs in [0, 1] and their (n,) labels.
    model : the model's name in every row.
    batch_size : images per attack call (``cfg.batch_size`` wins if set).
    checkpoint : a folder to save each evaluation in after every eps, and to resume from (see the
        module docstring); ``metrics["resumed"]`` names the evaluations taken from it.
    """
    bs = cfg.batch_size or batch_size
    # the models here are deterministic (eval mode): an input that fooled them once still does
    common = dict(model=model, seed=seed, prune=cfg.prune, recheck=False, batch_size=bs, progress=progress)
    evals: dict[str, Evaluation] = {}
    timings = {}
    resumed: dict[str, int] = {}  # evaluation -> eps taken from the checkpoint
    folder = Path(checkpoint) if checkpoint is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    def run(name: str, attack: str, loss: str, **kw) -> None:
        """Build ``attack`` from the table (attacks.specs) and evaluate it at every eps."""
        t0 = time.time()
        path = folder / f"{name.replace('/', '_')}.npz" if folder is not None else None
        before, earlier = None, 0.0
        if path is not None and path.is_file():
            before, complete, earlier = load_evaluation(path)
            resumed[name] = len(before.epsilons)
            if complete:
                log.info("%s: taken whole from %s", name, path)
                evals[name], timings[name] = before, earlier
                for e in before.epsilons:
                    if progress:
                        progress(f"{attack}/{loss} eps={e:g}")
                return
            log.info("%s: resumed from %s after eps %g", name, path, before.epsilons[-1] if before.epsilons else 0)

        def save(ev: Evaluation, complete: bool = False) -> None:
            if path is not None:
                save_evaluation(path, ev, complete=complete, wall_s=earlier + time.time() - t0)

        attacks = build("rate", attack, cfg, loss, batch_size=bs)
        evals[name] = evaluate_attack(attacks, fmodel, predict, x, y, cfg.eps, attack=attack, loss=loss, **common, **kw,
                                      resume=before, on_eps=save)
        save(evals[name], complete=True)
        timings[name] = earlier + time.time() - t0

    if cfg.noise:
        run("noise/none", "noise", "none", extra={"steps": 0, "stepsize": float("nan")})
    for loss in cfg.losses:
        if cfg.fgsm:
            run(f"fgsm/{loss}", "fgsm", loss, extra={"steps": 1, "stepsize": float("nan")})
    for loss in cfg.losses:
        if cfg.pgd:
            run(f"pgd/{loss}", "pgd", loss, extra={"steps": cfg.pgd_steps, "stepsize": cfg.pgd_stepsize})
    if cfg.square:  # score-based, no gradients: a check on the gradient attacks as much as an attack
        run("square/none", "square", "none", extra={"steps": cfg.square_iters, "stepsize": float("nan")})
    strong_loss = "+".join(cfg.strong_losses)
    if cfg.strong:
        # the attacks above go first: an image one of them fooled at an eps is not attacked again there
        run("strong", "strong", strong_loss,
            until_acc=cfg.target_acc, eps_step=cfg.eps_step, eps_max=cfg.eps_max,
            known=[ev for ev in evals.values()] if cfg.strong_after_cheap else (),
            extra={"steps": cfg.strong_steps, "stepsize": float("nan"), "rel_stepsize": cfg.strong_rel_stepsize})

    if cfg.apgd:
        # AutoAttack's white-box core, last: only the images no attack above fooled at that eps
        n_classes = int(np.asarray(_logits(fmodel, x[:1])).shape[1]) if len(x) else 0
        losses = [loss for loss in cfg.apgd_losses if loss != "dlr" or n_classes >= 3]
        if losses:
            run("apgd/" + "+".join(losses), "apgd", "+".join(losses), known=list(evals.values()),
                extra={"steps": cfg.apgd_steps, "stepsize": float("nan")})

    rows = [row for ev in evals.values() for row in ev.rows]
    if len(evals) > 1:
        rows += worst_case(list(evals.values()), x, model=model, seed=seed)
    for row in rows:  # one schema for both suites; a white-box row's gradient comes from the model itself
        gradient = spec("rate", row["attack"]).gradient
        stamp(row, "rate", row["attack"], noise_mode="none", source=model if gradient == "model" else gradient)
    for row in rows:  # the worst case contains every attack, by construction: a bug if not
        assert row["attack"] != "worst" or row["n_correct"] <= min(
            r["n_correct"] for r in rows if r["attack"] != "worst" and abs(r["eps"] - row["eps"]) < 1e-9), row
    # invariants of every row (eps bound, [0, 1] range; monotone in eps where prune is off)
    messages = check_rows(rows, dominance=())
    # paired checks that can fail: per image, exact McNemar, so one image is not a failure
    outcomes: list = []
    budget_msgs, budget_outs = check_budget("strong", evals.get("strong"))
    budget_eps, left_x, left_y = budget_survivors(evals.get("strong"), y)
    left_zero = zero_gradient_fraction(fmodel, left_x, left_y) if len(left_y) else float("nan")
    if budget_outs and not budget_outs[0].passed and len(left_y):
        # why the attack stopped: survivors in a flat region have no gradient to follow
        extra = (f"; at the strong attack's last iterates, {left_zero:.0%} of the {len(left_y)} images left have an "
                 "all-zero ce input gradient")
        budget_msgs = [m + extra for m in budget_msgs]
        budget_outs = [replace(budget_outs[0], detail=budget_outs[0].detail + extra)]
    for msgs, outs in (
        check_dominance(evals, [(f"pgd/{loss}", f"fgsm/{loss}") for loss in cfg.losses]),
        check_gradient_masking(evals, gradient=[k for k in evals if k.split("/")[0] in ("fgsm", "pgd", "strong", "apgd")],
                               gradient_free=[k for k in evals if k.startswith(("noise/", "square/"))]),
        (budget_msgs, budget_outs),
    ):
        messages += msgs
        outcomes += outs
    first_ev = next(iter(evals.values()), None)
    if first_ev is not None and first_ev.clean_correct.any():
        ok = first_ev.clean_correct
        msgs, outs, zero_frac = check_zero_gradients(fmodel, x[ok], y[ok], subject=model)
        messages += msgs
        outcomes += outs
    else:
        zero_frac = float("nan")
    for msg in messages:
        log.warning("check failed: %s", msg)
    # not a failed check (restarts are random), but worth knowing: where the strong evaluation
    # missed images that a single PGD run broke, the "worst" rows hold the honest worst case
    strong_misses = check_rows([r for r in rows if r["attack"] in ("strong", "pgd")], dominance=(("strong", "pgd"),))

    first = next(iter(evals.values()), None)
    metrics: dict[str, Any] = {
        "n": int(len(y)),
        "clean_accuracy": float(first.clean_correct.mean()) if first is not None else float("nan"),
        "checks_passed": not messages,
        "check_messages": messages,
        "checks": [o.as_dict() for o in outcomes],
        "zero_gradient_frac": zero_frac,
        # the images the strong evaluation left at the budget check's eps, and how many of them sit
        # where the input gradient is all zero (at its last iterates)
        "budget_eps": budget_eps,
        "budget_robust_acc": float(len(left_y) / len(y)) if budget_eps is not None and len(y) else float("nan"),
        "budget_left_zero_grad_frac": left_zero,
        # with strong_after_cheap the strong rows include PGD's fooled images: nothing to compare
        "strong_weaker_than_pgd": None if cfg.strong_after_cheap else [m for m in strong_misses if "weaker" in m],
        # evaluations taken from ``checkpoint`` (name -> eps taken), as an interrupted run left them
        "resumed": dict(resumed),
    }
    for name, ev in evals.items():
        metrics[f"wall_s_{name.replace('/', '_')}"] = round(timings[name], 3)
        for row in ev.rows:
            if _headline(row["eps"], cfg.headline_eps):
                metrics[f"robust_acc_{name.replace('/', '_')}_eps{row['eps']:g}"] = row["robust_acc"]
    for row in rows:
        if row["attack"] == "worst" and _headline(row["eps"], cfg.headline_eps):
            metrics[f"robust_acc_worst_eps{row['eps']:g}"] = row["robust_acc"]
    if "strong" in evals:
        metrics["strong_eps_at_target"] = evals["strong"].eps_at(cfg.target_acc)
        metrics["strong_target_acc"] = cfg.target_acc

    traces: list[dict] = []
    gap = _mse_gap(evals)
    metrics["mse_pgd_minus_strong_max_gap"] = gap[1] if gap else None
    if cfg.trace and gap and gap[1] >= cfg.trace_gap:
        eps, size, i_mse, i_strong = gap
        survivors = evals["pgd/mse"].correct[i_mse] & ~evals["strong"].correct[i_strong]
        if not survivors.any():  # only when trace_gap <= 0 asks for traces without a gap
            survivors = evals["pgd/mse"].clean_correct
        idx = np.flatnonzero(survivors)[: cfg.trace_images]
        log.info("MSE-PGD looks %.1f points more robust than the strong evaluation at eps=%g: tracing %d images",
                 100 * size, eps, len(idx))
        for loss in ("mse", "margin"):
            atk = TracedPGD(loss=loss, steps=cfg.pgd_steps, abs_stepsize=cfg.pgd_stepsize, random_start=cfg.pgd_random_start)
            xa = attack_once(atk, fmodel, x[idx], y[idx], eps, derive_seed(seed, model, "trace", loss, eps))
            final_correct = float((np.asarray(predict(xa)) == y[idx]).mean())
            for row in atk.trace:
                traces.append({"model": model, "eps": eps, "loss": loss, **row})
            metrics[f"trace_final_acc_{loss}"] = final_correct
        metrics.update(evidence="pgd_traces.csv", evidence_eps=eps, evidence_images=int(len(idx)))
    else:
        metrics["evidence"] = None
    return SuiteResult(rows, messages, traces, metrics, evals)


def _headline(eps: float, headline_eps) -> bool:
    return any(abs(eps - e) < 1e-9 for e in headline_eps)


def _mse_gap(evals: dict[str, Evaluation]) -> tuple[float, float, int, int] | None:
    """(eps, gap, index in MSE-PGD, index in strong) of the largest robust-accuracy gap."""
    if "pgd/mse" not in evals or "strong" not in evals:
        return None
    mse, strong = evals["pgd/mse"], evals["strong"]
    best = None
    for i, eps in enumerate(mse.epsilons):
        if eps in strong.epsilons:
            j = strong.epsilons.index(eps)
            g = float(mse.correct[i].mean() - strong.correct[j].mean())
            if best is None or g > best[1] + 1e-12:
                best = (eps, g, i, j)
    return best
