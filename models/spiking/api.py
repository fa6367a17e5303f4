"""The spiking cerebellum for modellers: load a trained network, present inputs, record the spikes.

A trained network is a run folder of ``cereb train --model spiking``; :func:`load_network` rebuilds
it, :func:`simulate` presents inputs (each ``repeats`` times) and returns a :class:`Recording` of
every population's spike trains, with times in ms from the start of each trial's window::

    import matplotlib.pyplot as plt
    from models.spiking.api import load_network, simulate

    net = load_network("results/spiking/<run folder>")
    x_test, y_test = net.test_set()
    rec = simulate(net, x_test[:2], labels=y_test[:2], repeats=3, record=("grc", "pc"))
    i, t_ms = rec.spikes("pc", trial=0)
    plt.plot(t_ms, i, ".k")                       # a raster, as in Brian2's examples
    print(rec.predicted, rec.rates_hz("pc").mean(axis=1))

Noise. The network's only noise is the Poisson draw of the mossy-fibre trains. ``noise="fresh"``
(default) gives every trial its own draw, from a seed derived from ``seed`` (the same call gives the
same numbers); ``noise="frozen"`` gives every trial the draw of noise slot 0 of the network's own
seed: the realisation the attack suite's frozen-noise rows attack, so repeats are identical.

The olive. With ``olive=False`` (default) the network runs as at inference: the inferior olive is
off and the climbing fibres (``cf``) are recorded silent. With ``olive=True`` the training network
runs with plasticity scaled to zero: the olive teaches towards ``labels`` as it would in training
(climbing fibres fire at ``cf_base + cf_gain (r_pc - target)``), no weight changes
(:func:`models.spiking.network.simulate_with_olive`); each trial is its own simulation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import CerebError, DataError
from models.spiking.network import Connectivity
from models.spiking.params import SpikingConfig

__all__ = ["Network", "Recording", "load_network", "simulate", "POPULATIONS"]

POPULATIONS = ("mf", "grc", "goc", "mli", "pc", "cf")


@dataclass(frozen=True)
class Network:
    """A trained spiking cerebellum: its parameters, wiring, PF-PC weights and seed.

    ``seed`` is the network's own seed (its frozen noise); ``task`` is the training run's task
    section (to load its test set); ``path`` the run folder.
    """

    cfg: SpikingConfig
    conn: Connectivity
    weights: np.ndarray
    seed: int
    task: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def n_inputs(self) -> int:
        return self.conn.n_mf

    @property
    def n_classes(self) -> int:
        return self.conn.n_classes

    @property
    def n_cells(self) -> dict[str, int]:
        """Cells per population (``cf``: one climbing fibre per Purkinje cell)."""
        c = self.conn
        return {"mf": c.n_mf, "grc": c.n_grc, "goc": c.n_goc, "mli": c.n_mli, "pc": c.n_pc, "cf": c.n_pc}

    @property
    def window_ms(self) -> float:
        return float(self.cfg.window_ms)

    def test_set(self, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The test inputs ``(n, n_inputs)`` in [0, 1] and labels of the task the network was trained on."""
        from core.config import resolve
        from tasks import TaskConfig, load_task

        over = dict(self.task)
        if data_dir:
            over["data_dir"] = data_dir
        ds = load_task(resolve(TaskConfig, over))
        if ds.n_inputs != self.n_inputs:
            raise CerebError(f"the network takes {self.n_inputs} inputs but task {ds.name} has {ds.n_inputs}")
        return ds.x_test, ds.y_test


def load_network(run_dir: str | Path) -> Network:
    """Rebuild the trained network of a completed ``cereb train --model spiking`` run folder."""
    from core.runs import load_run
    from models.spiking.train import load_checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CerebError(f"run folder {run_dir} does not exist")
    info = load_run(run_dir)
    kind = info["config"].get("model_kind")
    if kind != "spiking":
        raise CerebError(f"run {run_dir} holds model kind {kind!r}, not a spiking network")
    if info["meta"].get("status") != "completed":
        raise CerebError(f"run {run_dir} has status '{info['meta'].get('status')}', not 'completed'")
    cfg, conn, weights, seed, _ = load_checkpoint(run_dir / "checkpoint.npz")
    return Network(cfg, conn, weights, int(seed), dict(info["config"].get("task", {})), run_dir)


