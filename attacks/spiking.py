"""The attack suite against the spiking cerebellum.

The network under attack is the batched spiking engine in frozen-noise mode with every query in
noise slot 0: the mossy-fibre noise is then the same fixed realisation for every input, so the
network is a deterministic function of its input alone (a query's answer does not depend on
where in a batch it sits, and a starting point checked once stays adversarial). Fresh-noise
results are reported next to it: each adversarial example is re-evaluated ``fresh_repeats``
times with new noise, as a success probability.

Attacks (rows of ``robustness.csv``; ``model`` = the network the examples were evaluated on,
``source`` = the model whose gradients made them):

- ``noise``: uniform noise at matched L-inf norms (no gradients);
- ``fgsm``, ``pgd`` (L-inf) and ``pgd-l2``: white-box on the rate-coded surrogate
  (:mod:`models.surrogate`), evaluated on the surrogate (``model=surrogate``) and transferred to the
  spiking network (``model=spiking``);
- ``transfer-rate`` / ``transfer-mlp``: PGD on a trained rate model / MLP of the same task;
- ``hybrid``: PGD whose gradient comes from the surrogate and whose decisions come from the
  spiking network (an image stops where the spiking network is fooled), with the surrogate's own
  PGD as a second restart and every transfer example (surrogate PGD/FGSM, rate, MLP) as further
  restarts, per image;
- ``square`` (``attack.square``): score-based (ART's Square attack) on the Purkinje scores averaged
  over fresh-noise trials;
- ``hsja-l2``, ``hsja-linf``, ``boundary-l2``: decision-based, the spiking network as a black box
  under a hard per-image query budget (:mod:`attacks.decision`), started from transfer
  adversarials or the nearest training image of another class.

Checks (written to ``metrics.json`` and printed): robust accuracy never rises with eps;
perturbations stay within eps and inputs within [0, 1]; an unbounded decision-based attack fools
>= 95% of the correctly classified images. PGD not weaker than FGSM and hybrid not weaker than
transfer hold by construction (FGSM is one of PGD's restarts, the transfer examples are the
hybrid's): they are asserted, and a violation is an internal error, not a check.

Fresh noise (the headline threat model): each example is shown ``fresh_repeats`` times with new
mossy-fibre noise; an image is robust when the majority decision over those trials is correct
(ties scored against the network, :func:`fresh_votes`), over all attacked images, with the exact
95% interval (image as the unit) and the mean per-trial accuracy (``trial_acc``) beside it; the
eps-0 row is the fresh-noise clean baseline. The attacks themselves still run on the frozen
network.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import eagerpy as ep
import foolbox as fb
import numpy as np
import torch

from attacks.checks import check_gradient_masking
from attacks.evaluate import ROBUSTNESS_COLUMNS, check_rows, evaluate_attack, worst_case
from attacks.stats import add_intervals
from attacks.foolbox_attacks import PGD, LossMixin, _check_loss
from attacks.specs import build, spec
from attacks.suite import SuiteResult
from core.errors import CerebError
from models.spiking.params import EngineConfig
from models.surrogate import SurrogateConfig

log = logging.getLogger(__name__)

__all__ = ["SpikingAttackConfig", "SpikingAttackExperiment", "SPIKING_COLUMNS", "HybridPGD", "L2PGD",
           "SpikingBlackBox", "run_spiking_suite", "DOMINANCE_SPIKING", "tie_flags"]

SPIKING_COLUMNS = ROBUSTNESS_COLUMNS  # one schema for both suites (attacks.specs)
DECISION_ATTACKS = ("hsja-l2", "hsja-linf", "boundary-l2")
HYBRID_TOLERANCE = 0.1  # the hybrid's own restarts may trail the surrogate-PGD transfer by this much (random starts)
# (stronger, weaker) pairs checked at each eps for a shared model and loss
DOMINANCE_SPIKING = (("pgd", "fgsm"), ("hybrid", "pgd"), ("hybrid", "transfer-rate"), ("hybrid", "transfer-mlp"))


@dataclass(frozen=True)
class SpikingAttackConfig:
    """The ``attack.*`` section for a spiking run.

    n : test images attacked (the first n of the test split).
    eps : L-inf budgets; l2_eps : L2 budgets (``pgd-l2`` and the L2 decision-based rows).
    losses : losses of the surrogate FGSM/PGD (``margin``, ``ce``; ``mse`` also works).
    pgd_steps, pgd_rel_stepsize, restarts : PGD on the surrogate (random start each restart; FGSM is
        added as one more restart, so PGD is never weaker than FGSM on the surrogate, and the
        spiking ``pgd`` row takes per image the stronger of the two transferred examples).
    apgd, apgd_steps : APGD-CE and APGD-DLR (Croce & Hein 2020, ART; :mod:`attacks.apgd`) on the
        surrogate, ``apgd_steps`` iterations each, transferred to the spiking network like PGD (its
        examples are also restarts of the hybrid); the surrogate is deterministic, so an image it
        fooled at one eps is carried to the larger ones instead of attacked again.
    hybrid, hybrid_steps : the hybrid attack (margin loss).
    eot_hybrid : the hybrid steered by the noise-averaged decision (expectation over the noise,
        Athalye et al. 2018): an iterate is accepted, and stops, once the majority of
        ``fresh_repeats`` fresh-noise trials misclassifies it (ties against the network); every
        trial is a charged query. Run at the positive ``fresh_eps`` that are also in ``eps``; its
        rows are fresh-noise rows only, re-evaluated on new trials.
    square, square_iters, square_repeats : the score-based Square attack (ART; L-inf) on the
        Purkinje class scores averaged over ``square_repeats`` noise realisations
        (:class:`NoiseAveragedScores`: expectation over the noise, Athalye et al. 2018),
        ``square_iters`` iterations, at the positive ``fresh_eps`` that are also in ``eps``; every
        simulated trial is a charged query, inputs scored before are not simulated again. Its rows
        are judged frozen (diagnostic) and on new fresh trials (the headline).
    transfer_runs : rate / mlp run folders whose PGD examples are transferred (same task).
    decision : decision-based attacks; decision_n : images they attack (<= n);
    decision_fresh : decision-based attacks (``<name>-fresh`` rows) run again on the noise-averaged
        decision, the majority vote over ``fresh_repeats`` noise realisations (fixed ones, frozen
        slots 1..R, so that the attack sees a deterministic function; a tied vote goes to the
        higher mean score); ``max_queries`` counts decisions, each ``fresh_repeats`` charged
        simulations; the rows are fresh-noise rows (L-inf: at the positive ``fresh_eps`` in ``eps``): the
        examples are judged on new fresh trials;
    max_queries : hard per-image budget.
    fresh_repeats : fresh-noise re-evaluations of every adversarial example (majority decision).
    fresh_eps : the eps at which fresh-noise rows are written (0: the fresh-noise clean baseline).
    headline_eps : the budgets of the headline metrics (``fresh_noise_robust_acc_eps<e>`` and its
        interval and strongest attack, ``robust_acc_worst_eps<e>``, the per-attack metrics, the
        hybrid's tie fractions and the surrogate's agreement on adversarial inputs).
    domain : ``pixels`` (the suite above) or ``spikes``: the attacks of :mod:`attacks.spikes` on the
        mossy-fibre spike trains instead (``robustness_spikes.csv``); the keys below set them.
    spike_methods : ``gradient`` (surrogate-guided), ``search`` (black-box greedy), their ``-eot``
        variants (checked on scores averaged over ``spike_eot_trials`` frozen trials), ``shift``
        (frozen-trial timing diagnostic).
    spike_budget : spikes delivered per image; spike_max_rate_hz : the per-fibre ceiling on them
        (at least 1000 / rate ms apart; mossy fibres fire up to ~700 Hz in vivo, Rancz et al. 2007);
        silence_budget_ms : fibre-milliseconds silenced per image (default: a quarter of the digits
        task's 64 fibres x 100 ms).
    spike_block : spikes delivered per move; silence_block_ms : the silenced piece per move;
        shift_ms : the shift per move of the shift diagnostic; spike_lead_ms : edits start this
        long before ``model.readout_start_ms`` (tuned: the granule-Purkinje path answers within a
        few ms, earlier spikes only move the start state).
    spike_queries : hard budget of network simulations per image and method.
    spike_variability_pairs : pairs of Poisson draws per image for the natural variability.
    spike_export : flipped images per method exported as stimulation protocols (NWB and CSV).
    """

    n: int = 100
    eps: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
    l2_eps: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0)
    noise: bool = True
    fgsm: bool = True
    pgd: bool = True
    pgd_l2: bool = True
    losses: tuple[str, ...] = ("margin", "ce")
    pgd_steps: int = 40
    pgd_rel_stepsize: float = 0.1     # step = 0.1 eps: 4 eps of travel over 40 steps (paper's 0.01 is too short a step here)
    restarts: int = 1
    apgd: bool = True
    apgd_steps: int = 100
    hybrid: bool = True
    hybrid_steps: int = 40
    eot_hybrid: bool = True
    square: bool = True
    square_iters: int = 1000
    square_repeats: int = 5
    transfer_runs: tuple[str, ...] = ()
    decision: tuple[str, ...] = ("hsja-l2", "hsja-linf")
    decision_fresh: tuple[str, ...] = ("hsja-linf",)
    decision_n: int | None = None
    max_queries: int = 1000
    fresh_repeats: int = 5
    fresh_eps: tuple[float, ...] = (0.0, 0.1, 0.2)
    headline_eps: tuple[float, ...] = (0.1, 0.2)
    domain: str = "pixels"
    spike_methods: tuple[str, ...] = ("gradient", "gradient-eot", "search", "search-eot", "shift")
    spike_budget: int = 400
    spike_max_rate_hz: float = 500.0
    silence_budget_ms: float = 1600.0
    spike_block: int = 10
    silence_block_ms: float = 10.0
    shift_ms: float = 10.0
    spike_lead_ms: float = 10.0
    spike_queries: int = 2000
    spike_eot_trials: int = 5
    spike_variability_pairs: int = 10
    spike_export: int = 5

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"attack.n must be >= 1, got {self.n}")
        if self.domain not in ("pixels", "spikes"):
            raise ValueError(f"attack.domain must be 'pixels' or 'spikes', got {self.domain!r}")
        from attacks.spikes import SPIKE_METHODS

        bad = [m for m in self.spike_methods if m not in SPIKE_METHODS]
        if bad or not self.spike_methods:
            raise ValueError(f"unknown spike-domain method {bad[0] if bad else '(none given)'!r} "
                             f"(known: {', '.join(SPIKE_METHODS)})")
        for name in ("spike_budget", "spike_block", "spike_queries", "spike_variability_pairs", "spike_eot_trials"):
            if getattr(self, name) < 1:
                raise ValueError(f"attack.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("spike_max_rate_hz", "silence_block_ms", "shift_ms"):
            if not getattr(self, name) > 0:
                raise ValueError(f"attack.{name} must be > 0, got {getattr(self, name)}")
        for name in ("silence_budget_ms", "spike_lead_ms", "spike_export"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"attack.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("eps", "l2_eps", "fresh_eps", "headline_eps"):
            bad = [e for e in getattr(self, name) if not e >= 0]
            if bad:
                raise ValueError(f"attack.{name} must be >= 0, got {bad[0]}")
        for loss in self.losses:
            _check_loss(loss)
        unknown = [d for d in (*self.decision, *self.decision_fresh) if d not in DECISION_ATTACKS]
        if unknown:
            raise ValueError(f"unknown decision-based attack {unknown[0]!r} (known: {', '.join(DECISION_ATTACKS)})")
        if self.apgd_steps < 1:
            raise ValueError(f"attack.apgd_steps must be >= 1, got {self.apgd_steps}")
        if self.pgd_steps < 1 or self.hybrid_steps < 1 or self.restarts < 1 or self.pgd_rel_stepsize <= 0:
            raise ValueError("attack.pgd_steps, hybrid_steps, restarts >= 1 and pgd_rel_stepsize > 0 are required")
        if self.square_iters < 1 or self.square_repeats < 1:
            raise ValueError("attack.square_iters >= 1 and attack.square_repeats >= 1 are required")
        if self.max_queries < 3 or self.fresh_repeats < 0:
            raise ValueError("attack.max_queries >= 3 and attack.fresh_repeats >= 0 are required")
        if self.decision_n is not None and not 1 <= self.decision_n <= self.n:
            raise ValueError("attack.decision_n must lie in [1, attack.n]")


@dataclass(frozen=True)
class SpikingAttackExperiment:
    """What ``cereb attack`` configures for a spiking run: ``attack.*``, ``surrogate.*``, ``engine.*``."""

    attack: SpikingAttackConfig = field(default_factory=SpikingAttackConfig)
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)


# ----------------------------------------------------------------------------- attacks
class L2PGD(LossMixin, fb.attacks.L2PGD):
    """L2 projected gradient descent on ``loss`` (Foolbox's steps; eps is an L2 radius)."""

    def __init__(self, *, loss: str = "margin", steps: int = 40, rel_stepsize: float = 0.05, random_start: bool = True):
        super().__init__(rel_stepsize=rel_stepsize, steps=steps, random_start=random_start)
        self.loss = _check_loss(loss)


class HybridPGD(PGD):
    """L-inf PGD steered by two models: the surrogate supplies the gradient (this attack runs on
    the surrogate's Foolbox model), the spiking network decides.

    Foolbox's substitute-model pattern: :meth:`value_and_grad` is overridden. At every step the
    spiking network classifies the current iterates; images it already misclassifies get a zero
    gradient, so they stay where they are (projection and clipping leave a point inside the ball
    unchanged) and the final iterate is the spiking-fooling point. Every step costs one spiking
    query per image (counted in ``queries``).
    """

    def __init__(self, spiking_labels: Callable[[np.ndarray], np.ndarray], **kwargs: Any):
        super().__init__(**kwargs)
        self.spiking_labels = spiking_labels
        self.queries = 0
        self._labels: np.ndarray | None = None

    def get_loss_fn(self, model, labels):
        self._labels = labels.numpy()
        return super().get_loss_fn(model, labels)

    def value_and_grad(self, loss_fn, x):
        value, grad = super().value_and_grad(loss_fn, x)
        xs = x.numpy().reshape(len(x), -1).astype(np.float64)
        fooled = np.asarray(self.spiking_labels(np.clip(xs, 0, 1))) != self._labels
        self.queries += len(xs)
        mask = ep.from_numpy(grad, (~fooled).astype(np.float32).reshape((-1,) + (1,) * (grad.ndim - 1)))
        return value, grad * mask.astype(grad.dtype)


class EOTHybridPGD(HybridPGD):
    """:class:`HybridPGD` whose spiking decision is the majority over ``repeats`` fresh-noise trials
    (:func:`fresh_votes`): an image stops moving once that majority misclassifies it. Every trial
    is one charged query of ``bb``."""

    def __init__(self, bb: "SpikingBlackBox", repeats: int, **kwargs: Any):
        super().__init__(bb.labels, **kwargs)
        self.bb, self.repeats = bb, int(repeats)

    def value_and_grad(self, loss_fn, x):
        value, grad = PGD.value_and_grad(self, loss_fn, x)
        xs = np.clip(x.numpy().reshape(len(x), -1).astype(np.float64), 0, 1)
        majority_correct, _ = fresh_votes(self.bb, xs, self._labels, self.repeats)
        self.queries += self.repeats * len(xs)
        mask = ep.from_numpy(grad, majority_correct.astype(np.float32).reshape((-1,) + (1,) * (grad.ndim - 1)))
        return value, grad * mask.astype(grad.dtype)


class NoiseAveragedScores:
    """Purkinje class scores averaged over ``repeats`` noise realisations: the frozen slots
    ``1..repeats`` (not the frozen attacks' slot 0), so that a score-based attack sees one
    deterministic function of its input (expectation over the noise, estimated on a fixed sample of
    realisations; its examples are judged on new fresh trials). Every simulated trial is a query of
    ``bb``; an input scored before is answered from memory (ART's Square scores its current iterates
    again on every iteration), so only new inputs are simulated. ``evaluations`` counts the distinct
    inputs scored."""

    def __init__(self, bb: "SpikingBlackBox", repeats: int, max_memory: int = 200_000):
        self.bb, self.repeats, self.max_memory = bb, int(repeats), int(max_memory)
        self.memory: dict[bytes, np.ndarray] = {}
        self.evaluations = 0

    def __call__(self, a) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        a = a.reshape(len(a), -1)
        keys = [row.tobytes() for row in a]
        new: dict[bytes, int] = {}
        for k, key in enumerate(keys):
            if key not in self.memory and key not in new:
                new[key] = k
        if new:
            idx = np.fromiter(new.values(), dtype=np.int64, count=len(new))
            rows = a[idx].astype(np.float64)
            mean = np.mean([np.asarray(self.bb.scores(rows, slot=1 + r), dtype=np.float64) for r in range(self.repeats)],
                           axis=0)
            if len(self.memory) + len(new) > self.max_memory:
                self.memory.clear()
            self.memory.update(zip(new.keys(), mean))
            self.evaluations += len(new)
            out = {**dict(zip(new.keys(), mean))}
            return np.stack([out[key] if key in out else self.memory[key] for key in keys])
        return np.stack([self.memory[key] for key in keys])


class SpikingBlackBox:
    """The spiking network as a function: frozen noise, every query in noise slot 0 (see the
    module docstring); ``fresh`` draws new noise on every call. Counts queries."""

    def __init__(self, engine):
        self.engine = engine
        self.queries = 0
        self.wall_s = 0.0

    def scores(self, x: np.ndarray, noise: str = "frozen", slot: int = 0) -> np.ndarray:
        """Class scores; frozen noise: every query in noise slot ``slot`` (a fixed noise realisation)."""
        x = np.asarray(x, dtype=np.float64)
        x = np.clip(x.reshape(len(x), int(np.prod(x.shape[1:]))), 0.0, 1.0)  # (also an empty batch)
        t0 = time.time()
        out = self.engine.predict(x, noise=noise, slots=np.full(len(x), slot, dtype=np.int64)).scores
        self.wall_s += time.time() - t0
        self.queries += len(x)
        return out

    def labels(self, x: np.ndarray) -> np.ndarray:
        return self.scores(x).argmax(1)

    def fresh_scores(self, x: np.ndarray) -> np.ndarray:
        return self.scores(x, noise="fresh")


# ----------------------------------------------------------------------------- suite
SpikingSuiteResult = SuiteResult  # one result type for both suites (attacks.suite.SuiteResult)


def _row_defaults(row: dict, *, norm: str, source: str, noise_mode: str = "frozen", queries: int = 0,
                  success_prob: float = float("nan")) -> dict:
    row.setdefault("queries", queries)
    row.setdefault("noise_mode", noise_mode)
    row.setdefault("success_prob", success_prob)
    row.setdefault("trial_acc", float("nan"))  # fresh-noise rows: mean per-trial accuracy
    row["norm"], row["source"] = norm, source
    return row


def fresh_votes(bb: "SpikingBlackBox", x: np.ndarray, y: np.ndarray, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Each input shown ``repeats`` times with fresh noise: ``(majority_correct, trial_correct)``.

    A trial is correct only if the true class's Purkinje score is strictly above every other
    class's (a tie is scored against the network); an incorrect trial votes for its highest other
    class. The image's decision is correct when the true class has strictly more votes than any
    other class (a tied vote is scored against the network too). ``trial_correct`` is the fraction
    of correct trials per image.
    """
    n = len(x)
    rows = np.arange(n)
    votes = np.zeros((n, 1), dtype=np.int64)
    hits = np.zeros(n)
    for _ in range(repeats):
        s = np.asarray(bb.fresh_scores(x), dtype=np.float64).reshape(n, -1)
        if votes.shape[1] != s.shape[1]:
            votes = np.zeros((n, s.shape[1]), dtype=np.int64)
        other = s.copy()
        other[rows, y] = -np.inf
        ok = s[rows, y] > other.max(axis=1)
        votes[rows, np.where(ok, y, other.argmax(axis=1))] += 1
        hits += ok
    true_votes = votes[rows, y]
    rival = votes.copy()
    rival[rows, y] = -1
    return true_votes > rival.max(axis=1), hits / max(repeats, 1)


def _fresh_rows(bb: SpikingBlackBox, ev, x, y, cfg: SpikingAttackConfig, row_of: dict) -> list[dict]:
    """Fresh-noise rows for an evaluation: each example re-evaluated ``fresh_repeats`` times.

    ``robust_acc`` is the fraction of all ``n`` images whose majority decision over the fresh
    trials (:func:`fresh_votes`) on the example is correct; an image misclassified without
    perturbation (frozen noise, so never attacked) counts as not robust, except at eps 0, where
    the row is the fresh-noise clean baseline of every image. ``trial_acc`` is the mean per-trial
    accuracy on the same terms; ``success_prob`` the mean per-trial success of the examples that
    fooled the frozen network.
    """
    out = []
    if cfg.fresh_repeats < 1:
        return out
    for eps in cfg.fresh_eps:
        match = [k for k, e in enumerate(ev.epsilons) if abs(e - eps) < 1e-9]
        if not match:
            continue
        k = match[0]
        adv = x if eps == 0 else ev.adversarial[k].astype(np.float64)
        majority, p_correct = fresh_votes(bb, np.asarray(adv, dtype=np.float64), y, cfg.fresh_repeats)
        counted = np.ones(len(x), bool) if eps == 0 else ev.clean_correct
        majority = majority & counted
        p_correct = np.where(counted, p_correct, 0.0)
        fooled_frozen = ev.clean_correct & ~ev.correct[k]
        base = dict(row_of[eps])
        base.update(noise_mode="fresh", n_correct=int(majority.sum()), robust_acc=float(majority.mean()),
                    trial_acc=float(p_correct.mean()), fresh_repeats=int(cfg.fresh_repeats),
                    success_prob=float((1 - p_correct[fooled_frozen]).mean()) if fooled_frozen.any() else float("nan"),
                    queries=int(base.get("queries", 0)) + cfg.fresh_repeats * len(x))
        out.append(base)
    return out


def run_spiking_suite(bb: SpikingBlackBox, surrogate, x: np.ndarray, y: np.ndarray, cfg: SpikingAttackConfig, *,
                      seed: int = 0, transfer_models: dict[str, Any] | None = None,
                      x_pool: np.ndarray | None = None, y_pool: np.ndarray | None = None,
                      progress: Callable[[str], None] | None = None) -> SpikingSuiteResult:
    """Run every attack of ``cfg`` against the spiking network ``bb``; see the module docstring."""
    from attacks.decision import reevaluate, robust_curve, run_decision_attack

    tick = progress or (lambda label: None)
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    rows: list[dict] = []
    transfer: list[dict] = []
    evaluations: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    spiking_fmodel = fb.models.NumPyModel(lambda a: bb.scores(np.asarray(a)), bounds=(0, 1))
    surrogate.eval()
    sur_fmodel = fb.PyTorchModel(surrogate, bounds=(0, 1), device="cpu")

    def sur_labels(a):
        with torch.no_grad():
            return surrogate(torch.tensor(np.asarray(a, dtype=np.float32))).argmax(1).numpy()

    clean_spiking = bb.labels(x) == y
    metrics["clean_accuracy"] = float(clean_spiking.mean())
    metrics["surrogate_clean_accuracy"] = float((sur_labels(x) == y).mean())
    tick("clean")

    def frozen_rows(ev, *, norm, source, queries_per_image=0):
        out = []
        for r in ev.rows:
            r = _row_defaults(dict(r), norm=norm, source=source, queries=int(queries_per_image * n))
            if norm == "l2":  # evaluate_attack measures L-inf; the L2 bound is checked separately
                r.pop("max_linf", None)
            out.append(r)
        return out

    def transfer_rows(ev_src, target_name: str, predict_target, attack: str, loss: str, source: str):
        """Evaluate the source evaluation's adversarial examples on the target model."""
        out, clean_t = [], predict_target(x) == y
        for k, eps in enumerate(ev_src.epsilons):
            adv = ev_src.adversarial[k]
            correct = clean_t & (predict_target(adv) == y) if eps > 0 else clean_t
            succ = float((~correct[clean_t]).mean()) if clean_t.any() else float("nan")
            transfer.append({"source": source, "target": target_name, "attack": attack, "loss": loss,
                             "eps": float(eps), "n": int(clean_t.sum()), "success_rate": succ})
            out.append((eps, correct, adv))
        return out

    # -- uniform noise on the spiking network itself
    if cfg.noise:
        ev = evaluate_attack(build("spiking", "noise", cfg), spiking_fmodel, bb.labels, x, y, cfg.eps, model="spiking",
                             attack="noise", loss="none", seed=seed, prune=True, batch_size=n)
        rows += frozen_rows(ev, norm="linf", source="none", queries_per_image=len(cfg.eps))
        evaluations["noise_none"] = ev
        tick("noise")

    # -- white-box on the surrogate, transferred to the spiking network
    kinds = [("fgsm", cfg.fgsm), ("pgd", cfg.pgd)]
    for kind, on in kinds:
        if not on:
            continue
        for loss in cfg.losses:
            atk = build("spiking", kind, cfg, loss, model="spiking")
            ev = evaluate_attack(atk, sur_fmodel, sur_labels, x, y, cfg.eps, model="surrogate", attack=kind,
                                 loss=loss, seed=seed, prune=False, batch_size=n)
            ev = _reevaluate(ev, sur_labels, x, y, model="surrogate")
            rows += frozen_rows(ev, norm="linf", source="surrogate")
            evaluations[f"surrogate:{kind}_{loss}"] = ev
            # the same examples on the spiking network (pgd: per image the stronger of the PGD and
            # the FGSM example, both transferred)
            ev_s = _reevaluate(ev, bb.labels, x, y, model="spiking")
            if kind == "pgd" and f"fgsm_{loss}" in evaluations:
                ev_s = _stronger(ev_s, evaluations[f"fgsm_{loss}"], x)
            rows += frozen_rows(ev_s, norm="linf", source="surrogate", queries_per_image=len(ev.epsilons))
            evaluations[f"{kind}_{loss}"] = ev_s
            transfer_rows(ev, "spiking", bb.labels, kind, loss, "surrogate")
            if kind == "pgd":
                rows += _fresh_rows(bb, ev_s, x, y, cfg, {r["eps"]: r for r in rows[-len(ev_s.rows):]})
            tick(f"{kind}/{loss}")

    # -- APGD (AutoAttack's white-box core) on the surrogate, transferred like PGD
    if cfg.apgd:
        losses = ["ce"] + (["dlr"] if surrogate_classes(surrogate, x) >= 3 else [])
        loss = "+".join(losses)
        ev = evaluate_attack(build("spiking", "apgd", cfg, loss, batch_size=max(n, 1)), sur_fmodel,
                             sur_labels, x, y, cfg.eps, model="surrogate", attack="apgd", loss=loss, seed=seed,
                             prune=True, recheck=False, batch_size=n,
                             extra={"steps": cfg.apgd_steps, "stepsize": float("nan")})
        ev = _reevaluate(ev, sur_labels, x, y, model="surrogate")
        rows += frozen_rows(ev, norm="linf", source="surrogate")
        evaluations[f"surrogate:apgd_{loss}"] = ev
        ev_s = _reevaluate(ev, bb.labels, x, y, model="spiking")
        rows += frozen_rows(ev_s, norm="linf", source="surrogate", queries_per_image=len(ev.epsilons))
        evaluations[f"apgd_{loss}"] = ev_s
        transfer_rows(ev, "spiking", bb.labels, "apgd", loss, "surrogate")
        tick("apgd")

    if cfg.pgd_l2 and cfg.l2_eps:
        atk = build("spiking", "pgd-l2", cfg, "margin")
        ev = evaluate_attack(atk, sur_fmodel, sur_labels, x, y, cfg.l2_eps, model="surrogate", attack="pgd-l2",
                             loss="margin", seed=seed, prune=False, batch_size=n)
        ev = _reevaluate(ev, sur_labels, x, y, model="surrogate")
        rows += frozen_rows(ev, norm="l2", source="surrogate")
        ev_s = _reevaluate(ev, bb.labels, x, y, model="spiking")
        rows += frozen_rows(ev_s, norm="l2", source="surrogate", queries_per_image=len(ev.epsilons))
        evaluations["pgd-l2_margin"] = ev_s
        transfer_rows(ev, "spiking", bb.labels, "pgd-l2", "margin", "surrogate")
        tick("pgd-l2")

    # -- transfer from the rate model / MLP
    for name, (model, predict) in (transfer_models or {}).items():
        fm = fb.PyTorchModel(model.eval(), bounds=(0, 1), device="cpu")
        atk = build("spiking", "transfer", cfg, "margin")
        ev = evaluate_attack(atk, fm, predict, x, y, cfg.eps, model=name, attack="pgd", loss="margin", seed=seed,
                             prune=False, batch_size=n)
        ev = _reevaluate(ev, predict, x, y, model=name)
        ev_s = _reevaluate(ev, bb.labels, x, y, model="spiking", attack=f"transfer-{name}")
        rows += frozen_rows(ev_s, norm="linf", source=name, queries_per_image=len(ev.epsilons))
        evaluations[f"transfer-{name}_margin"] = ev_s
        transfer_rows(ev, "spiking", bb.labels, "pgd", "margin", name)
        transfer_rows(ev, name, predict, "pgd", "margin", name)
        # and the surrogate's PGD examples on this model: the other direction of the matrix
        if "surrogate:pgd_margin" in evaluations:
            transfer_rows(evaluations["surrogate:pgd_margin"], name, predict, "pgd", "margin", "surrogate")
        tick(f"transfer-{name}")

    hybrid_messages: list[str] = []
    # -- hybrid: surrogate gradient, spiking decisions (+ the surrogate PGD as a second restart)
    if cfg.hybrid:
        restarts = build("spiking", "hybrid", cfg, "margin", bb=bb)
        q0 = bb.queries
        ev = evaluate_attack(restarts, sur_fmodel, bb.labels, x, y, cfg.eps, model="spiking", attack="hybrid",
                             loss="margin", seed=seed, prune=True, batch_size=n)
        # every transfer example already judged by the spiking network is one more restart: per
        # image the strongest of them (so hybrid is never weaker than transfer by construction of
        # its restarts; the check then only catches a broken evaluation)
        own = ev
        for key in ("pgd_margin", *[k for k in evaluations if k.startswith("apgd_")], "transfer-rate_margin",
                    "transfer-mlp_margin"):
            if key in evaluations:
                ev = _stronger(ev, evaluations[key], x)
        # ... and a broken steering (e.g. a hybrid that never moves) is still caught: its own
        # restarts must come within HYBRID_TOLERANCE of the surrogate-PGD transfer
        if "pgd_margin" in evaluations:
            ref = evaluations["pgd_margin"]
            for k, eps in enumerate(own.epsilons):
                if eps > 0 and eps in ref.epsilons:
                    a, b = float(own.correct[k].mean()), float(ref.correct[ref.epsilons.index(eps)].mean())
                    metrics[f"hybrid_own_robust_acc_eps{eps:g}"] = a
                    if a > b + HYBRID_TOLERANCE:
                        hybrid_messages.append(
                            f"spiking eps={eps:g}: hybrid/margin on its own restarts is weaker than pgd/margin transfer "
                            f"by more than {HYBRID_TOLERANCE:g} (robust accuracy {a:.4f} > {b:.4f}): the hybrid "
                            "steering is broken or the surrogate gradient is useless")
        per_image = (bb.queries - q0) / max(n, 1)
        hrows = frozen_rows(ev, norm="linf", source="spiking")
        for r in hrows:
            r["queries"] = int(bb.queries - q0)
        rows += hrows
        rows += _fresh_rows(bb, ev, x, y, cfg, {r["eps"]: r for r in hrows})
        evaluations["hybrid_margin"] = ev
        metrics["hybrid_queries_per_image"] = round(per_image, 1)
        for k, eps in enumerate(ev.epsilons):
            fooled = ev.clean_correct & ~ev.correct[k]
            if eps > 0 and fooled.any() and any(abs(eps - e) < 1e-9 for e in cfg.headline_eps):
                tied, silent = tie_flags(bb.scores(ev.adversarial[k][fooled]))
                metrics[f"hybrid_tied_frac_eps{eps:g}"] = float(tied.mean())
                metrics[f"hybrid_silent_frac_eps{eps:g}"] = float(silent.mean())
        for k, eps in enumerate(ev.epsilons):
            ok = ev.clean_correct
            transfer.append({"source": "hybrid", "target": "spiking", "attack": "hybrid", "loss": "margin",
                             "eps": float(eps), "n": int(ok.sum()),
                             "success_rate": float((~ev.correct[k][ok]).mean()) if ok.any() else float("nan")})
        tick("hybrid")

    # -- the hybrid on the noise-averaged decision (EOT), at the fresh-noise budgets
    eot_eps = [0.0] + [e for e in cfg.fresh_eps if e > 0 and any(abs(e - b) < 1e-9 for b in cfg.eps)]
    if cfg.eot_hybrid and cfg.fresh_repeats >= 1 and len(eot_eps) > 1:
        atk = build("spiking", "eot-hybrid", cfg, "margin", bb=bb)
        q0 = bb.queries
        ev = evaluate_attack(atk, sur_fmodel, bb.labels, x, y, eot_eps, model="spiking", attack="eot-hybrid",
                             loss="margin", seed=seed, prune=False, batch_size=n)
        erows = frozen_rows(ev, norm="linf", source="spiking")
        for r in erows:
            r["queries"] = int(bb.queries - q0)
        # fresh-noise rows only: a frozen-noise reading of an attack on the noise-averaged decision
        # would answer the other threat model (and, unpruned, need not be monotone in eps)
        rows += [r for r in _fresh_rows(bb, ev, x, y, cfg, {r["eps"]: r for r in erows}) if r["eps"] > 0]
        evaluations["eot-hybrid_margin"] = ev
        metrics["eot_hybrid_queries_per_image"] = round((bb.queries - q0) / max(n, 1), 1)
        tick("eot-hybrid")

    # -- score-based, on the noise-averaged Purkinje scores (expectation over the noise), at the
    # fresh-noise budgets
    if cfg.square and cfg.square_repeats >= 1 and len(eot_eps) > 1:
        averaged_scores = NoiseAveragedScores(bb, cfg.square_repeats)
        q0 = bb.queries
        sq = build("spiking", "square", cfg, batch_size=n)
        ev = evaluate_attack(sq, fb.models.NumPyModel(averaged_scores, bounds=(0, 1)), bb.labels, x, y, eot_eps,
                             model="spiking", attack="square", loss="none", seed=seed, prune=True, batch_size=n,
                             extra={"steps": cfg.square_iters, "stepsize": float("nan")})
        metrics["square_score_evaluations_per_image"] = round(averaged_scores.evaluations / max(n, 1), 1)
        srows = frozen_rows(ev, norm="linf", source="none")
        for r in srows:
            r["queries"] = int(bb.queries - q0)
        rows += srows
        rows += _fresh_rows(bb, ev, x, y, cfg, {r["eps"]: r for r in srows})
        evaluations["square_none"] = ev
        metrics["square_queries_per_image"] = round((bb.queries - q0) / max(n, 1), 1)
        tick("square")

    # -- decision-based, the spiking network as a black box
    decision = {}
    n_dec = cfg.decision_n or n
    starts = None
    if "pgd_margin" in evaluations:  # transfer adversarials at the largest eps as starting points
        ev = evaluations["pgd_margin"]
        adv = ev.adversarial[-1][:n_dec].astype(np.float64)
        starts = np.where((~ev.correct[-1][:n_dec])[:, None], adv, np.nan)
    for name in cfg.decision:
        q0, t0 = bb.queries, time.time()
        res = run_decision_attack(lambda a: bb.scores(a), x[:n_dec].astype(np.float64), y[:n_dec], attack=name,
                                  max_queries=cfg.max_queries, starting_points=starts, x_pool=x_pool, y_pool=y_pool,
                                  seed=seed)
        wall = time.time() - t0
        norm = "l2" if name.endswith("l2") else "linf"
        norms = res.l2 if norm == "l2" else res.linf
        clean_ok = res.pred_clean == y[:n_dec]
        prob = reevaluate(lambda a: bb.fresh_scores(a), res.x_adv, y[:n_dec], cfg.fresh_repeats) \
            if cfg.fresh_repeats else np.full(n_dec, np.nan)
        eps_list = cfg.l2_eps if norm == "l2" else cfg.eps
        acc = robust_curve(norms, res.success, clean_ok, eps_list)
        attacked = clean_ok
        succ = res.success & attacked
        for eps, a in zip(eps_list, acc):
            within = succ & (norms <= eps + 1e-9)
            rows.append(_row_defaults({
                "model": "spiking", "attack": name, "loss": "none", "eps": float(eps), "seed": seed, "n": n_dec,
                "n_correct": int(round(a * n_dec)), "robust_acc": float(a),
                "mean_linf": float(np.where(within, res.linf, 0).mean()),
                "mean_l2": float(np.where(within, res.l2, 0).mean()),
                "x_min": float(res.x_adv.min()), "x_max": float(res.x_adv.max()), "wall_s": wall,
            }, norm=norm, source="none", queries=int(res.queries.sum()),
                success_prob=float(prob[within].mean()) if within.any() else float("nan")))
        success_rate = float(succ[attacked].mean()) if attacked.any() else float("nan")
        scores_adv = bb.scores(res.x_adv)  # what the attack saw (frozen, slot 0); not charged to its budget
        tied, silent = tie_flags(scores_adv)
        decision[name] = {
            "x_clean": x[:n_dec], "x_adv": res.x_adv.astype(np.float32), "y": y[:n_dec],
            "pred_clean": res.pred_clean, "pred_adv": res.pred_adv, "l2": res.l2, "linf": res.linf,
            "queries": res.queries, "success": res.success, "success_prob": prob,
            "scores_adv": scores_adv, "tied": tied, "silent": silent,
        }
        metrics[f"{name}_tied_frac"] = float(tied[succ].mean()) if succ.any() else float("nan")
        metrics[f"{name}_silent_frac"] = float(silent[succ].mean()) if succ.any() else float("nan")
        metrics[f"{name}_success_rate"] = success_rate
        metrics[f"{name}_median_l2"] = float(np.median(res.l2[succ])) if succ.any() else float("nan")
        metrics[f"{name}_median_linf"] = float(np.median(res.linf[succ])) if succ.any() else float("nan")
        metrics[f"{name}_wall_s"] = round(wall, 2)
        metrics[f"{name}_queries_per_s"] = round((bb.queries - q0) / wall, 1) if wall > 0 else float("nan")
        metrics[f"{name}_budget_hit"] = bool(res.budget_hit)
        tick(name)
    # -- the same decision-based attacks on the noise-averaged decision (majority of fresh trials)
    repeats = cfg.fresh_repeats
    if repeats >= 1:
        for name in cfg.decision_fresh:
            def averaged_decision(a, repeats=repeats):
                # the majority over `repeats` noise realisations, each a frozen slot (1..repeats, not the
                # frozen attacks' slot 0), so that the decision-based attack sees a deterministic
                # function; the examples are then judged on new fresh trials
                a = np.asarray(a, dtype=np.float64)
                votes, mean = None, None
                for r in range(repeats):
                    sc = np.asarray(bb.scores(a, slot=1 + r), dtype=np.float64).reshape(len(a), -1)
                    if votes is None:
                        votes, mean = np.zeros_like(sc), np.zeros_like(sc)
                    votes[np.arange(len(a)), sc.argmax(axis=1)] += 1
                    mean += sc / repeats
                return votes + 1e-6 * mean / max(float(np.abs(mean).max()), 1.0)

            q0, t0 = bb.queries, time.time()
            res = run_decision_attack(averaged_decision, x[:n_dec].astype(np.float64), y[:n_dec], attack=name,
                                      max_queries=cfg.max_queries, starting_points=starts, x_pool=x_pool,
                                      y_pool=y_pool, seed=seed)
            wall = time.time() - t0
            sims = bb.queries - q0
            norm = "l2" if name.endswith("l2") else "linf"
            norms = res.l2 if norm == "l2" else res.linf
            attacked = res.pred_clean == y[:n_dec]  # the noise-averaged decision was right on the clean image
            majority, p_correct = fresh_votes(bb, res.x_adv, y[:n_dec], repeats)  # new trials, not the attack's
            fooled = attacked & res.success & ~majority
            eps_list = cfg.l2_eps if norm == "l2" else eot_eps[1:]  # the positive fresh_eps that are in eps
            for eps in eps_list:
                within = fooled & (norms <= eps + 1e-9)
                robust = attacked & ~within
                rows.append(_row_defaults({
                    "model": "spiking", "attack": f"{name}-fresh", "loss": "none", "eps": float(eps), "seed": seed,
                    "n": n_dec, "n_correct": int(robust.sum()), "robust_acc": float(robust.mean()),
                    "mean_linf": float(np.where(within, res.linf, 0).mean()),
                    "mean_l2": float(np.where(within, res.l2, 0).mean()),
                    "x_min": float(res.x_adv.min()), "x_max": float(res.x_adv.max()), "wall_s": wall,
                    "fresh_repeats": repeats,
                }, norm=norm, source="none", noise_mode="fresh", queries=int(sims),
                    success_prob=float((1 - p_correct[within]).mean()) if within.any() else float("nan")))
            ok = attacked & res.success
            metrics[f"{name}-fresh_success_rate"] = float(fooled[attacked].mean()) if attacked.any() else float("nan")
            metrics[f"{name}-fresh_median_linf"] = float(np.median(res.linf[fooled])) if fooled.any() else float("nan")
            metrics[f"{name}-fresh_median_l2"] = float(np.median(res.l2[fooled])) if fooled.any() else float("nan")
            metrics[f"{name}-fresh_decisions_per_image"] = float(np.median(res.queries[ok])) if ok.any() else float("nan")
            metrics[f"{name}-fresh_queries_per_image"] = round(sims / max(n_dec, 1), 1)
            metrics[f"{name}-fresh_wall_s"] = round(wall, 2)
            tick(f"{name}-fresh")

    if "hsja-l2" in decision:
        metrics["hsja_median_l2"] = metrics["hsja-l2_median_l2"]
        metrics["queries_per_s"] = metrics["hsja-l2_queries_per_s"]

    # -- per-image worst case over every L-inf attack on the spiking network (frozen noise)
    linf_evals = [ev for k, ev in evaluations.items() if not k.startswith(("surrogate:", "pgd-l2", "eot-hybrid"))]
    if "hsja-linf" in decision and n_dec == n:
        linf_evals.append(_decision_evaluation(decision["hsja-linf"], x, cfg.eps))
    if len(linf_evals) > 1:
        for r in worst_case(linf_evals, x, model="spiking", seed=seed, partial=True):
            rows.append(_row_defaults(r, norm="linf", source="all"))
    # surrogate-spiking agreement on the adversarial inputs the hybrid found, not only on clean ones
    if "hybrid_margin" in evaluations:
        ev = evaluations["hybrid_margin"]
        for k, eps in enumerate(ev.epsilons):
            if any(abs(eps - e) < 1e-9 for e in cfg.headline_eps):
                adv = ev.adversarial[k]
                metrics[f"surrogate_agreement_adv_eps{eps:g}"] = float(np.mean(sur_labels(adv) == bb.labels(adv)))

    for r in rows:  # every row's norm is its attack's (attacks.specs); transfers are named transfer-<model>
        name = "transfer" if r["attack"].startswith("transfer-") else r["attack"]
        assert r["norm"] == spec("spiking", name).norm, r
        r["noise_mode"] = r.get("noise_mode") or "frozen"
    add_intervals(rows)
    for r in rows:  # the threat model of the headline: fresh noise, majority over fresh_repeats trials
        if r["noise_mode"] != "fresh" or r["model"] != "spiking" or r["norm"] != "linf":
            continue
        if r["eps"] == 0:
            metrics.setdefault("fresh_clean_accuracy", r["robust_acc"])
            metrics.setdefault("fresh_clean_ci", [r["ci_low"], r["ci_high"]])
        for e in cfg.headline_eps:
            if abs(r["eps"] - e) < 1e-9:
                metrics[f"fresh_robust_acc_{r['attack']}_eps{e:g}"] = r["robust_acc"]
                key = f"fresh_noise_robust_acc_eps{e:g}"
                if key not in metrics or r["robust_acc"] < metrics[key]:
                    metrics[key] = r["robust_acc"]
                    metrics[f"fresh_noise_ci_eps{e:g}"] = [r["ci_low"], r["ci_high"]]
                    metrics[f"fresh_noise_strongest_eps{e:g}"] = r["attack"]

    # -- checks
    frozen = [r for r in rows if r["noise_mode"] == "frozen"]
    messages = check_rows(frozen, dominance=()) + hybrid_messages
    # gradient masking (paired, per image, exact McNemar): uniform noise, Square or a transfer from
    # another model fooling significantly more images than the surrogate's gradient attacks, or noise /
    # Square beating the hybrid (which contains the transfers, so they are not compared with it)
    grad = [k for k in evaluations if k.split("_")[0] in ("fgsm", "pgd", "apgd")]
    free = [k for k in evaluations if k in ("noise_none", "square_none") or k.startswith("transfer-")]
    masking, outcomes = check_gradient_masking(evaluations, gradient=grad, gradient_free=free)
    m2, o2 = check_gradient_masking(evaluations, gradient=[k for k in ("hybrid_margin",) if k in evaluations],
                                    gradient_free=[k for k in ("noise_none", "square_none") if k in evaluations])
    messages += masking + m2
    metrics["checks"] = [o.as_dict() for o in outcomes + o2]
    # PGD >= FGSM and hybrid >= PGD / transfer hold by construction here (FGSM is one of PGD's
    # restarts, the transfer examples are the hybrid's restarts, per image): an assertion, not a check
    broken = [m for m in check_rows(frozen, dominance=DOMINANCE_SPIKING) if m not in messages]
    if broken:
        raise CerebError(f"internal error: a property the spiking suite guarantees by construction failed: {broken[0]}")
    for key, ev in evaluations.items():
        if key.startswith("pgd-l2"):
            delta = (ev.adversarial - x[None]).reshape(len(ev.epsilons), n, -1).astype(np.float64)
            l2 = np.sqrt((delta ** 2).sum(-1)).max(1)
            for eps, m in zip(ev.epsilons, l2):
                if m > eps + 1e-4:
                    messages.append(f"pgd-l2 eps={eps:g}: L2 perturbation {m:.6g} exceeds eps")
    for name in decision:
        sr = metrics[f"{name}_success_rate"]
        if not sr >= 0.95:
            messages.append(f"{name}: the unbounded decision-based attack fooled only {sr:.1%} of the correctly "
                            f"classified images (< 95%: the black-box evaluation is unreliable)")
    metrics["checks_passed"] = not messages
    metrics["check_messages"] = messages
    for r in rows:
        if r["noise_mode"] == "frozen" and r["model"] == "spiking" and r["norm"] == "linf":
            for e in cfg.headline_eps:
                if abs(r["eps"] - e) < 1e-9:
                    metrics[f"robust_acc_{r['attack']}_{r['loss']}_eps{e:g}"] = r["robust_acc"]
    worst = _worst(rows, cfg.headline_eps)
    metrics.update(worst)

    examples = {"x_clean": x[:10], "y": y[:10]}
    for key, ev in evaluations.items():
        if key.startswith("surrogate:"):
            continue
        examples[f"{key}.eps"] = np.asarray(ev.epsilons)
        examples[f"{key}.x_adv"] = ev.adversarial[:, :10]
    return SuiteResult(rows=rows, messages=messages, traces=[], metrics=metrics, evaluations=evaluations,
                       transfer=transfer, decision=decision, examples=examples)


def surrogate_classes(surrogate, x: np.ndarray) -> int:
    """Number of classes the surrogate scores (one forward pass)."""
    with torch.no_grad():
        return int(surrogate(torch.tensor(np.asarray(x[:1], dtype=np.float32))).shape[1]) if len(x) else 0


def tie_flags(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of class scores ``(n, n_classes)``: ``tied`` (two or more classes share the top
    score, so the prediction is numpy's lowest-index tie-break) and ``silent`` (every score is
    zero: no Purkinje cell fired in the readout period, and the prediction is class 0)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[0] == 0:
        return np.zeros(0, bool), np.zeros(0, bool)
    s = s.reshape(len(s), -1)
    top = s.max(axis=1, keepdims=True)
    return (s == top).sum(axis=1) > 1, top[:, 0] <= 0


def _stronger(a, b, x):
    """Per image the stronger of two evaluations of the same images and eps (an image is robust
    only if robust under both; its example is the one that fooled the model)."""
    from attacks.evaluate import Evaluation

    if list(a.epsilons) != list(b.epsilons):
        return a
    correct = a.correct & b.correct
    adversarial = np.array(a.adversarial, copy=True)
    use_b = a.correct & ~b.correct
    adversarial[use_b] = b.adversarial[use_b]
    rows = []
    n = len(x)
    for k, r in enumerate(a.rows):
        r = dict(r)
        delta = (adversarial[k] - x).reshape(n, -1).astype(np.float64)
        r.update(n_correct=int(correct[k].sum()), robust_acc=float(correct[k].mean()) if n else float("nan"),
                 restarts=int(r.get("restarts", 1)) + 1)
        if n:
            r.update(mean_linf=float(np.abs(delta).max(1).mean()), mean_l2=float(np.sqrt((delta ** 2).sum(1)).mean()),
                     max_linf=float(np.abs(delta).max()))
        rows.append(r)
    return Evaluation(rows, list(a.epsilons), correct, adversarial, a.clean_correct)


def _worst(rows: list[dict], headline_eps) -> dict:
    """Robust accuracy of the per-image worst case (the ``worst`` rows: frozen noise, L-inf, on the
    spiking network) at the headline budgets."""
    out = {}
    for e in headline_eps:
        vals = [r["robust_acc"] for r in rows if r["model"] == "spiking" and r["noise_mode"] == "frozen"
                and r["norm"] == "linf" and abs(r["eps"] - e) < 1e-9 and r["attack"] == "worst"]
        if vals:
            out[f"robust_acc_worst_eps{e:g}"] = float(min(vals))
    return out


def _decision_evaluation(res: dict, x: np.ndarray, epsilons) -> Any:
    """A decision-based attack's per-image results as an Evaluation at L-inf ``epsilons``: an image
    is fooled at eps when the attack succeeded within that L-inf distance."""
    from attacks.evaluate import Evaluation

    clean = np.asarray(res["pred_clean"]) == np.asarray(res["y"])
    succ = np.asarray(res["success"], bool) & clean
    linf = np.asarray(res["linf"], float)
    correct, adversarial = [], []
    for eps in epsilons:
        fooled = succ & (linf <= eps + 1e-9) if eps > 0 else np.zeros(len(x), bool)
        correct.append(clean & ~fooled)
        adversarial.append(np.where(fooled[:, None], np.asarray(res["x_adv"], np.float32), x))
    rows = [{"eps": float(e), "restarts": 1, "prune": True} for e in epsilons]
    return Evaluation(rows, [float(e) for e in epsilons], np.array(correct, bool), np.array(adversarial, np.float32),
                      clean)


def _reevaluate(ev, predict, x, y, *, model: str, attack: str | None = None):
    """The examples of an evaluation judged by ``predict`` (another model: transfer); a copy of ``ev``.

    An image fooled at some eps stays fooled, with the same example, at every larger eps (the
    smaller ball lies inside the larger), so robust accuracy cannot rise with eps."""
    from attacks.evaluate import Evaluation

    clean = np.asarray(predict(x)) == y
    correct, rows = [], []
    adversarial = np.array(ev.adversarial, copy=True)
    prev = clean
    for k, eps in enumerate(ev.epsilons):
        c = clean & (np.asarray(predict(adversarial[k])) == y) if eps > 0 else clean.copy()
        # an example that fooled the model at a smaller eps lies inside this ball too: carry it
        carried = ~prev & clean
        if k and carried.any():
            adversarial[k][carried] = adversarial[k - 1][carried]
        c &= prev
        prev = c
        correct.append(c)
        r = dict(ev.rows[k])
        r.update(model=model, n_correct=int(c.sum()), robust_acc=float(c.mean()))
        if attack:
            r["attack"] = attack
        rows.append(r)
    for r, k in zip(rows, range(len(rows))):
        delta = (adversarial[k] - x).reshape(len(y), -1).astype(np.float64)
        if len(y):
            r.update(mean_linf=float(np.abs(delta).max(1).mean()), mean_l2=float(np.sqrt((delta ** 2).sum(1)).mean()))
            if "max_linf" in r:
                r["max_linf"] = float(np.abs(delta).max())
    return Evaluation(rows, list(ev.epsilons), np.array(correct, dtype=bool).reshape(len(ev.epsilons), len(y)),
                      adversarial, clean)
