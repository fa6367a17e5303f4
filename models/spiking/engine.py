"""Batched inference: many inputs simulated at once as independent copies of a trained network.

``SpikingEngine.predict(x)`` splits ``x`` into chunks of ``batch_size``, runs each chunk in one
Brian2 network of ``batch_size`` copies (built and compiled once, then reused: only the
mossy-fibre rates, the noise seed and the membrane state are reset per call) and returns class
scores and spike counts per population. With ``workers > 1`` the chunks are shared among
worker processes, each holding its own built network.

Noise modes: ``frozen`` — the mossy-fibre noise of query ``n`` is a fixed function of
``(seed, slot[n])`` with ``slot`` defaulting to the query's index in the call, so the network is
a deterministic function of its input; ``fresh`` — a new noise seed on every call.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from models.spiking.network import Connectivity, pc_class
from models.spiking.params import SpikingConfig

log = logging.getLogger(__name__)

POPULATIONS = ("mf", "grc", "goc", "pc")

__all__ = ["Prediction", "SpikingEngine", "scores_from_counts"]


@dataclass
class Prediction:
    """Output of :meth:`SpikingEngine.predict` for ``n`` queries.

    scores : ``(n, n_classes)`` mean Purkinje rate per class (Hz); higher = more evidence.
    counts : population -> ``(n, n_cells)`` spike counts over the window.
    spikes : population -> list of ``(i, t_ms)`` arrays per query (only when recorded).
    """

    scores: np.ndarray
    counts: dict[str, np.ndarray]
    spikes: dict[str, list] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1)


def scores_from_counts(pc_counts: np.ndarray, n_classes: int, window_ms: float) -> np.ndarray:
    """Class scores ``(n, n_classes)``: mean Purkinje spike count per class over the window, in Hz."""
    n = pc_counts.shape[0]
    return pc_counts.reshape(n, n_classes, -1).mean(axis=2) * (1000.0 / window_ms)


class _Runner:
    """One built network of ``copies`` copies; runs chunks of at most ``copies`` queries."""

    def __init__(self, cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, copies: int, dt_ms: float,
                 window_ms: float, record: tuple[str, ...] = ()):
        from models.spiking.brian import get_brian2
        from models.spiking.network import build_inference_net

        self.b2 = get_brian2()
        self.cfg, self.conn, self.copies, self.window_ms, self.dt_ms = cfg, conn, copies, window_ms, dt_ms
        self.inet = build_inference_net(cfg, conn, weights, copies, dt_ms, record=tuple(record))
        self._rest = {"grc": cfg.grc_v_rest_mv * 1e-3, "goc": cfg.goc_v_rest_mv * 1e-3, "pc": cfg.pc_v_rest_mv * 1e-3}
        self._sizes = {"mf": conn.n_mf, "grc": conn.n_grc, "goc": conn.n_goc, "pc": conn.n_pc}

    def set_weights(self, weights: np.ndarray) -> None:
        from models.spiking.network import set_inference_weights

        set_inference_weights(self.inet.pf_pc, self.cfg, weights, self.copies)

    def run(self, rates_hz: np.ndarray, slots: np.ndarray, noise_seed: int) -> tuple[dict, dict]:
        """Simulate ``len(rates_hz) <= copies`` queries; returns (counts, spikes)."""
        b2, inet, n = self.b2, self.inet, len(rates_hz)
        full = np.zeros((self.copies, self.conn.n_mf))
        full[:n] = rates_hz
        slot_full = np.zeros(self.copies, dtype=np.int64)
        slot_full[:n] = slots
        inet.mf.rate_[:] = full.ravel()
        inet.mf.slot_[:] = np.repeat(slot_full, self.conn.n_mf)
        inet.mf.noise_seed_[:] = int(noise_seed) % (2**31)
        inet.mf.t_call_[:] = float(inet.net.t_)
        inet.grc.v_[:] = self._rest["grc"]
        inet.grc.g_inh_[:] = 0.0
        inet.goc.v_[:] = self._rest["goc"]
        inet.pc.v_[:] = self._rest["pc"]
        before = {k: np.array(m.count[:]) for k, m in inet.counters.items()}
        nspk = {k: len(m.i) for k, m in inet.recorders.items()}
        t0 = float(inet.net.t_)
        inet.net.run(self.window_ms * b2.ms)
        counts = {}
        for k, m in inet.counters.items():
            c = np.array(m.count[:]) - before[k]
            counts[k] = c.reshape(self.copies, self._sizes[k])[:n]
        spikes = {}
        for k, m in inet.recorders.items():
            i = np.asarray(m.i[:])[nspk[k]:]
            t = (np.asarray(m.t_[:])[nspk[k]:] - t0) * 1000.0
            size = self._sizes[k]
            copy = i // size
            spikes[k] = [(i[copy == q] - q * size, t[copy == q]) for q in range(n)]
        return counts, spikes


# ----------------------------------------------------------------------------- worker processes
_WORKER: _Runner | None = None


def _worker_init(cfg_dict, conn_arrays, weights, copies, dt_ms, window_ms, record):
    global _WORKER
    logging.getLogger("brian2").setLevel(logging.WARNING)
    _WORKER = _Runner(SpikingConfig(**cfg_dict), Connectivity.from_arrays(conn_arrays), weights, copies, dt_ms,
                      window_ms, record)


def _worker_run(rates, slots, seed):
    return _WORKER.run(rates, slots, seed)


def _worker_set_weights(weights):
    _WORKER.set_weights(weights)
    return True


class SpikingEngine:
    """Evaluate a trained spiking cerebellum on many inputs at once.

    Parameters
    ----------
    cfg, conn, weights : the network (``weights`` is ``(n_grc, n_pc)``).
    window_ms, dt_ms : presentation window and simulation step.
    batch_size : copies per simulated network.
    workers : processes; each builds its own network once.
    noise : ``"frozen"`` or ``"fresh"`` (default of :meth:`predict`).
    seed : the frozen-noise seed, and the seed of the fresh-noise seed sequence.
    record : populations whose spike trains are kept (for rasters), e.g. ``("grc", "pc")``.
    """

    def __init__(self, cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, *, window_ms: float = 100.0,
                 dt_ms: float = 0.1, batch_size: int = 100, workers: int = 1, noise: str = "frozen", seed: int = 0,
                 record: tuple[str, ...] = ()):
        if noise not in ("frozen", "fresh"):
            raise ValueError(f"noise must be 'frozen' or 'fresh', got {noise!r}")
        unknown = set(record) - set(POPULATIONS)
        if unknown:
            raise ValueError(f"cannot record {sorted(unknown)}; populations are {POPULATIONS}")
        self.cfg, self.conn = cfg, conn
        self.window_ms, self.dt_ms = float(window_ms), float(dt_ms)
        self.batch_size, self.workers = int(batch_size), int(workers)
        self.noise, self.seed, self.record = noise, int(seed), tuple(record)
        self._fresh_rng = np.random.default_rng([int(seed), 7])
        self.n_queries = 0
        self.n_calls = 0
        self._weights = np.array(weights, dtype=np.float64)
        self._local: _Runner | None = None
        self._pool: ProcessPoolExecutor | None = None

    @property
    def n_classes(self) -> int:
        return self.conn.n_classes

    @property
    def n_inputs(self) -> int:
        return self.conn.n_mf

    # -- lifecycle
    def _ensure(self):
        if self.workers == 1:
            if self._local is None:
                self._local = _Runner(self.cfg, self.conn, self._weights, self.batch_size, self.dt_ms, self.window_ms, self.record)
        elif self._pool is None:
            from dataclasses import asdict

            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                initargs=(asdict(self.cfg), self.conn.to_arrays(), self._weights, self.batch_size, self.dt_ms,
                          self.window_ms, self.record))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def set_weights(self, weights: np.ndarray) -> None:
        """Replace the PF-PC weights ``(n_grc, n_pc)`` without rebuilding."""
        self._weights = np.array(weights, dtype=np.float64)
        if self._local is not None:
            self._local.set_weights(self._weights)
        if self._pool is not None:  # simplest correct route: restart the workers with the new weights
            self.close()

    # -- queries
    def rates_hz(self, x: np.ndarray) -> np.ndarray:
        """Mossy-fibre rates ``(n, n_mf)`` for inputs ``x`` in [0, 1]."""
        return self.cfg.mf_rate_min_hz + x * (self.cfg.mf_rate_max_hz - self.cfg.mf_rate_min_hz)

    def predict(self, x: np.ndarray, *, noise: str | None = None, slots: np.ndarray | None = None,
                seed: int | None = None, progress=None) -> Prediction:
        """Scores and spike counts for inputs ``x`` ``(n, n_inputs)`` in [0, 1].

        ``slots`` (default ``arange(n)``) pins each query's frozen noise; ``seed`` overrides the
        noise seed of this call. ``progress`` is an optional callable taking the number of
        queries finished.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"inputs must have shape (n, {self.n_inputs}), got {x.shape}")
        if not np.all(np.isfinite(x)) or x.min(initial=0) < 0 or x.max(initial=0) > 1:
            raise ValueError("inputs must be finite and lie in [0, 1]")
        n = len(x)
        slots = np.arange(n) if slots is None else np.asarray(slots, dtype=np.int64)
        if slots.shape != (n,):
            raise ValueError(f"slots must have shape ({n},), got {slots.shape}")
        mode = noise or self.noise
        if seed is None:
            seed = self.seed if mode == "frozen" else int(self._fresh_rng.integers(2**31))
        self._ensure()
        rates = self.rates_hz(x)
        chunks = [slice(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]
        results = [None] * len(chunks)
        if self._pool is None:
            for c, sl in enumerate(chunks):
                results[c] = self._local.run(rates[sl], slots[sl], seed)
                if progress:
                    progress(sl.stop - sl.start)
        else:
            futs = [self._pool.submit(_worker_run, rates[sl], slots[sl], seed) for sl in chunks]
            for c, f in enumerate(futs):
                results[c] = f.result()
                if progress:
                    progress(chunks[c].stop - chunks[c].start)
        counts = {k: np.concatenate([r[0][k] for r in results]) if results else np.zeros((0, 0), int) for k in POPULATIONS}
        spikes = {k: sum((r[1][k] for r in results), []) for k in self.record}
        self.n_queries += n
        self.n_calls += 1
        scores = scores_from_counts(counts["pc"], self.n_classes, self.window_ms)
        return Prediction(scores=scores, counts=counts, spikes=spikes)
