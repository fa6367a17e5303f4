"""The project's NWB layout: simulated spike trains as Neurodata Without Borders files (pynwb).

One NWB file holds the trials of one simulation (``cereb simulate``) or one lab export
(``cereb report``), laid out as follows.

Time
    Trials follow one another on the session clock: trial ``k`` spans
    ``[k * window_s, (k + 1) * window_s)``; every trial starts from the network's steady state, so
    the back-to-back layout is a convention of the file, not a continuous simulation. A spike at
    ``t_ms`` from the start of trial ``k`` is stored at ``k * window_s + t_ms / 1000`` seconds.
``trials``
    One row per trial: ``start_time``, ``stop_time``, ``input_index`` (row of the stimulus table),
    ``repeat``, ``condition`` (``test``, ``npy``, ``clean``, ``adversarial``), ``label`` (-1 if none),
    ``predicted`` (argmax of the Purkinje class rates), ``noise_seed`` and ``noise_slot``.
Responses: ``processing["cerebellum"]``
    One ``Units`` table per recorded population, named by its short name (``grc`` granule cells,
    ``goc`` Golgi cells, ``mli`` molecular-layer interneurons, ``pc`` Purkinje cells, ``cf``
    climbing fibres), one unit per cell with columns ``cell`` (index in the population) and, for
    ``pc`` and ``cf``, ``pc_class`` (the class whose score the cell carries).
Stimulation protocol (spike-domain attacks): ``stimulus["mf_inserted"]`` and ``intervals["mf_silenced"]``
    The spikes delivered to each fibre (a ``Units`` table, one unit per fibre) and the intervals in
    which a fibre was silenced (``fibre``, ``trial``), on the same session clock; the ``mf`` units
    then hold what the fibres fired with the edits applied.
Stimulus: ``stimulus``
    ``mf`` (a ``Units`` table: the mossy-fibre spike trains, when recorded) and ``mf_rate`` (a
    ``TimeSeries`` in Hz, shape ``(n_trials, n_fibres)``, one sample at each trial's start: the
    constant rate that drives each fibre during the trial, ``mf_rate_min_hz + x (mf_rate_max_hz -
    mf_rate_min_hz)``).

:func:`write_nwb` writes the file atomically, :func:`read_nwb` reads it back into the trials dict
of :mod:`analysis.spikes`, and :func:`validate_nwb` runs pynwb's own schema validator.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np

from core.errors import DataError

__all__ = ["write_nwb", "read_nwb", "validate_nwb", "RESPONSE_MODULE", "POPULATION_DESCRIPTIONS"]

RESPONSE_MODULE = "cerebellum"
POPULATION_DESCRIPTIONS = {
    "mf": "mossy fibres (the input: Poisson trains at the rate that encodes each pixel)",
    "grc": "granule cells", "goc": "Golgi cells", "mli": "molecular-layer interneurons (stellate/basket)",
    "pc": "Purkinje cells (simple spikes)",
    "mf_inserted": "spikes delivered to mossy fibres on top of their own firing (stimulation protocol)", "cf": "climbing fibres (inferior olive; complex spikes of the Purkinje cells)",
}


def _units(name: str, trains: list, n_cells: int, window_s: float, n_classes: int):
    from pynwb.misc import Units

    units = Units(name=name, description=POPULATION_DESCRIPTIONS.get(name, name))
    units.add_column("cell", "index of the cell in its population")
    has_class = name in ("pc", "cf") and n_classes > 0 and n_cells % n_classes == 0
    if has_class:
        units.add_column("pc_class", "class whose score this Purkinje cell (or its climbing fibre) carries")
    cell = np.concatenate([np.zeros(0, np.int64)] + [np.asarray(i, np.int64) for i, _ in trains])
    time_s = np.concatenate([np.zeros(0)] + [k * window_s + np.asarray(t, float) / 1000.0 for k, (_, t) in enumerate(trains)])
    order = np.lexsort((time_s, cell))
    cell, time_s = cell[order], time_s[order]
    bounds = np.searchsorted(cell, np.arange(n_cells + 1))
    per_class = n_cells // n_classes if has_class else 0
    for c in range(n_cells):
        extra = {"pc_class": c // per_class} if has_class else {}
        units.add_unit(spike_times=time_s[bounds[c]:bounds[c + 1]], cell=c, **extra)
    return units


def _add_stimulation(nwb, stimulation: list, n_fibres: int, window_s: float) -> None:
    """The experimenter's edits (``attack.domain=spikes``): ``stimulus["mf_inserted"]`` (a ``Units``
    table, one unit per fibre: the spikes delivered) and ``intervals["mf_silenced"]`` (one row per
    silenced interval, with its ``fibre``), on the session clock of the trials they belong to."""
    from pynwb.epoch import TimeIntervals

    trains = [(np.zeros(0, np.int64), np.zeros(0)) if st is None else st["inserted"] for st in stimulation]
    units = _units("mf_inserted", trains=trains, n_cells=n_fibres, window_s=window_s, n_classes=0)
    nwb.add_stimulus(units)
    if not any(st is not None and len(st["silenced"][0]) for st in stimulation):
        return  # no silenced interval: no table (an empty one cannot be typed)
    table = TimeIntervals(name="mf_silenced", description="intervals in which a mossy fibre was silenced "
                                                          "(stimulation protocol)")
    table.add_column("fibre", "index of the silenced mossy fibre")
    table.add_column("trial", "trial the interval belongs to")
    for k, st in enumerate(stimulation):
        if st is None:
            continue
        for f, a, b in zip(*st["silenced"]):
            table.add_row(start_time=k * window_s + float(a) / 1000.0, stop_time=k * window_s + float(b) / 1000.0,
                          fibre=int(f), trial=k)
    nwb.add_time_intervals(table)


def write_nwb(path: str | Path, trials: dict, *, identifier: str, session_description: str,
              session_start: _dt.datetime | None = None, source: str = "") -> Path:
    """Write a trials dict (:func:`analysis.spikes.load_trial_spikes`) as an NWB file at ``path``.

    ``identifier`` should be unique (the run folder's name); ``session_start`` defaults to now (UTC).
    """
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    window_s = float(trials["window_ms"]) / 1000.0
    n_trials = len(trials["trial_input"])
    start = session_start or _dt.datetime.now(_dt.timezone.utc)
    if start.tzinfo is None:
        start = start.replace(tzinfo=_dt.timezone.utc)
    nwb = NWBFile(session_description=session_description, identifier=identifier, session_start_time=start,
                  source_script=source or None, source_script_file_name="cereb" if source else None,
                  notes=f"noise={trials.get('noise')}, olive={trials.get('olive')}, dt_ms={trials.get('dt_ms')}, "
                        f"readout_start_ms={trials.get('readout_start_ms')}")
    for col, desc in (("input_index", "row of the stimulus table (mf_rate) presented"), ("repeat", "repeat of the input"),
                      ("condition", "where the input came from"), ("label", "label of the input (-1: none)"),
                      ("predicted", "class with the highest mean Purkinje rate in the readout period"),
                      ("noise_seed", "seed of the network's noise"), ("noise_slot", "noise slot of the trial")):
        nwb.add_trial_column(col, desc)
    for k in range(n_trials):
        q = int(trials["trial_input"][k])
        nwb.add_trial(start_time=k * window_s, stop_time=(k + 1) * window_s, input_index=q,
                      repeat=int(trials["trial_repeat"][k]), condition=str(trials["input_condition"][q]),
                      label=int(trials["trial_label"][k]), predicted=int(trials["trial_predicted"][k]),
                      noise_seed=int(trials["trial_noise_seed"][k]), noise_slot=int(trials["trial_noise_slot"][k]))
    n_classes = int(trials.get("n_classes") or 0)
    module = nwb.create_processing_module(RESPONSE_MODULE, "spike trains of the simulated cerebellum, one Units "
                                                           "table per population")
    for pop in trials["pops"]:
        units = _units(pop, trains=trials["trains"][pop], n_cells=int(trials["n"][pop]), window_s=window_s,
                       n_classes=n_classes)
        if pop == "mf":
            nwb.add_stimulus(units)
        else:
            module.add(units)
    if trials.get("stimulation") is not None:
        _add_stimulation(nwb, trials["stimulation"], int(trials["n"].get("mf", 0)), window_s)
    x = np.asarray(trials["x"], dtype=np.float64)
    lo, hi = float(trials.get("mf_rate_min_hz", np.nan)), float(trials.get("mf_rate_max_hz", np.nan))
    if np.isfinite(lo) and np.isfinite(hi) and n_trials:
        rates = lo + x[np.asarray(trials["trial_input"], dtype=np.int64)] * (hi - lo)
        nwb.add_stimulus(TimeSeries(name="mf_rate", data=rates, unit="Hz",
                                    timestamps=np.arange(n_trials) * window_s,
                                    description="rate of each mossy fibre, constant over the trial's window"))
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.nwb")
    try:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_nwb(path: str | Path) -> dict:
    """Read an NWB file in this layout back into a trials dict (``pops``, ``n``, ``trains`` and the
    per-trial arrays; spike times in ms from each trial's start)."""
    from pynwb import NWBHDF5IO

    path = Path(path)
    if not path.is_file():
        raise DataError(f"NWB file {path} does not exist")
    try:
        io = NWBHDF5IO(str(path), "r")
        nwb = io.read()
    except Exception as exc:  # h5py / hdmf raise many types for a corrupt file
        raise DataError(f"{path} is not a readable NWB file: {type(exc).__name__}: {exc}") from None
    try:
        trials = nwb.trials
        if trials is None or RESPONSE_MODULE not in nwb.processing:
            raise DataError(f"{path} is an NWB file but not in this project's layout (no trials or no "
                            f"processing['{RESPONSE_MODULE}'])")
        starts = np.asarray(trials["start_time"][:], dtype=float)
        stops = np.asarray(trials["stop_time"][:], dtype=float)
        out: dict = {"pops": [], "n": {}, "trains": {},
                     "trial_input": np.asarray(trials["input_index"][:], dtype=np.int64),
                     "trial_repeat": np.asarray(trials["repeat"][:], dtype=np.int64),
                     "trial_label": np.asarray(trials["label"][:], dtype=np.int64),
                     "trial_predicted": np.asarray(trials["predicted"][:], dtype=np.int64),
                     "trial_noise_seed": np.asarray(trials["noise_seed"][:], dtype=np.int64),
                     "trial_noise_slot": np.asarray(trials["noise_slot"][:], dtype=np.int64),
                     "trial_condition": np.asarray(trials["condition"][:]).astype(str),
                     "window_ms": float(stops[0] - starts[0]) * 1000.0 if len(starts) else float("nan")}
        tables = dict(nwb.processing[RESPONSE_MODULE].data_interfaces)
        if "mf" in nwb.stimulus:
            tables["mf"] = nwb.stimulus["mf"]
        from analysis.spikes import POPULATIONS

        for pop in [p for p in POPULATIONS if p in tables]:
            table = tables[pop]
            cells = np.asarray(table["cell"][:], dtype=np.int64)
            times = [np.asarray(table["spike_times"][u], dtype=float) for u in range(len(table))]
            per_trial = []
            for start, stop in zip(starts, stops):
                i = np.concatenate([np.zeros(0, np.int64)] + [np.full(((tt >= start) & (tt < stop)).sum(), c)
                                                              for c, tt in zip(cells, times)])
                t = np.concatenate([np.zeros(0)] + [(tt[(tt >= start) & (tt < stop)] - start) * 1000.0 for tt in times])
                order = np.argsort(t, kind="stable")
                per_trial.append((i[order], t[order]))
            out["pops"].append(pop)
            out["n"][pop] = len(table)
            out["trains"][pop] = per_trial
        if "mf_rate" in nwb.stimulus:
            out["mf_rate_hz"] = np.asarray(nwb.stimulus["mf_rate"].data[:], dtype=float)
        if "mf_inserted" in nwb.stimulus:  # a stimulation protocol: per trial its inserted and silenced edits
            table = nwb.stimulus["mf_inserted"]
            times = [np.asarray(table["spike_times"][u], dtype=float) for u in range(len(table))]
            cells = np.asarray(table["cell"][:], dtype=np.int64)
            sil = nwb.intervals["mf_silenced"] if "mf_silenced" in nwb.intervals else None
            s_trial = np.asarray(sil["trial"][:], dtype=np.int64) if sil is not None and len(sil) else np.zeros(0, int)
            stim = []
            for k, (start, stop) in enumerate(zip(starts, stops)):
                f = np.concatenate([np.zeros(0, np.int64)] + [np.full(((tt >= start) & (tt < stop)).sum(), c)
                                                              for c, tt in zip(cells, times)])
                t = np.concatenate([np.zeros(0)] + [(tt[(tt >= start) & (tt < stop)] - start) * 1000.0 for tt in times])
                order = np.lexsort((f, t))
                rows = np.flatnonzero(s_trial == k)
                sf = np.asarray(sil["fibre"][:], dtype=np.int64)[rows] if len(rows) else np.zeros(0, np.int64)
                sa = (np.asarray(sil["start_time"][:], dtype=float)[rows] - start) * 1000.0 if len(rows) else np.zeros(0)
                sb = (np.asarray(sil["stop_time"][:], dtype=float)[rows] - start) * 1000.0 if len(rows) else np.zeros(0)
                stim.append({"inserted": (f[order], t[order]), "silenced": (sf, sa, sb)})
            out["stimulation"] = stim
        return out
    finally:
        io.close()


def validate_nwb(path: str | Path) -> list[str]:
    """pynwb's schema validation of the file: a list of problems (empty when the file is valid)."""
    from pynwb import validate

    errors = validate(path=str(path))
    if isinstance(errors, tuple):  # older pynwb returned (errors, status)
        errors = errors[0]
    return [str(e) for e in errors]
