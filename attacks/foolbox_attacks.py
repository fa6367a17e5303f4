"""Foolbox attacks with a choice of loss, and a variant that records each step.

Foolbox 3.3.4's gradient attacks ascend ``get_loss_fn`` (cross-entropy by default); the
subclasses here override it with a loss from :mod:`attacks.losses`, which is all the seed paper's
MSE attacks need (its FGSM and PGD ascended the MSE to the one-hot target). Everything else (random
start, sign step, projection onto the eps-ball, clipping to the bounds) is Foolbox's own.

:class:`TracedPGD` additionally records, at every step, the loss, the margin, whether each image
is still classified correctly, and the norms of the input gradient: the evidence that tells a
robust model from a loss that gives the attack nothing to climb.
"""
from __future__ import annotations

from typing import Any, Callable

import eagerpy as ep
import foolbox as fb
import numpy as np

from attacks.losses import LOSSES, margin, score_summary
from core.errors import ConfigError

__all__ = ["LossMixin", "PGD", "StrongPGD", "FGSM", "TracedPGD", "uniform_noise", "make_attack"]


class LossMixin:
    """Replaces a Foolbox gradient attack's loss with ``LOSSES[self.loss]`` (summed over images)."""

    loss: str = "ce"

    def get_loss_fn(self, model: fb.Model, labels: ep.Tensor) -> Callable[[ep.Tensor], ep.Tensor]:
        per_image = LOSSES[self.loss]

        def loss_fn(inputs: ep.Tensor) -> ep.Tensor:
            logits = model(inputs)
            values = per_image(logits, labels)
            self._observe(logits, labels, values)
            return values.sum()

        return loss_fn

    def _observe(self, logits: ep.Tensor, labels: ep.Tensor, values: ep.Tensor) -> None:
        """Hook for subclasses that record the optimisation (no-op here)."""


def _check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ConfigError(f"unknown attack loss {loss!r} (known: {', '.join(LOSSES)})")
    return loss


class PGD(LossMixin, fb.attacks.LinfPGD):
    """L-inf projected gradient descent (Madry et al. 2018) on ``loss``.

    Parameters
    ----------
    loss : ``mse``, ``ce`` or ``margin``.
    steps : number of sign-gradient steps.
    abs_stepsize : step size in input units; if None, ``rel_stepsize * eps``.
    rel_stepsize : step size relative to eps.
    random_start : start from a uniform point in the eps-ball.
    """

    def __init__(self, *, loss: str = "ce", steps: int = 40, abs_stepsize: float | None = None,
                 rel_stepsize: float = 0.01 / 0.3, random_start: bool = True):
        super().__init__(rel_stepsize=rel_stepsize, abs_stepsize=abs_stepsize, steps=steps, random_start=random_start)
        self.loss = _check_loss(loss)


class FGSM(LossMixin, fb.attacks.FGSM):
    """Fast gradient sign method (Goodfellow et al. 2015) on ``loss``: one step of size eps."""

    def __init__(self, *, loss: str = "ce", random_start: bool = False):
        super().__init__(random_start=random_start)
        self.loss = _check_loss(loss)


