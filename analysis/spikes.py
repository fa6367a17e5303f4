"""Spike-train measures for one input and its adversarial, from a ``spikes.npz`` file.

``spikes.npz`` holds, for ``cond`` in ``clean``/``adv`` and each population ``pop`` (``mf`` mossy
fibres, ``grc`` granule, ``goc`` Golgi, ``pc`` Purkinje, ``cf`` climbing fibres when recorded):
``<cond>_<pop>_i`` (cell index of each spike) and ``<cond>_<pop>_t_ms`` (its time in ms from the
start of the presentation window), plus ``n_<pop>`` (cell counts), ``window_ms``, ``x_clean``,
``x_adv``, ``label``, ``pred_clean``, ``pred_adv``, ``mf_rate_min_hz`` and ``mf_rate_max_hz``.

Measures
--------
coding level
    Fraction of cells that fired at least once in the window (for granule cells, the quantity that
    the Marr-Albus theory asks to be small).
activity ratio (Treves & Rolls 1991)
    ``a = (sum_i r_i / N)**2 / (sum_i r_i**2 / N)`` over the N cells' rates r_i: 1 when all cells
    fire equally, 1/N when one cell carries all spikes.
population sparseness (Vinje & Gallant 2000)
    ``S = (1 - a) / (1 - 1/N)``, in [0, 1]; 1 is the sparsest code.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from core.runs import load_npz

__all__ = ["POPULATIONS", "CONDITIONS", "load_spikes", "spike_counts", "rates_hz", "coding_level",
           "activity_ratio", "population_sparseness", "psth", "class_rates", "spike_summary"]

POPULATIONS = ("mf", "grc", "goc", "mli", "pc", "cf")
CONDITIONS = ("clean", "adv")


def load_spikes(path: str | Path) -> dict:
    """Read ``spikes.npz`` into ``{"trains": {cond: {pop: (i, t_ms)}}, "n": {pop: cells}, ...}``.

    Populations are kept in the order of :data:`POPULATIONS`, those absent from the file left out.
    The other arrays are passed through under their own names (scalars as Python numbers).
    """
    raw = load_npz(path)
    pops = [p for p in POPULATIONS if f"clean_{p}_i" in raw and f"adv_{p}_i" in raw]
    out = {"pops": pops, "trains": {c: {} for c in CONDITIONS}, "n": {}}
    for pop in pops:
        for cond in CONDITIONS:
            out["trains"][cond][pop] = (raw[f"{cond}_{pop}_i"].astype(np.int64), raw[f"{cond}_{pop}_t_ms"].astype(float))
        n_key = f"n_{pop}"
        if n_key in raw:
            out["n"][pop] = int(raw[n_key])
        else:
            seen = [out["trains"][c][pop][0] for c in CONDITIONS]
            out["n"][pop] = int(max((s.max() + 1 for s in seen if s.size), default=0))
    for key, value in raw.items():
        if key.startswith(("clean_", "adv_", "n_")):
            continue
        out[key] = value.item() if value.ndim == 0 else value
    return out


def spike_counts(i: np.ndarray, n_cells: int) -> np.ndarray:
    """Spikes per cell, ``(n_cells,)``."""
    return np.bincount(np.asarray(i, dtype=np.int64), minlength=n_cells)[:n_cells]


def rates_hz(i: np.ndarray, n_cells: int, window_ms: float) -> np.ndarray:
    """Mean rate of each cell over the window, Hz, ``(n_cells,)``."""
    return spike_counts(i, n_cells) * (1000.0 / window_ms)


def coding_level(i: np.ndarray, n_cells: int) -> float:
    """Fraction of the ``n_cells`` cells that spiked at least once."""
    return float(np.count_nonzero(spike_counts(i, n_cells))) / n_cells if n_cells else math.nan


def activity_ratio(rates: np.ndarray) -> float:
    """Treves-Rolls activity ratio ``(mean r)**2 / mean(r**2)``; nan when no cell fired."""
    r = np.asarray(rates, dtype=float)
    denom = float(np.mean(r**2)) if r.size else 0.0
    return float(np.mean(r)) ** 2 / denom if denom > 0 else math.nan


def population_sparseness(rates: np.ndarray) -> float:
    """``(1 - a) / (1 - 1/N)`` with ``a`` the activity ratio; nan for fewer than 2 cells or no spikes."""
    n = np.asarray(rates).size
    a = activity_ratio(rates)
    return (1.0 - a) / (1.0 - 1.0 / n) if n >= 2 and not math.isnan(a) else math.nan


def psth(t_ms: np.ndarray, n_cells: int, window_ms: float, bin_ms: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Peri-stimulus time histogram: ``(bin centres in ms, mean rate per cell in Hz)``."""
    n_bins = max(1, int(round(window_ms / bin_ms)))
    edges = np.linspace(0.0, window_ms, n_bins + 1)
    hist, _ = np.histogram(np.asarray(t_ms, dtype=float), bins=edges)
    width_s = (edges[1] - edges[0]) / 1000.0
    rate = hist / (width_s * n_cells) if n_cells else np.zeros(n_bins)
    return (edges[:-1] + edges[1:]) / 2, rate


def class_rates(i: np.ndarray, t_ms: np.ndarray, n_pc: int, n_classes: int, window_ms: float,
                start_ms: float = 0.0) -> np.ndarray:
    """Mean Purkinje rate of each class, Hz, ``(n_classes,)``; spikes before ``start_ms`` ignored.

    Purkinje cells ``c*m ... c*m+m-1`` code class c (``m = n_pc // n_classes``), the layout of
    ``models.spiking.network.pc_class``.
    """
    if n_classes < 1 or n_pc % n_classes:
        raise ValueError(f"{n_pc} Purkinje cells cannot be split into {n_classes} classes")
    keep = np.asarray(t_ms) >= start_ms
    counts = spike_counts(np.asarray(i)[keep], n_pc)
    return counts.reshape(n_classes, -1).mean(axis=1) * (1000.0 / (window_ms - start_ms))


def spike_summary(spikes: dict) -> list[dict]:
    """One row per population and condition: cells, spikes, mean rate, coding level, sparseness."""
    rows = []
    window = float(spikes["window_ms"])
    for pop in spikes["pops"]:
        n = spikes["n"][pop]
        for cond in CONDITIONS:
            i, _ = spikes["trains"][cond][pop]
            r = rates_hz(i, n, window)
            rows.append({"population": pop, "condition": cond, "n_cells": n, "n_spikes": int(i.size),
                         "mean_rate_hz": float(r.mean()) if n else math.nan, "coding_level": coding_level(i, n),
                         "activity_ratio": activity_ratio(r), "sparseness": population_sparseness(r)})
    return rows
