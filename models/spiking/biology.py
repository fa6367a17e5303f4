"""The network's activity against published physiology: ``biology.csv`` and ``biology_ok``.

Per population and condition the mean rate (Hz), the granule coding level and the Purkinje
population synchrony are measured and checked against the ranges of
:mod:`models.spiking.params` (sources there):

======================  ===========  ==================================  ==========================
population              condition    measure                             range
======================  ===========  ==================================  ==========================
granule (grc)           spontaneous  rate                                <= 1 Hz (Chadderton 2004)
granule                 evoked       coding level                        5-20 % (Billings 2014)
Golgi (goc)             spontaneous  rate                                1-20 Hz (Dieudonné 1998; Forti 2006)
Golgi                   evoked       rate                                <= 40 Hz
interneurons (mli)      spontaneous  rate                                5-30 Hz (Häusser & Clark 1997)
interneurons            evoked       rate                                <= 80 Hz
Purkinje (pc)           spontaneous  rate                                40-100 Hz (Häusser & Clark 1997)
Purkinje                both         synchrony chi                       < 0.3
Purkinje                evoked       rate; modulation (each cell's s.d.  20-150 Hz; >= 5 Hz
                                     over classes of its class-mean
                                     rate, mean of cells)
climbing fibres (cf)    training     mean rate; highest per-cell rate    <= 3 Hz; <= 10 Hz
                                     over an epoch                       (Armstrong & Rawson 1979)
======================  ===========  ==================================  ==========================

"Spontaneous" is background mossy-fibre input alone (every fibre at ``mf_rate_min_hz``, input
0); "evoked" is the test inputs; both from the steady state, over the whole window (Purkinje
cells over the readout period). The synchrony is the Golomb-Rinzel measure (Golomb & Rinzel
1993, Phys Rev E 48:4810) of the Purkinje membrane potentials over the readout period,
``chi^2 = var_t(mean_i V_i) / mean_i var_t(V_i)``, averaged over presentations: about
``1/sqrt(N)`` for independent cells, 1 for identical ones.
"""
from __future__ import annotations

import numpy as np

__all__ = ["RANGES", "synchrony_chi", "measure", "rows_ok"]

# (population, condition, measure) -> (low, high, source)
RANGES = {
    ("grc", "spontaneous", "rate_hz"): (0.0, 1.0, "Chadderton et al. 2004"),
    ("grc", "evoked", "coding_level"): (0.05, 0.20, "Billings et al. 2014; Litwin-Kumar et al. 2017"),
    ("goc", "spontaneous", "rate_hz"): (1.0, 20.0, "Dieudonne 1998; Forti et al. 2006"),
    ("goc", "evoked", "rate_hz"): (0.0, 40.0, "Dieudonne 1998; Forti et al. 2006"),
    ("mli", "spontaneous", "rate_hz"): (5.0, 30.0, "Hausser & Clark 1997"),
    ("mli", "evoked", "rate_hz"): (0.0, 80.0, "Hausser & Clark 1997; Jorntell & Ekerot 2003"),
    ("pc", "spontaneous", "rate_hz"): (40.0, 100.0, "Hausser & Clark 1997"),
    ("pc", "spontaneous", "synchrony_chi"): (0.0, 0.3, "Golomb & Rinzel 1993 (asynchronous population)"),
    ("pc", "evoked", "rate_hz"): (20.0, 150.0, "Hausser & Clark 1997"),
    ("pc", "evoked", "modulation_hz"): (5.0, float("inf"), "Hausser & Clark 1997 (modulated by input)"),
    ("pc", "evoked", "synchrony_chi"): (0.0, 0.3, "Golomb & Rinzel 1993 (asynchronous population)"),
    ("cf", "training", "rate_hz"): (0.0, 3.0, "Armstrong & Rawson 1979"),
    ("cf", "training", "max_rate_hz"): (0.0, 10.0, "Armstrong & Rawson 1979"),
}


def synchrony_chi(v: np.ndarray) -> float:
    """Golomb-Rinzel synchrony of traces ``v`` ``(n_cells, n_steps)``: in [0, 1]."""
    v = np.asarray(v, dtype=np.float64)
    mean_var = v.var(axis=1).mean()
    if v.shape[0] < 2 or mean_var <= 0:
        return float("nan")
    return float(np.sqrt(v.mean(axis=0).var() / mean_var))