@dataclass
class Recording:
    """What :func:`simulate` recorded: ``n_trials = n_inputs * repeats`` trials, input-major.

    trains : population -> one ``(i, t_ms)`` pair per trial (cell index and spike time in ms from
        the start of the trial's window).
    x : ``(n_inputs, n_fibres)`` the inputs; labels : ``(n_inputs,)`` (-1 where none was given).
    trial_input, trial_repeat : ``(n_trials,)`` which input and which repeat each trial is.
    trial_noise_seed, trial_noise_slot : ``(n_trials,)`` the noise that trial drew.
    scores_hz : ``(n_trials, n_classes)`` mean Purkinje rate per class over the readout period.
    """

    trains: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    n_cells: dict[str, int]
    x: np.ndarray
    labels: np.ndarray
    trial_input: np.ndarray
    trial_repeat: np.ndarray
    trial_noise_seed: np.ndarray
    trial_noise_slot: np.ndarray
    scores_hz: np.ndarray
    window_ms: float
    readout_start_ms: float
    dt_ms: float
    noise: str
    olive: bool
    mf_rate_min_hz: float
    mf_rate_max_hz: float

    @property
    def n_trials(self) -> int:
        return len(self.trial_input)

    @property
    def populations(self) -> list[str]:
        return [p for p in POPULATIONS if p in self.trains]

    @property
    def predicted(self) -> np.ndarray:
        """``(n_trials,)`` the class with the highest score in each trial."""
        return np.argmax(self.scores_hz, axis=1) if self.scores_hz.size else np.zeros(0, np.int64)

    def spikes(self, population: str, trial: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(i, t_ms)`` of one population in one trial."""
        if population not in self.trains:
            raise CerebError(f"population {population!r} was not recorded (recorded: {', '.join(self.populations)})")
        if not 0 <= trial < self.n_trials:
            raise CerebError(f"trial {trial} out of range (0 to {self.n_trials - 1})")
        return self.trains[population][trial]

    def counts(self, population: str) -> np.ndarray:
        """``(n_trials, n_cells)`` spikes per cell and trial over the whole window."""
        n = self.n_cells[population]
        return np.stack([np.bincount(np.asarray(i, np.int64), minlength=n)[:n]
                         for i, _ in (self.spikes(population, k) for k in range(self.n_trials))])

    def rates_hz(self, population: str) -> np.ndarray:
        """``(n_trials, n_cells)`` mean rate of each cell in each trial (Hz)."""
        return self.counts(population) * (1000.0 / self.window_ms)

    def as_trials(self, condition: str | list[str] = "npy", source: np.ndarray | None = None) -> dict:
        """This recording as the trials dict of :mod:`analysis.spikes` (file layout, NWB export);
        ``condition`` names where each input came from, ``source`` its index there."""
        n_inputs = len(self.x)
        cond = [condition] * n_inputs if isinstance(condition, str) else list(condition)
        return {
            "pops": self.populations, "n": {p: self.n_cells[p] for p in self.populations}, "trains": self.trains,
            "trial_input": self.trial_input, "trial_repeat": self.trial_repeat,
            "trial_label": self.labels[self.trial_input], "trial_predicted": self.predicted,
            "trial_noise_seed": self.trial_noise_seed, "trial_noise_slot": self.trial_noise_slot,
            "input_condition": np.array(cond), "input_label": self.labels,
            "input_source": np.arange(n_inputs) if source is None else np.asarray(source, dtype=np.int64),
            "x": self.x, "scores_hz": self.scores_hz, "window_ms": self.window_ms,
            "readout_start_ms": self.readout_start_ms, "dt_ms": self.dt_ms, "n_classes": self.scores_hz.shape[1],
            "mf_rate_min_hz": self.mf_rate_min_hz, "mf_rate_max_hz": self.mf_rate_max_hz, "noise": self.noise,
            "olive": self.olive,
        }


def _check_inputs(net: Network, x, labels, olive: bool) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != net.n_inputs:
        raise DataError(f"inputs must have shape (n, {net.n_inputs}) for this network, got {x.shape}")
    if len(x) == 0:
        raise DataError("no inputs to simulate")
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise DataError(f"inputs must be finite and lie in [0, 1] (got min {np.nanmin(x):.3g}, max {np.nanmax(x):.3g})")
    if labels is None:
        if olive:
            raise CerebError("olive=True needs labels: the class the olive teaches towards for each input")
        return x, np.full(len(x), -1, dtype=np.int64)
    lab = np.broadcast_to(np.asarray(labels, dtype=np.int64), (len(x),)).copy()
    bad = lab[(lab < -1) | (lab >= net.n_classes)] if not olive else lab[(lab < 0) | (lab >= net.n_classes)]
    if bad.size:
        raise CerebError(f"label {int(bad[0])} is not a class of this network (0 to {net.n_classes - 1})")
    return x, lab


def _check_record(record) -> tuple[str, ...]:
    record = tuple(POPULATIONS if record is None else record)
    unknown = [p for p in record if p not in POPULATIONS]
    if unknown:
        raise CerebError(f"unknown population {unknown[0]!r} (known: {', '.join(POPULATIONS)})")
    if not record:
        raise CerebError("record at least one population")
    return tuple(p for p in POPULATIONS if p in record)


def simulate(net: Network, x, *, labels=None, repeats: int = 1, noise: str = "fresh",
             record: tuple[str, ...] | None = None, olive: bool = False, seed: int = 0) -> Recording:
    """Present each input ``repeats`` times and record the populations in ``record``.

    Parameters
    ----------
    net : the network (:func:`load_network`).
    x : ``(n_inputs, n_fibres)`` inputs in [0, 1] (a pixel's value sets its fibre's rate).
    labels : ``(n_inputs,)`` labels, or one for all; needed with ``olive=True`` (the class taught).
    repeats : trials per input.
    noise : ``"fresh"`` (a new mossy-fibre draw per trial, derived from ``seed``) or ``"frozen"``
        (noise slot 0 of the network's seed in every trial: identical repeats).
    record : populations (default all: ``mf``, ``grc``, ``goc``, ``mli``, ``pc``, ``cf``).
    olive : simulate with the inferior olive on and plasticity off (see the module docstring).
    seed : seed of the fresh-noise draws.
    """
    from models.spiking.engine import SpikingEngine, scores_from_counts
    from models.spiking.network import simulate_with_olive

    x, lab = _check_inputs(net, x, labels, olive)
    record = _check_record(record)
    if noise not in ("fresh", "frozen"):
        raise CerebError(f"noise must be 'fresh' or 'frozen', got {noise!r}")
    if repeats < 1:
        raise CerebError(f"repeats must be >= 1, got {repeats}")
    n_trials = len(x) * repeats
    trial_input = np.repeat(np.arange(len(x)), repeats)
    trial_repeat = np.tile(np.arange(repeats), len(x))
    xs = x[trial_input]
    readout_ms = net.cfg.window_ms - net.cfg.readout_start_ms
    on_engine = tuple(p for p in record if p != "cf")
    rng = np.random.default_rng([int(seed), 2026])
    with SpikingEngine(net.cfg, net.conn, net.weights, seed=net.seed, record=on_engine or ("pc",), workers=1,
                       chunks_per_run=1) as eng:
        if not olive:
            if noise == "frozen":
                seeds, slots = np.full(n_trials, net.seed), np.zeros(n_trials, dtype=np.int64)
            else:
                seeds, slots = np.full(n_trials, int(rng.integers(2**31))), np.arange(n_trials, dtype=np.int64)
            pred = eng.predict(xs, noise=noise, slots=slots, seed=int(seeds[0]))
            trains = {p: [(np.asarray(i, np.int32), np.asarray(t, np.float64)) for i, t in pred.spikes[p]]
                      for p in on_engine}
            if "cf" in record:  # the olive is off: its fibres are silent
                trains["cf"] = [(np.zeros(0, np.int32), np.zeros(0)) for _ in range(n_trials)]
            scores = pred.scores
        else:
            start = eng.steady_state()
            seeds = np.full(n_trials, net.seed) if noise == "frozen" else rng.integers(2**31, size=n_trials)
            slots = np.zeros(n_trials, dtype=np.int64)  # the olive network simulates one trial in slot 0
            per_trial = [simulate_with_olive(net.cfg, net.conn, net.weights, xs[k:k + 1], lab[trial_input[k:k + 1]],
                                             int(seeds[k]), start)[0] for k in range(n_trials)]
            trains = {p: [(np.asarray(tr[p][0], np.int32), np.asarray(tr[p][1], np.float64)) for tr in per_trial]
                      for p in record}
            pc_counts = np.stack([np.bincount(tr["pc"][0][tr["pc"][1] >= net.cfg.readout_start_ms],
                                              minlength=net.conn.n_pc)[:net.conn.n_pc] for tr in per_trial])
            scores = scores_from_counts(pc_counts, net.n_classes, readout_ms)
    return Recording(trains=trains, n_cells={p: net.n_cells[p] for p in record}, x=x, labels=lab,
                     trial_input=trial_input, trial_repeat=trial_repeat, trial_noise_seed=np.asarray(seeds, np.int64),
                     trial_noise_slot=np.asarray(slots, np.int64), scores_hz=np.asarray(scores, float),
                     window_ms=float(net.cfg.window_ms), readout_start_ms=float(net.cfg.readout_start_ms),
                     dt_ms=float(net.cfg.dt_ms), noise=noise, olive=bool(olive),
                     mf_rate_min_hz=float(net.cfg.mf_rate_min_hz), mf_rate_max_hz=float(net.cfg.mf_rate_max_hz))
