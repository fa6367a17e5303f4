"""Square attack (Andriushchenko et al. 2020): score-based, no gradients, from the Adversarial
Robustness Toolbox (ART 1.20.1, ``art.attacks.evasion.SquareAttack``).

:class:`Square` gives ART's attack Foolbox's call signature, ``attack(fmodel, inputs, labels,
epsilons=[eps]) -> (raw, clipped, success)``, so :func:`attacks.evaluate.evaluate_attack` runs it
like every other attack (pruning, seeds, checks). It reads only the class scores of ``fmodel``
(any Foolbox model, a numpy black box included) through an ART ``BlackBoxClassifierNeuralNetwork`` and counts
every input it scores in :attr:`Square.queries`. ART's Square works on images: the flat inputs
are presented as one-channel square images (8 x 8 digits, 28 x 28 MNIST).

ART draws its random squares from numpy's global generator; ``evaluate_attack`` seeds and
restores it around every call, so a run is reproducible.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

def art_data_path() -> None:
    """ART makes its data folder on import (``~/.art/data`` by default): keep it in the project's cache."""
    import os

    from core.paths import cache_dir

    os.environ.setdefault("ART_DATA_PATH", str(cache_dir("art")))


__all__ = ["Square"]


def _scores(fmodel: Any, a: np.ndarray) -> np.ndarray:
    import eagerpy as ep

    from attacks.evaluate import _to_model_input

    out = fmodel(_to_model_input(fmodel, np.array(a, dtype=np.float32)))
    return np.asarray(ep.astensor(out).numpy(), dtype=np.float64)


class Square:
    """ART's Square attack in Foolbox's call signature.

    Parameters
    ----------
    norm : ``"linf"`` or ``"l2"``.
    iterations : iterations of the attack (Andriushchenko et al. use 1,000 to 10,000); ART scores
        each still-robust image two to three times per iteration (the candidate's loss and the
        adversarial criterion), and :attr:`queries` counts every one.
    p_init : initial fraction of pixels in a square (ART's default 0.8, the paper's MNIST value).
    batch_size : inputs per score evaluation.
    """

    def __init__(self, *, norm: str = "linf", iterations: int = 1000, p_init: float = 0.8, batch_size: int = 256):
        if norm not in ("linf", "l2"):
            raise ValueError(f"Square: norm must be 'linf' or 'l2', got {norm!r}")
        if iterations < 1:
            raise ValueError(f"Square: iterations must be >= 1, got {iterations}")
        self.norm, self.iterations, self.p_init, self.batch_size = norm, int(iterations), float(p_init), int(batch_size)
        self.queries = 0

    def __repr__(self) -> str:
        return f"Square(norm={self.norm}, iterations={self.iterations}, p_init={self.p_init})"

    def __call__(self, fmodel: Any, inputs: Any, labels: Any, *, epsilons):
        import eagerpy as ep
        art_data_path()
        from art.attacks.evasion import SquareAttack
        from art.estimators.classification import BlackBoxClassifierNeuralNetwork

        x = np.asarray(ep.astensor(inputs).numpy(), dtype=np.float32)
        y = np.asarray(ep.astensor(labels).numpy(), dtype=np.int64)
        n, d = x.reshape(len(x), -1).shape
        side = math.isqrt(d)
        if side * side != d:
            raise ValueError(f"Square: inputs of {d} values are not a square image")
        if side < 2:
            raise ValueError("Square: inputs must be images of at least 2 x 2")
        flat = x.reshape(n, d)
        # ART draws a square's corner in [0, side - tile): keep the first tile smaller than the image
        p_init = min(self.p_init, 0.99 * ((side - 1) / side) ** 2)
        n_classes = _scores(fmodel, flat[:1]).shape[1]

        def predict(a: np.ndarray) -> np.ndarray:
            a = np.asarray(a, dtype=np.float32).reshape(len(a), d)
            self.queries += len(a)
            return _scores(fmodel, a)

        clf = BlackBoxClassifierNeuralNetwork(predict, input_shape=(1, side, side), nb_classes=n_classes,
                                              channels_first=True, clip_values=(0.0, 1.0))
        out_clipped = []
        for eps in epsilons:
            if eps <= 0 or n == 0:
                adv = flat.copy()
            else:
                atk = SquareAttack(clf, norm=np.inf if self.norm == "linf" else 2, eps=float(eps),
                                   max_iter=self.iterations, p_init=p_init, nb_restarts=1,
                                   batch_size=self.batch_size, verbose=False)
                adv = atk.generate(flat.reshape(n, 1, side, side), y=y).reshape(n, d).astype(np.float32)
                adv = np.clip(adv, 0.0, 1.0)
                if self.norm == "linf":  # ART projects; keep float error out of the eps check
                    adv = np.clip(adv, flat - float(eps), flat + float(eps))
            out_clipped.append(adv.reshape(x.shape))
        # success is judged by the caller's predict (evaluate_attack), not by another query here
        return out_clipped, out_clipped, None
