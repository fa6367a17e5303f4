"""The attack table: every attack either suite runs, as one specification each.

An :class:`AttackSpec` names an attack of one suite (the ``attack`` column of ``robustness.csv``), the
norm its budget is measured in, where its gradient comes from, what decides success while it runs,
and a factory that builds it from the suite's configuration. Both suites
(:func:`attacks.suite.run_suite` for the rate model and the MLP, :func:`attacks.spiking.run_spiking_suite`
for the spiking network) build their attacks through :func:`build` and stamp every row with
:func:`stamp`, so that one attack name means one thing in every table, and every row carries the
columns of :data:`attacks.evaluate.ROBUSTNESS_COLUMNS` (one schema for both models).

Where the suites differ is the order and the reuse between attacks (the spiking hybrid restarts from
the transferred examples; the rate model's strong evaluation and APGD skip the images an earlier
attack fooled): that orchestration stays in each suite. Every gradient and score attack runs through
:func:`attacks.evaluate.evaluate_attack`, the decision-based ones through
:func:`attacks.decision.run_decision_attack`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["AttackSpec", "ATTACKS", "spec", "build", "stamp", "NOISE_MODES"]

# how the network's noise is treated when a row is judged: "none" (a deterministic model),
# "frozen" (one fixed noise realisation, a diagnostic) or "fresh" (new noise on every trial, the
# majority of fresh_repeats trials: the spiking headline)
NOISE_MODES = ("none", "frozen", "fresh")


@dataclass(frozen=True)
class AttackSpec:
    """One attack.

    suite : ``rate`` (:func:`attacks.suite.run_suite`: the rate model and the MLP) or ``spiking``
        (:func:`attacks.spiking.run_spiking_suite`).
    name : the ``attack`` column.
    norm : ``linf`` or ``l2``: the norm of its budget.
    gradient : where its steps come from: ``model`` (white-box on the attacked model), ``surrogate``
        (white-box on the spiking network's rate surrogate, then transferred), ``transfer`` (white-box
        on another trained model, then transferred), ``surrogate+decisions`` (surrogate gradient,
        accepted and stopped on the spiking network's decisions), ``none`` (no gradient), ``all``
        (the ``worst`` rows).
    target : what decides success while it runs: ``logits`` (the attacked model's own output),
        ``frozen-decision`` (the spiking decision in one noise realisation),
        ``noise-averaged-decision`` (the majority of ``fresh_repeats`` realisations),
        ``noise-averaged-scores`` (Purkinje scores averaged over realisations), ``decision``
        (the label only, one realisation), ``none`` (random: uniform noise), ``all`` (the ``worst``
        rows: per image, the worst case over the suite's attacks).
    factory : ``(cfg, loss, **context) -> attack`` (a Foolbox-style attack or a list of restarts);
        None for the decision-based attacks (:func:`attacks.decision.run_decision_attack` takes the name).
    """

    suite: str
    name: str
    norm: str
    gradient: str
    target: str
    factory: Callable[..., Any] | None = None


# ----------------------------------------------------------------------------- factories
def _noise(cfg, loss, **_):
    from attacks.foolbox_attacks import uniform_noise

    return uniform_noise()


def _fgsm(cfg, loss, **_):
    from attacks.foolbox_attacks import FGSM

    return FGSM(loss=loss)


def _pgd(cfg, loss, *, model: str = "rate", **_):
    from attacks.foolbox_attacks import FGSM, PGD

    if model == "rate":  # the seed paper's PGD: absolute step, random start
        return PGD(loss=loss, steps=cfg.pgd_steps, abs_stepsize=cfg.pgd_stepsize, random_start=cfg.pgd_random_start)
    # on the surrogate: `restarts` random starts plus FGSM as one more restart (PGD >= FGSM per image)
    return [PGD(loss=loss, steps=cfg.pgd_steps, rel_stepsize=cfg.pgd_rel_stepsize) for _ in range(cfg.restarts)] \
        + [FGSM(loss=loss)]


def _strong(cfg, loss, **_):
    from attacks.foolbox_attacks import StrongPGD

    return [StrongPGD(loss=cfg.strong_losses[r % len(cfg.strong_losses)], steps=cfg.strong_steps,
                      rel_stepsize=cfg.strong_rel_stepsize, random_start=True) for r in range(cfg.strong_restarts)]


def _apgd(cfg, loss, *, batch_size: int = 256, restarts: int | None = None, **_):
    from attacks.apgd import APGD

    r = getattr(cfg, "apgd_restarts", 1) if restarts is None else restarts
    return [APGD(loss=part, steps=cfg.apgd_steps, restarts=r, batch_size=batch_size) for part in loss.split("+")]


def _pgd_l2(cfg, loss, **_):
    from attacks.spiking import L2PGD

    return [L2PGD(loss=loss, steps=cfg.pgd_steps) for _ in range(cfg.restarts)]


def _transfer(cfg, loss, **_):
    from attacks.foolbox_attacks import PGD

    return PGD(loss=loss, steps=cfg.pgd_steps, rel_stepsize=cfg.pgd_rel_stepsize)


def _hybrid(cfg, loss, *, bb, **_):
    from attacks.foolbox_attacks import PGD
    from attacks.spiking import HybridPGD

    # the hybrid, then surrogate PGD as a second restart
    return [HybridPGD(bb.labels, loss=loss, steps=cfg.hybrid_steps, rel_stepsize=cfg.pgd_rel_stepsize),
            PGD(loss=loss, steps=cfg.pgd_steps, rel_stepsize=cfg.pgd_rel_stepsize)]


def _eot_hybrid(cfg, loss, *, bb, **_):
    from attacks.spiking import EOTHybridPGD

    return EOTHybridPGD(bb, cfg.fresh_repeats, loss=loss, steps=cfg.hybrid_steps, rel_stepsize=cfg.pgd_rel_stepsize)


def _square(cfg, loss, *, batch_size: int = 256, **_):
    from attacks.square import Square

    return Square(norm="linf", iterations=cfg.square_iters, batch_size=batch_size)


ATTACKS: dict[tuple[str, str], AttackSpec] = {(s.suite, s.name): s for s in (
    # the rate model and the MLP (attacks.suite): white-box on the model itself
    AttackSpec("rate", "noise", "linf", "none", "none", _noise),
    AttackSpec("rate", "fgsm", "linf", "model", "logits", _fgsm),
    AttackSpec("rate", "pgd", "linf", "model", "logits", _pgd),
    AttackSpec("rate", "strong", "linf", "model", "logits", _strong),
    AttackSpec("rate", "apgd", "linf", "model", "logits", _apgd),
    AttackSpec("rate", "square", "linf", "none", "logits", _square),
    AttackSpec("rate", "worst", "linf", "all", "all"),  # per image, the worst case over the attacks above
    # the spiking network (attacks.spiking): white-box on the rate surrogate, the examples judged by
    # the spiking network; the surrogate's own rows (model "surrogate") use the same names
    AttackSpec("spiking", "noise", "linf", "none", "none", _noise),
    AttackSpec("spiking", "fgsm", "linf", "surrogate", "logits", _fgsm),
    AttackSpec("spiking", "pgd", "linf", "surrogate", "logits", _pgd),
    AttackSpec("spiking", "apgd", "linf", "surrogate", "logits", _apgd),
    AttackSpec("spiking", "pgd-l2", "l2", "surrogate", "logits", _pgd_l2),
    AttackSpec("spiking", "transfer", "linf", "transfer", "logits", _transfer),
    AttackSpec("spiking", "hybrid", "linf", "surrogate+decisions", "frozen-decision", _hybrid),
    AttackSpec("spiking", "eot-hybrid", "linf", "surrogate+decisions", "noise-averaged-decision", _eot_hybrid),
    AttackSpec("spiking", "square", "linf", "none", "noise-averaged-scores", _square),
    AttackSpec("spiking", "hsja-l2", "l2", "none", "decision"),
    AttackSpec("spiking", "hsja-linf", "linf", "none", "decision"),
    AttackSpec("spiking", "boundary-l2", "l2", "none", "decision"),
    AttackSpec("spiking", "hsja-l2-fresh", "l2", "none", "noise-averaged-decision"),
    AttackSpec("spiking", "hsja-linf-fresh", "linf", "none", "noise-averaged-decision"),
    AttackSpec("spiking", "boundary-l2-fresh", "l2", "none", "noise-averaged-decision"),
    AttackSpec("spiking", "worst", "linf", "all", "all"),
)}


def spec(suite: str, name: str) -> AttackSpec:
    """The specification of attack ``name`` in ``suite``; a one-line error for an unknown one."""
    try:
        return ATTACKS[(suite, name)]
    except KeyError:
        known = ", ".join(n for s, n in ATTACKS if s == suite)
        raise ValueError(f"unknown {suite} attack {name!r} (known: {known})") from None


def build(suite: str, name: str, cfg: Any, loss: str = "none", **context: Any) -> Any:
    """The attack ``name`` of ``suite`` built from the suite configuration ``cfg`` (see :class:`AttackSpec`)."""
    s = spec(suite, name)
    if s.factory is None:
        raise ValueError(f"attack {name!r} has no factory: a decision-based attack runs through "
                         "attacks.decision.run_decision_attack by name, 'worst' combines the others")
    return s.factory(cfg, loss, **context)


def stamp(row: dict, suite: str, name: str, *, noise_mode: str, source: str | None = None) -> dict:
    """Fill a row's ``norm`` (the spec's), ``source`` (where its gradient came from: the spec's, or
    the model a transfer came from), ``noise_mode`` and the columns a deterministic model leaves at
    their defaults (``queries`` 0, ``success_prob`` and ``trial_acc`` NaN)."""
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
    s = spec(suite, name)
    row["norm"] = s.norm
    row["source"] = source if source is not None else s.gradient
    row["noise_mode"] = noise_mode
    row.setdefault("queries", 0)
    row.setdefault("success_prob", float("nan"))
    row.setdefault("trial_acc", float("nan"))
    return row
