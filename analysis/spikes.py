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
           "activity_ratio", "population_sparseness", "psth", "class_rates", "spike_summary", "TRIAL_KEYS",
           "write_trial_spikes", "load_trial_spikes", "trial_rate_rows", "TRIAL_RATE_COLUMNS", "conditions_as_trials"]

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


# ----------------------------------------------------------------------------- trials (cereb simulate)
# Per-trial arrays of a trials dict, each (n_trials,); the per-input ones are (n_inputs,).
TRIAL_KEYS = ("trial_input", "trial_repeat", "trial_label", "trial_predicted", "trial_noise_seed", "trial_noise_slot")
INPUT_KEYS = ("input_condition", "input_source", "input_label")
SCALAR_KEYS = ("window_ms", "readout_start_ms", "dt_ms", "n_classes", "mf_rate_min_hz", "mf_rate_max_hz", "noise", "olive")
TRIAL_RATE_COLUMNS = ["population", "trial", "input", "repeat", "condition", "label", "predicted", "n_cells",
                      "n_spikes", "mean_rate_hz", "coding_level"]


def write_trial_spikes(path: str | Path, trials: dict) -> Path:
    """Write a trials dict (see :func:`load_trial_spikes`) as ``spikes.npz``.

    Layout, for each recorded population ``pop``: ``<pop>_i`` (cell of each spike), ``<pop>_t_ms``
    (its time in ms from the start of its trial's window), ``<pop>_trial`` (its trial) and ``n_<pop>``
    (cells); per trial ``trial_input`` (index into ``x``), ``trial_repeat``, ``trial_label`` (the
    input's label, -1 if none), ``trial_predicted``, ``trial_noise_seed``, ``trial_noise_slot`` and
    ``scores_hz`` ``(n_trials, n_classes)``; per input ``x`` ``(n_inputs, n_fibres)`` in [0, 1],
    ``input_condition``, ``input_source`` (test index, file row or example index) and
    ``input_label``; scalars ``window_ms``, ``readout_start_ms``, ``dt_ms``, ``n_classes``,
    ``mf_rate_min_hz``, ``mf_rate_max_hz``, ``noise`` and ``olive``.
    """
    from core.runs import save_npz

    arrays: dict = {}
    for pop in trials["pops"]:
        per_trial = trials["trains"][pop]
        arrays[f"{pop}_i"] = np.concatenate([np.asarray(i, np.int32) for i, _ in per_trial] or [np.zeros(0, np.int32)])
        arrays[f"{pop}_t_ms"] = np.concatenate([np.asarray(t, np.float64) for _, t in per_trial] or [np.zeros(0)])
        arrays[f"{pop}_trial"] = np.concatenate([np.full(len(i), k, np.int32) for k, (i, _) in enumerate(per_trial)]
                                                or [np.zeros(0, np.int32)])
        arrays[f"n_{pop}"] = np.int64(trials["n"][pop])
    for key in TRIAL_KEYS + INPUT_KEYS + ("x", "scores_hz"):
        arrays[key] = np.asarray(trials[key])
    for key in SCALAR_KEYS:
        arrays[key] = np.asarray(trials[key])
    return save_npz(path, **arrays)


def load_trial_spikes(path: str | Path) -> dict:
    """Read a ``spikes.npz`` of ``cereb simulate`` into a trials dict: ``pops`` (recorded, in the
    order of :data:`POPULATIONS`), ``n`` (cells per population), ``trains`` (population -> one
    ``(i, t_ms)`` pair per trial), the per-trial and per-input arrays and the scalars of
    :func:`write_trial_spikes`."""
    raw = load_npz(path)
    missing = [k for k in TRIAL_KEYS + INPUT_KEYS + ("x", "scores_hz", "window_ms") if k not in raw]
    if missing:
        from core.errors import DataError

        raise DataError(f"{path} is not a trial spike file of 'cereb simulate' (missing {', '.join(missing)})")
    n_trials = len(raw["trial_input"])
    out: dict = {"pops": [p for p in POPULATIONS if f"{p}_i" in raw], "n": {}, "trains": {}}
    for pop in out["pops"]:
        i, t, k = raw[f"{pop}_i"].astype(np.int64), raw[f"{pop}_t_ms"].astype(float), raw[f"{pop}_trial"]
        out["n"][pop] = int(raw[f"n_{pop}"])
        out["trains"][pop] = [(i[k == trial], t[k == trial]) for trial in range(n_trials)]
    for key in TRIAL_KEYS + INPUT_KEYS + ("x", "scores_hz"):
        out[key] = raw[key]
    for key in SCALAR_KEYS:
        if key in raw:
            out[key] = raw[key].item()
    return out


def trial_rate_rows(trials: dict) -> list[dict]:
    """One row per population and trial (columns :data:`TRIAL_RATE_COLUMNS`)."""
    rows = []
    window = float(trials["window_ms"])
    for pop in trials["pops"]:
        n = trials["n"][pop]
        for k, (i, _) in enumerate(trials["trains"][pop]):
            q = int(trials["trial_input"][k])
            r = rates_hz(i, n, window)
            rows.append({"population": pop, "trial": k, "input": q, "repeat": int(trials["trial_repeat"][k]),
                         "condition": str(trials["input_condition"][q]), "label": int(trials["trial_label"][k]),
                         "predicted": int(trials["trial_predicted"][k]), "n_cells": n, "n_spikes": int(len(i)),
                         "mean_rate_hz": float(r.mean()) if n else math.nan, "coding_level": coding_level(i, n)})
    return rows


def conditions_as_trials(spikes: dict) -> dict:
    """The clean/adversarial pair of a ``spikes.npz`` (:func:`load_spikes`) as a two-trial trials
    dict (the same noise, slot 0, in both), for the NWB export."""
    x = np.stack([np.asarray(spikes["x_clean"], float).reshape(-1), np.asarray(spikes["x_adv"], float).reshape(-1)])
    label = int(spikes.get("label", -1))
    pred = [int(spikes.get("pred_clean", -1)), int(spikes.get("pred_adv", -1))]
    scores = [np.asarray(spikes.get(f"scores_{c}", []), float) for c in ("clean", "adv")]
    n_classes = int(scores[0].size) if scores[0].size else 0
    return {
        "pops": list(spikes["pops"]), "n": dict(spikes["n"]),
        "trains": {pop: [spikes["trains"][c][pop] for c in CONDITIONS] for pop in spikes["pops"]},
        "trial_input": np.array([0, 1]), "trial_repeat": np.array([0, 0]), "trial_label": np.array([label, label]),
        "trial_predicted": np.array(pred), "trial_noise_seed": np.array([-1, -1]), "trial_noise_slot": np.array([0, 0]),
        "input_condition": np.array(["clean", "adversarial"]), "input_source": np.array([0, 0]),
        "input_label": np.array([label, label]), "x": x,
        "scores_hz": np.stack(scores) if n_classes else np.zeros((2, 0)),
        "window_ms": float(spikes["window_ms"]), "readout_start_ms": float(spikes.get("readout_start_ms", 0.0)),
        "dt_ms": float(spikes.get("dt_ms", float("nan"))), "n_classes": n_classes,
        "mf_rate_min_hz": float(spikes.get("mf_rate_min_hz", float("nan"))),
        "mf_rate_max_hz": float(spikes.get("mf_rate_max_hz", float("nan"))), "noise": "frozen", "olive": "cf" in spikes["pops"],
    }