class StrongPGD(PGD):
    """:class:`PGD` that stops each image at the first iterate the Foolbox model misclassifies.

    Foolbox's PGD returns its last iterate, which can have left an adversarial region it passed
    through (sign steps oscillate). For the strong evaluation an image counts as broken if any
    iterate fools the model ("best iterate", as recommended by Carlini et al. 2019), and an image
    that is fooled is not computed any further, so each step costs only the images still
    resisting. Images never fooled get the last iterate. The steps themselves (random start, sign
    step, projection, clipping) are Foolbox's, applied image by image exactly as in its loop.
    """

    def run(self, model, inputs, criterion, *, epsilon, **kwargs):
        from foolbox.attacks.base import get_criterion, raise_if_kwargs, verify_input_bounds
        from foolbox.criteria import Misclassification

        raise_if_kwargs(kwargs)
        x0, restore_type = ep.astensor_(inputs)
        criterion_ = get_criterion(criterion)
        if not isinstance(criterion_, Misclassification):
            raise ValueError("StrongPGD is an untargeted attack (Misclassification criterion only)")
        verify_input_bounds(x0, model)
        labels = criterion_.labels
        stepsize = self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * epsilon
        x = ep.clip(self.get_random_start(x0, epsilon), *model.bounds) if self.random_start else x0
        active = np.arange(len(x0))
        for _ in range(self.steps):
            idx = ep.from_numpy(x0, active)
            xa, x0a = x[idx], x0[idx]
            _, grad = self.value_and_grad(self.get_loss_fn(model, labels[idx]), xa)
            fooled = self._fooled.numpy().astype(bool)
            grad = self.normalize(grad, x=xa, bounds=model.bounds)
            stepped = ep.clip(self.project(xa + stepsize * grad, x0a, epsilon), *model.bounds)
            x = ep.index_update(x, idx, ep.where(_like(xa, fooled), xa, stepped))
            active = active[~fooled]
            if not len(active):
                break
        return restore_type(x)

    def _observe(self, logits: ep.Tensor, labels: ep.Tensor, values: ep.Tensor) -> None:
        self._fooled = margin(logits, labels) < 0


def _like(x: ep.Tensor, mask: np.ndarray) -> ep.Tensor:
    """A boolean mask of one entry per image, broadcastable against ``x`` and of its backend."""
    return ep.from_numpy(x, mask.reshape((-1,) + (1,) * (x.ndim - 1)))


class TracedPGD(PGD):
    """:class:`PGD` that records per-step statistics in ``self.trace`` (a list of dicts).

    Step ``t`` describes the iterate before the ``t``-th update (step 0: the random start).
    Columns: ``step, n, loss_mean, margin_mean, frac_correct, true_score_mean`` (the true class's
    score), ``other_score_mean`` (the mean score of the other classes), ``grad_l1_mean, grad_l2_mean,
    grad_linf_mean, grad_zero_frac``.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.trace: list[dict] = []
        self._pending: dict | None = None

    def _observe(self, logits: ep.Tensor, labels: ep.Tensor, values: ep.Tensor) -> None:
        m = margin(logits, labels).numpy()
        scores = score_summary(logits.numpy(), labels.numpy())
        self._pending = {"loss_mean": float(values.numpy().mean()), "margin_mean": float(m.mean()),
                         "frac_correct": float((m > 0).mean()), "true_score_mean": scores["true_score_mean"],
                         "other_score_mean": scores["other_score_mean"]}

    def value_and_grad(self, loss_fn, x):
        value, grad = super().value_and_grad(loss_fn, x)
        g = grad.numpy().reshape(len(grad), -1).astype(np.float64)
        row = {"step": len(self.trace), "n": len(g), **(self._pending or {}),
               "grad_l1_mean": float(np.abs(g).sum(1).mean()),
               "grad_l2_mean": float(np.sqrt((g ** 2).sum(1)).mean()),
               "grad_linf_mean": float(np.abs(g).max(1).mean()),
               "grad_zero_frac": float((g == 0).mean())}
        self.trace.append(row)
        return value, grad


def uniform_noise() -> fb.attacks.LinfAdditiveUniformNoiseAttack:
    """Uniform noise in [-eps, eps] per input, clipped to the bounds (the paper's random attack)."""
    return fb.attacks.LinfAdditiveUniformNoiseAttack()


def make_attack(kind: str, loss: str = "none", **kwargs: Any):
    """``noise``, ``fgsm`` or ``pgd`` with ``loss`` (``none`` for noise) and keyword settings."""
    if kind == "noise":
        if loss != "none":
            raise ConfigError("the noise attack takes no loss (loss='none')")
        return uniform_noise()
    if kind == "fgsm":
        return FGSM(loss=loss, **kwargs)
    if kind == "pgd":
        return PGD(loss=loss, **kwargs)
    raise ConfigError(f"unknown attack {kind!r} (noise, fgsm or pgd)")