def _pc_traces(cfg, conn, weights, start, x: np.ndarray, seed: int) -> list[np.ndarray]:
    """Purkinje membrane potentials ``(n_pc, n_readout_steps)`` per input, one copy per input."""
    from models.spiking.brian import get_brian2
    from models.spiking.network import build_inference_net, run_inference_chunks

    b2 = get_brian2()
    n = len(x)
    inet = build_inference_net(cfg, conn, weights, n, cfg.dt_ms, cfg.window_ms, 1, start=start)
    mon = b2.StateMonitor(inet.groups["pc"], "v", record=True, name="biology_pc_v")
    inet.net.add(mon)
    run_inference_chunks(inet, cfg.mf_rates_hz(x), np.arange(n) + 10**6, seed)
    v = np.asarray(mon.v_[:])  # (n * n_pc, steps)
    first = int(np.ceil(cfg.readout_start_ms / cfg.dt_ms - 1e-9))
    return [v[q * conn.n_pc:(q + 1) * conn.n_pc, first:] for q in range(n)]


def measure(cfg, conn, weights, engine, x_evoked: np.ndarray, y_evoked: np.ndarray, evoked_counts: dict,
            curve: list[dict], seed: int, n_spontaneous: int = 20, n_synchrony: int = 8) -> list[dict]:
    """``biology.csv`` rows (see the module docstring) for a trained network.

    ``engine`` simulates the network (frozen noise); ``evoked_counts`` are its counts on
    ``x_evoked`` (labels ``y_evoked``); ``curve`` the learning curve with the climbing-fibre rates of
    each epoch. The Purkinje modulation is each cell's standard deviation over classes of its mean
    rate per class (so trial-to-trial noise, averaged within a class, hardly enters), averaged
    over cells.
    """
    window_s = cfg.window_ms * 1e-3
    readout_s = (cfg.window_ms - cfg.readout_start_ms) * 1e-3
    blank = np.zeros((n_spontaneous, conn.n_mf))
    spont = engine.predict(blank, slots=np.arange(n_spontaneous) + 2 * 10**6).counts
    start = engine.steady_state()
    chi = {
        "spontaneous": np.nanmean([synchrony_chi(v) for v in _pc_traces(cfg, conn, weights, start, blank[:n_synchrony], seed)]),
        "evoked": np.nanmean([synchrony_chi(v) for v in _pc_traces(cfg, conn, weights, start, x_evoked[:n_synchrony], seed)]),
    }
    values = {}
    for cond, counts in (("spontaneous", spont), ("evoked", evoked_counts)):
        for pop in ("grc", "goc", "mli", "pc"):
            values[(pop, cond, "rate_hz")] = float(np.mean(counts[pop]) / (readout_s if pop == "pc" else window_s))
        values[("grc", cond, "coding_level")] = float((np.asarray(counts["grc"]) > 0).mean())
        values[("pc", cond, "synchrony_chi")] = float(chi[cond])
    pc_counts = np.asarray(evoked_counts["pc"], dtype=np.float64)
    per_class = np.stack([pc_counts[y_evoked == c].mean(axis=0) for c in np.unique(y_evoked)])  # (classes, n_pc)
    values[("pc", "evoked", "modulation_hz")] = float(per_class.std(axis=0).mean() / readout_s)
    cf = [r for r in curve if "cf_rate_hz" in r]
    values[("cf", "training", "rate_hz")] = float(np.mean([r["cf_rate_hz"] for r in cf])) if cf else float("nan")
    values[("cf", "training", "max_rate_hz")] = float(np.max([r["cf_rate_max_hz"] for r in cf])) if cf else float("nan")
    rows = []
    for pop, cond in dict.fromkeys((p_, c_) for p_, c_, _ in values):
        row = {"population": pop, "condition": cond}
        for what in ("rate_hz", "max_rate_hz", "coding_level", "synchrony_chi", "modulation_hz"):
            row[what] = values.get((pop, cond, what), float("nan"))
        checks = [(what, *RANGES[(pop, cond, what)]) for what in ("rate_hz", "max_rate_hz", "coding_level",
                                                                  "synchrony_chi", "modulation_hz")
                  if (pop, cond, what) in RANGES]
        row["range"] = "; ".join(f"{what} in [{lo:g}, {hi:g}]" for what, lo, hi, _ in checks)
        row["ok"] = bool(all(np.isfinite(row[what]) and lo <= row[what] <= hi for what, lo, hi, _ in checks)) \
            if checks else None
        row["source"] = "; ".join(dict.fromkeys(src for *_, src in checks))
        rows.append(row)
    return rows


def rows_ok(rows: list[dict]) -> bool:
    """``biology_ok``: every checked row lies in its range."""
    return all(r["ok"] for r in rows if r["ok"] is not None)
