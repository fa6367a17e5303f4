"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"), the white-box core of AutoAttack, from the Adversarial Robustness
Toolbox (ART 1.20.1, ``art.attacks.evasion.AutoProjectedGradientDescent``).

:class:`APGD` gives ART's attack Foolbox's call signature, ``attack(fmodel, inputs, labels,
epsilons=[eps]) -> (raw, clipped, success)``, so :func:`attacks.evaluate.evaluate_attack` runs it
like every other attack (pruning, seeds, the cheap attacks first, checks). It needs the PyTorch
module behind a Foolbox ``PyTorchModel`` (the rate model, the MLP, the spiking network's surrogate)
and wraps it in an ART ``PyTorchClassifier`` on the same device.

Losses: ``ce`` (APGD-CE, cross-entropy) and ``dlr`` (APGD-DLR, the difference-of-logits ratio,
invariant to the scale of the logits; it needs at least three classes). Step sizes are APGD's own
(adaptive, no tuning: that is its point); ``restarts`` random starts in the ball; ART attacks again
only the images every earlier restart failed on.

ART draws its random starts from numpy's global generator; ``evaluate_attack`` seeds and restores
it around every call, so a run is reproducible.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["APGD", "APGD_LOSSES"]

APGD_LOSSES = {"ce": "cross_entropy", "dlr": "difference_logits_ratio"}


def torch_module(fmodel: Any):
    """The ``torch.nn.Module`` behind a Foolbox ``PyTorchModel`` (``None`` for any other model)."""
    import torch

    module = getattr(fmodel, "_model", None)
    if isinstance(module, torch.nn.Module):
        return module
    # Foolbox 3.3.4 wraps the module in a closure (grad mode per call): take it from there
    for cell in getattr(module, "__closure__", None) or ():
        if isinstance(cell.cell_contents, torch.nn.Module):
            return cell.cell_contents
    return None


class APGD:
    """ART's APGD in Foolbox's call signature (L-inf).

    Parameters
    ----------
    loss : ``"ce"`` or ``"dlr"``.
    steps : iterations per restart (Croce & Hein use 100).
    restarts : random starts (ART's ``nb_random_init``; AutoAttack's standard version uses 1 for
        APGD-CE and APGD-DLR after a first run, its "plus" version 5).
    batch_size : images per ART batch.
    """

    def __init__(self, *, loss: str = "ce", steps: int = 100, restarts: int = 1, batch_size: int = 256):
        if loss not in APGD_LOSSES:
            raise ValueError(f"APGD: loss must be one of {sorted(APGD_LOSSES)}, got {loss!r}")
        if steps < 1 or restarts < 1:
            raise ValueError(f"APGD: steps and restarts must be >= 1, got {steps} and {restarts}")
        self.loss, self.steps, self.restarts, self.batch_size = loss, int(steps), int(restarts), int(batch_size)

    def __repr__(self) -> str:
        return f"APGD(loss={self.loss}, steps={self.steps}, restarts={self.restarts})"

    def __call__(self, fmodel: Any, inputs: Any, labels: Any, *, epsilons):
        import eagerpy as ep
        import torch
        from attacks.square import art_data_path

        art_data_path()
        from art.attacks.evasion import AutoProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        module = torch_module(fmodel)
        if module is None:
            raise TypeError("APGD needs a Foolbox PyTorchModel (a differentiable PyTorch model)")
        x = np.asarray(ep.astensor(inputs).numpy(), dtype=np.float32)
        y = np.asarray(ep.astensor(labels).numpy(), dtype=np.int64)
        n = len(x)
        flat = x.reshape(n, -1)
        device = next(module.parameters(), torch.zeros(0)).device
        with torch.no_grad():
            n_classes = int(module(torch.tensor(flat[:1], device=device)).shape[1])
        if self.loss == "dlr" and n_classes < 3:
            raise ValueError("APGD-DLR needs at least three classes (it divides by the gap to the third logit)")
        clf = PyTorchClassifier(module, loss=torch.nn.CrossEntropyLoss(), input_shape=(flat.shape[1],),
                                nb_classes=n_classes, clip_values=(0.0, 1.0), device_type=device.type)
        out = []
        for eps in epsilons:
            if eps <= 0 or n == 0:
                adv = flat.copy()
            else:
                atk = AutoProjectedGradientDescent(clf, norm=np.inf, eps=float(eps), eps_step=2 * float(eps),
                                                   max_iter=self.steps, targeted=False, nb_random_init=self.restarts,
                                                   batch_size=self.batch_size, loss_type=APGD_LOSSES[self.loss],
                                                   verbose=False)
                adv = np.asarray(atk.generate(flat, y=y), dtype=np.float32).reshape(n, -1)
                adv = np.clip(np.clip(adv, flat - float(eps), flat + float(eps)), 0.0, 1.0)
            out.append(adv.reshape(x.shape))
        # success is judged by the caller's predict (evaluate_attack)
        return out, out, None
