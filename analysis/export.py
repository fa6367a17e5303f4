"""Lab export: spike trains and adversarial mossy-fibre stimuli in forms an experimenter can use.

For each spiking attack run, ``export_run`` writes into ``<out>/<run folder name>/``:

``spikes_clean.npz``, ``spikes_adv.npz``
    The recorded spike trains of one clean input and its adversarial, per population ``pop``:
    ``<pop>_i`` (cell index), ``<pop>_t_ms`` (spike time in ms from the window start),
    ``n_<pop>`` (cells), ``window_ms``. Plain NumPy; ``numpy.load(f, allow_pickle=False)``.
``spikes.nwb``
    The same trains in the project's NWB layout (:mod:`analysis.nwb`): two trials, ``clean`` and
    ``adversarial``, one ``Units`` table per population under ``processing["cerebellum"]``, the
    mossy fibres and their rates in the stimulus section (pynwb: ``NWBHDF5IO(f, "r").read()``).
``spikes.neo.mat``
    The same trains as a Neo ``Block`` (segments ``clean`` and ``adv``, one ``SpikeTrain`` per cell
    annotated with ``population``, ``cell`` and ``condition``), written with Neo's ``NeoMatlabIO``
    (a MATLAB file, no pickle: ``neo.io.NeoMatlabIO(filename=f).read_block()`` in Python, or
    ``load`` in MATLAB), only when the optional package ``neo`` imports (``pip install neo``, or
    the project's ``lab`` extra); otherwise a logged note and no file.
``stimuli.csv``
    Mossy-fibre stimulus tables, columns ``condition, fibre, t_start_ms, t_end_ms, rate_hz``: each
    input pixel x in [0, 1] drives its fibre at ``rate_hz = mf_rate_min_hz + x (mf_rate_max_hz -
    mf_rate_min_hz)``, constant over the presentation window (the encoding of
    ``models/spiking``). Conditions: ``raster/clean`` and ``raster/adversarial`` (the input of the
    spike trains), ``image<j>/clean`` and ``image<j>/<attack>/eps<e>`` (from ``adversarials.npz``),
    ``<attack>/image<j>/clean`` and ``<attack>/image<j>/adversarial`` (the minimal adversarials
    of each decision-based attack, ``decision_<attack>.npz``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from analysis.spikes import CONDITIONS, load_spikes
from core.runs import load_npz, save_npz, write_csv

log = logging.getLogger(__name__)

__all__ = ["STIMULUS_COLUMNS", "stimulus_rows", "write_spike_npz", "write_neo", "rate_range", "export_run"]

STIMULUS_COLUMNS = ["condition", "fibre", "t_start_ms", "t_end_ms", "rate_hz"]


def stimulus_rows(x: np.ndarray, condition: str, rate_min_hz: float, rate_max_hz: float, window_ms: float,
                  t_start_ms: float = 0.0) -> list[dict]:
    """One row per mossy fibre: input ``x`` (``(n_fibres,)`` in [0, 1]) as a constant-rate stimulus."""
    x = np.clip(np.asarray(x, dtype=float).reshape(-1), 0.0, 1.0)
    rates = rate_min_hz + x * (rate_max_hz - rate_min_hz)
    return [{"condition": condition, "fibre": j, "t_start_ms": float(t_start_ms),
             "t_end_ms": float(t_start_ms + window_ms), "rate_hz": float(r)} for j, r in enumerate(rates)]


def write_spike_npz(spikes: dict, out_dir: str | Path) -> list[Path]:
    """``spikes_clean.npz`` and ``spikes_adv.npz`` (``<pop>_i``, ``<pop>_t_ms``, ``n_<pop>``, ``window_ms``)."""
    out = []
    for cond in CONDITIONS:
        arrays = {"window_ms": np.float64(spikes["window_ms"])}
        for pop in spikes["pops"]:
            i, t = spikes["trains"][cond][pop]
            arrays[f"{pop}_i"] = i.astype(np.int64)
            arrays[f"{pop}_t_ms"] = t.astype(np.float64)
            arrays[f"n_{pop}"] = np.int64(spikes["n"][pop])
        out.append(save_npz(Path(out_dir) / f"spikes_{cond}.npz", **arrays))
    return out


def write_neo(spikes: dict, path: str | Path) -> Path | None:
    """The spike trains as a Neo ``Block`` in a MATLAB file (Neo's ``NeoMatlabIO``); None when neo is missing."""
    try:
        import neo
        import quantities as pq
    except ImportError:
        log.info("the optional package neo is not installed: Neo export skipped (pip install neo)")
        return None
    window = float(spikes["window_ms"])
    block = neo.Block(name="clean and adversarial input", description="exported from a spiking attack run")
    for cond in CONDITIONS:
        seg = neo.Segment(name=cond)
        for pop in spikes["pops"]:
            i, t = spikes["trains"][cond][pop]
            order = np.lexsort((t, i))
            i, t = i[order], t[order]
            bounds = np.searchsorted(i, np.arange(spikes["n"][pop] + 1))
            for cell in range(spikes["n"][pop]):
                times = t[bounds[cell]:bounds[cell + 1]]
                seg.spiketrains.append(neo.SpikeTrain(times * pq.ms, t_start=0.0 * pq.ms, t_stop=window * pq.ms,
                                                      name=f"{pop}[{cell}]", population=pop, cell=cell,
                                                      condition=cond))
        block.segments.append(seg)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.mat")  # ends in .mat: scipy appends none
    neo.io.NeoMatlabIO(filename=str(tmp)).write_block(block)
    os.replace(tmp, path)
    return path


def rate_range(run: dict, spikes: dict | None = None) -> tuple[float, float, float] | None:
    """``(mf_rate_min_hz, mf_rate_max_hz, window_ms)`` of a spiking attack run, or None if unknown.

    Taken from ``spikes.npz`` when given, else from the attacked training run's ``model`` section.
    """
    if spikes is not None and "mf_rate_min_hz" in spikes and "mf_rate_max_hz" in spikes:
        return float(spikes["mf_rate_min_hz"]), float(spikes["mf_rate_max_hz"]), float(spikes["window_ms"])
    model = ((run.get("train") or {}).get("config") or {}).get("model") or {}
    keys = ("mf_rate_min_hz", "mf_rate_max_hz", "window_ms")
    if all(k in model for k in keys):
        return tuple(float(model[k]) for k in keys)  # type: ignore[return-value]
    return None


def _nearest(values: np.ndarray, target: float, tol: float = 1e-6) -> int | None:
    if values.size == 0:
        return None
    j = int(np.argmin(np.abs(values - target)))
    return j if abs(values[j] - target) <= tol else None


def _adversarial_stimuli(path: Path, rr: tuple[float, float, float], eps_list: Iterable[float]) -> list[dict]:
    data = load_npz(path)
    rows = []
    for j, x in enumerate(data["x_clean"]):
        rows += stimulus_rows(x, f"image{j}/clean", *rr)
    for key in sorted(k for k in data if k.endswith(".x_adv")):
        name = key[: -len(".x_adv")]
        eps = data.get(f"{name}.eps", np.zeros(0))
        for e in eps_list:
            k = _nearest(np.asarray(eps, dtype=float), e)
            if k is None:
                continue
            for j, x in enumerate(data[key][k]):
                rows += stimulus_rows(x, f"image{j}/{name}/eps{e:g}", *rr)
    return rows


def _decision_stimuli(path: Path, rr: tuple[float, float, float]) -> list[dict]:
    data = load_npz(path)
    attack = path.stem[len("decision_"):]
    rows = []
    success = np.asarray(data.get("success", np.ones(len(data["x_adv"]), dtype=bool)), dtype=bool)
    if "pred_clean" in data and "y" in data:  # an image misclassified clean was never attacked
        success = success & (np.asarray(data["pred_clean"]) == np.asarray(data["y"]))
    for j, (xc, xa) in enumerate(zip(data["x_clean"], data["x_adv"])):
        if not bool(success[j]):
            continue
        rows += stimulus_rows(xc, f"{attack}/image{j}/clean", *rr)
        rows += stimulus_rows(xa, f"{attack}/image{j}/adversarial", *rr)
    return rows


def export_run(run: dict, out_dir: str | Path, eps_list: Iterable[float] = (0.1,)) -> list[Path]:
    """Export one spiking attack run (``load_run`` dict with ``"train"``) into ``out_dir``; the files written."""
    path = Path(run["path"])
    out_dir = Path(out_dir)
    written: list[Path] = []
    spikes = load_spikes(path / "spikes.npz") if (path / "spikes.npz").is_file() else None
    rows: list[dict] = []
    if spikes is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        written += write_spike_npz(spikes, out_dir)
        from analysis.nwb import write_nwb
        from analysis.spikes import conditions_as_trials

        written.append(write_nwb(out_dir / "spikes.nwb", conditions_as_trials(spikes), identifier=f"{path.name}-export",
                                 session_description=f"clean input and its adversarial from attack run {path.name} "
                                                     "(the same frozen noise in both trials)",
                                 source="cereb report"))
        neo_file = write_neo(spikes, out_dir / "spikes.neo.mat")
        if neo_file is not None:
            written.append(neo_file)
    rr = rate_range(run, spikes)
    if rr is None:
        log.info("%s: mossy-fibre rate range unknown; no stimulus table", path)
    else:
        if spikes is not None:
            rows += stimulus_rows(spikes["x_clean"], "raster/clean", *rr)
            rows += stimulus_rows(spikes["x_adv"], "raster/adversarial", *rr)
        if (path / "adversarials.npz").is_file():
            rows += _adversarial_stimuli(path / "adversarials.npz", rr, eps_list)
        for f in sorted(path.glob("decision_*.npz")):
            rows += _decision_stimuli(f, rr)
    if rows:
        written.append(write_csv(out_dir / "stimuli.csv", rows, STIMULUS_COLUMNS))
    return written
