"""Attack objectives on a model's outputs: one value per image, to be maximised.

All take eagerpy tensors ``logits`` (n_images, n_classes) and integer ``labels`` (n_images,)
and return (n_images,); Foolbox sums them and ascends the sum.

``mse``     ``||y - onehot(label)||^2``: the seed paper's loss (Yuezhang, Li & Chen 2021, whose
            attacks ascended ``F.mean_squared_error(output, target)``).
``ce``      cross-entropy of the softmax of the outputs (Foolbox's default loss).
``margin``  ``max_{j != label} y_j - y_label``: the Carlini & Wagner (2017) margin; positive
            exactly when the image is misclassified.
"""
from __future__ import annotations

from typing import Callable

import eagerpy as ep
import numpy as np

__all__ = ["LOSSES", "mse_loss", "ce_loss", "margin_loss", "margin", "score_summary"]


def mse_loss(logits: ep.Tensor, labels: ep.Tensor) -> ep.Tensor:
    """Squared distance of the outputs from the one-hot target, per image."""
    target = ep.onehot_like(logits, labels)
    return ((logits - target) ** 2).sum(axis=-1)


def ce_loss(logits: ep.Tensor, labels: ep.Tensor) -> ep.Tensor:
    """Softmax cross-entropy, per image."""
    return ep.crossentropy(logits, labels)


def margin(logits: ep.Tensor, labels: ep.Tensor) -> ep.Tensor:
    """``y_label - max_{j != label} y_j``: positive when correctly classified."""
    correct = (logits * ep.onehot_like(logits, labels)).sum(axis=-1)
    others = (logits - ep.onehot_like(logits, labels, value=float("inf"))).max(axis=-1)
    return correct - others


def margin_loss(logits: ep.Tensor, labels: ep.Tensor) -> ep.Tensor:
    """Carlini-Wagner margin loss ``max_{j != label} y_j - y_label``, per image."""
    return -margin(logits, labels)


LOSSES: dict[str, Callable[[ep.Tensor, ep.Tensor], ep.Tensor]] = {
    "mse": mse_loss,
    "ce": ce_loss,
    "margin": margin_loss,
}


def score_summary(scores, labels) -> dict:
    """Means over images of the true class's score, of the other classes' mean score and of the
    margin (true minus the best other): what an attack moves (numpy in, floats out)."""
    z = np.asarray(scores, dtype=np.float64)
    idx = np.arange(len(z))
    true = z[idx, np.asarray(labels)]
    others = z.copy()
    others[idx, np.asarray(labels)] = -np.inf
    return {"true_score_mean": float(true.mean()),
            "other_score_mean": float(((z.sum(1) - true) / max(1, z.shape[1] - 1)).mean()),
            "margin_mean": float((true - others.max(axis=1)).mean())}
