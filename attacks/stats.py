"""Intervals and paired tests for robust accuracy (scipy), with the image as the unit.

- :func:`proportion_ci`: the exact (Clopper-Pearson) 95% interval of ``k`` robust images out of
  ``n`` (``scipy.stats.binomtest(...).proportion_ci(method="exact")``); at n = 100 and k = 50 it
  is [0.398, 0.602], the +-10 points a robust-accuracy row of 100 images carries.
- :func:`add_intervals`: ``ci_low`` and ``ci_high`` on every row that has ``n_correct`` and ``n``.
- :func:`mcnemar`: the exact McNemar test of two attacks on the same images, from the per-image
  outcomes (a two-sided binomial test on the discordant images, ``scipy.stats.binomtest``), so
  that a real gap between two attacks is caught and a one-image difference is not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, MutableMapping

import numpy as np

__all__ = ["CONFIDENCE", "ALPHA", "proportion_ci", "add_intervals", "Paired", "mcnemar"]

CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE


def proportion_ci(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of the proportion ``k / n``; (nan, nan) when ``n == 0``."""
    from scipy.stats import binomtest

    k, n = int(k), int(n)
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"proportion_ci: k={k} outside [0, n={n}]")
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def add_intervals(rows: Iterable[MutableMapping], confidence: float = CONFIDENCE) -> None:
    """Set ``ci_low`` and ``ci_high`` (of ``n_correct / n``) on every row, in place."""
    for row in rows:
        if "n_correct" in row and "n" in row:
            row["ci_low"], row["ci_high"] = proportion_ci(row["n_correct"], row["n"], confidence)


@dataclass(frozen=True)
class Paired:
    """Two attacks on the same images: ``only_a`` images robust under A but fooled by B, ``only_b``
    the reverse, and the exact two-sided McNemar p-value of the difference."""

    only_a: int
    only_b: int
    p_value: float

    @property
    def n_discordant(self) -> int:
        return self.only_a + self.only_b


def mcnemar(robust_a: np.ndarray, robust_b: np.ndarray) -> Paired:
    """Exact McNemar test of two per-image robustness outcomes (bool arrays of the same images)."""
    from scipy.stats import binomtest

    a = np.asarray(robust_a, dtype=bool)
    b = np.asarray(robust_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar: outcomes of different shapes {a.shape} and {b.shape}")
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)
    return Paired(only_a, only_b, p)
