"""The ``attack.*`` configuration section (no heavy imports: ``cereb --help`` reads it).

Defaults follow the seed paper (Yuezhang, Li & Chen 2021: eps 0 to 0.3, PGD of 40 steps of 0.01
with a random start, MSE loss) and, for the strong evaluation, Carlini et al. (2019), "On
evaluating adversarial robustness" (margin and cross-entropy losses, >= 100 steps, restarts).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AttackConfig", "LOSS_NAMES"]

LOSS_NAMES = ("mse", "ce", "margin")


@dataclass(frozen=True)
class AttackConfig:
    """The ``attack.*`` section: which attacks, at which eps, on how many test images.

    Attributes
    ----------
    n : number of test images attacked (the first n of the test split).
    eps : L-inf budgets of every attack (paper: 0 to 0.3 in steps of 0.05).
    noise, fgsm, pgd : run the paper's uniform-noise, FGSM and PGD attacks.
    losses : losses of FGSM and PGD (``mse`` is the paper's).
    pgd_steps, pgd_stepsize, pgd_random_start : the paper's PGD (40 steps of 0.01, random start).
    strong : run the strong evaluation.
    strong_losses : losses its restarts cycle through.
    strong_steps, strong_restarts : at least 100 steps and 5 restarts.
    strong_rel_stepsize : its step size relative to eps (0.025: 2.5 eps over 100 steps).
    strong_after_cheap : the strong evaluation runs after the other attacks and does not attack
        again an image one of them fooled at that eps (its row then counts an image robust only if
        every attack of the suite failed; ``n_known_fooled`` says how many were decided so). Off:
        the strong evaluation stands alone (the cost of every image at every eps).
    target_acc : the strong sweep continues until robust accuracy <= this.
    eps_step, eps_max : how the strong sweep continues past the last eps, and where it stops.
    prune : attack only images still robust at the previous eps (see attacks.evaluate).
    trace : record loss and gradient traces where MSE-PGD and the strong evaluation disagree.
    trace_gap : robust-accuracy gap (MSE-PGD minus strong) that triggers the traces.
    trace_images : at most this many images are traced.
    batch_size : images per attack call; None chooses by model size.
    apgd : run APGD (Croce & Hein 2020; ART's implementation, :mod:`attacks.apgd`), the white-box core
        of AutoAttack, after every other attack and only on the images none of them fooled at that
        eps (its rows count an image robust only if every attack of the suite failed).
    apgd_losses : ``ce`` (APGD-CE) and ``dlr`` (APGD-DLR; skipped on two-class tasks).
    apgd_steps, apgd_restarts : iterations per restart (100) and random restarts.
    square : run the score-based Square attack (Andriushchenko et al. 2020; ART's implementation,
        :mod:`attacks.square`) at every eps, L-inf; off by default (it costs two to three forward
        passes per image, eps and iteration: affordable for small models, not for the paper's widest).
    square_iters : its iterations.
    headline_eps : the budgets whose robust accuracies also go into ``metrics.json``
        (``robust_acc_<attack>_eps<e>``, ``robust_acc_worst_eps<e>``), those of them in ``eps``.
    """

    n: int = 1000
    eps: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    noise: bool = True
    fgsm: bool = True
    pgd: bool = True
    losses: tuple[str, ...] = ("mse", "ce", "margin")
    pgd_steps: int = 40
    pgd_stepsize: float = 0.01
    pgd_random_start: bool = True
    strong: bool = True
    strong_losses: tuple[str, ...] = ("margin", "ce")
    strong_steps: int = 100
    strong_restarts: int = 5
    strong_rel_stepsize: float = 0.025
    strong_after_cheap: bool = True
    target_acc: float = 0.01
    eps_step: float = 0.05
    eps_max: float = 1.0
    prune: bool = True
    trace: bool = True
    trace_gap: float = 0.1
    trace_images: int = 100
    batch_size: int | None = None
    apgd: bool = True
    apgd_losses: tuple[str, ...] = ("ce", "dlr")
    apgd_steps: int = 100
    apgd_restarts: int = 1
    square: bool = False
    square_iters: int = 1000
    headline_eps: tuple[float, ...] = (0.1, 0.3)

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"attack.n must be >= 1, got {self.n}")
        if not self.eps:
            raise ValueError("attack.eps must list at least one eps")
        for e in self.eps:
            if not e >= 0:
                raise ValueError(f"attack.eps must be >= 0, got {e}")
            if e > 1:
                raise ValueError(f"attack.eps must be <= 1 (inputs lie in [0, 1]), got {e}")
        for loss in (*self.losses, *self.strong_losses):
            if loss not in LOSS_NAMES:
                raise ValueError(f"unknown attack loss {loss!r} (known: {', '.join(LOSS_NAMES)})")
        for loss in self.apgd_losses:
            if loss not in ("ce", "dlr"):
                raise ValueError(f"unknown APGD loss {loss!r} (known: ce, dlr)")
        if self.apgd and not self.apgd_losses:
            raise ValueError("attack.apgd_losses must name at least one loss")
        if self.strong and not self.strong_losses:
            raise ValueError("attack.strong_losses must name at least one loss")
        for name in ("pgd_steps", "strong_steps", "strong_restarts", "trace_images", "square_iters", "apgd_steps",
                     "apgd_restarts"):
            if getattr(self, name) < 1:
                raise ValueError(f"attack.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pgd_stepsize", "strong_rel_stepsize", "eps_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"attack.{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.target_acc <= 1:
            raise ValueError(f"attack.target_acc must be in [0, 1], got {self.target_acc}")
        if not max(self.eps) <= self.eps_max <= 1:
            raise ValueError(f"attack.eps_max must be in [max(eps), 1], got {self.eps_max}")
        bad = [e for e in self.headline_eps if not e >= 0]
        if bad:
            raise ValueError(f"attack.headline_eps must be >= 0, got {bad[0]}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"attack.batch_size must be >= 1, got {self.batch_size}")
