"""Batched inference: many inputs simulated at once as independent copies of a trained network.

``SpikingEngine.predict(x)`` splits ``x`` into chunks of ``batch_size`` queries and simulates
them in a Brian2 network of ``batch_size`` independent copies of the trained network, built and
compiled once and then reused: up to ``chunks_per_run`` chunks run back to back in one Brian2
``run`` (every chunk starts from the network's steady state), so the per-run set-up is paid once per
``batch_size * chunks_per_run`` queries. A request shorter than ``batch_size`` runs on a smaller
network of the same process (the next power of two from 8 copies up, built on first use from the
same compiled code), so a short call does not simulate idle copies. It returns class scores and
spike counts of the granule, Golgi, interneuron and Purkinje populations. With ``workers > 1`` the queries
are split among worker processes, each holding its own networks.

Noise modes: ``frozen`` — the mossy-fibre noise of query ``n`` is a fixed function of
``(seed, slot[n])`` with ``slot`` defaulting to the query's index in the call, so the network is
a deterministic function of its input; ``fresh`` — a new noise seed on every call.
"""
from __future__ import annotations

import gc
import logging
import multiprocessing as mp
from dataclasses import dataclass, field

import numpy as np

from models.spiking.network import Connectivity
from models.spiking.params import EngineConfig, SpikingConfig

log = logging.getLogger(__name__)

POPULATIONS = ("mf", "grc", "goc", "mli", "pc")  # "mf" can be recorded; counts cover the others

__all__ = ["Prediction", "SpikingEngine", "scores_from_counts"]


@dataclass
class Prediction:
    """Output of :meth:`SpikingEngine.predict` for ``n`` queries.

    scores : ``(n, n_classes)`` mean Purkinje rate per class (Hz) over the readout period; higher =
        more evidence.
    counts : population -> ``(n, n_cells)`` spike counts (Purkinje: over the readout period from
        ``model.readout_start_ms``; granule, Golgi cells and interneurons: over the whole window).
    spikes : population -> list of ``(i, t_ms)`` arrays per query (only when recorded).
    """

    scores: np.ndarray
    counts: dict[str, np.ndarray]
    spikes: dict[str, list] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1)


def scores_from_counts(pc_counts: np.ndarray, n_classes: int, readout_ms: float) -> np.ndarray:
    """Class scores ``(n, n_classes)``: mean Purkinje rate per class (Hz) over the readout period
    (``model.readout_start_ms`` to the end of the window, ``readout_ms`` long)."""
    n = pc_counts.shape[0]
    return pc_counts.reshape(n, n_classes, -1).mean(axis=2) * (1000.0 / readout_ms)


class _Runner:
    """One built network of ``copies`` copies; one ``run`` simulates up to ``copies * max_chunks`` queries."""

    def __init__(self, cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, copies: int, dt_ms: float,
                 window_ms: float, max_chunks: int, record: tuple[str, ...] = (), start: dict | None = None,
                 reference: bool = False):
        from models.spiking.network import build_inference_net

        self.inet = build_inference_net(cfg, conn, weights, copies, dt_ms, window_ms, max_chunks, record=tuple(record),
                                        start=start, reference=reference)
        self.capacity = copies * max_chunks
        # Brian2 calls gc.collect() on every run(); freezing the objects that exist now keeps
        # that collection from walking the whole heap (0.3 s per call measured without it).
        gc.freeze()

    def set_weights(self, weights: np.ndarray) -> None:
        from models.spiking.network import set_inference_weights

        set_inference_weights(self.inet, weights)

    def set_mf_grc_weights(self, w_mv: np.ndarray) -> None:
        from models.spiking.network import set_mf_grc_weights

        set_mf_grc_weights(self.inet, w_mv)

    def set_mli_pc_weights(self, w: np.ndarray) -> None:
        from models.spiking.network import set_mli_pc_weights

        set_mli_pc_weights(self.inet, w)

    def set_start(self, state: dict) -> None:
        from models.spiking.network import set_start_state

        set_start_state(self.inet, state)

    def run(self, rates_hz: np.ndarray, slots: np.ndarray, noise_seed: int) -> tuple[dict, dict]:
        from models.spiking.network import run_inference_chunks

        return run_inference_chunks(self.inet, rates_hz, slots, noise_seed)


MIN_COPIES = 8  # smallest network a process builds for a short request


def copies_for(n: int, batch_size: int) -> int:
    """Copies of the network that simulate a request of ``n`` queries: ``batch_size`` (in chunks of
    ``batch_size``) when ``n >= batch_size``, else the smallest power of two from ``MIN_COPIES`` up
    that holds all ``n`` in one chunk (capped at ``batch_size``), so that a short request does not
    pay for ``batch_size`` copies and at most ``log2(batch_size / MIN_COPIES) + 2`` sizes are built."""
    if n >= batch_size:
        return batch_size
    c = MIN_COPIES
    while c < n:
        c *= 2
    return min(c, batch_size)


class _Runners:
    """The networks of one process, built on demand, one per size :func:`copies_for` picks (the
    compiled code is shared: sizes are not part of it). Queries never depend on the size that
    simulates them (frozen noise is a function of input, slot and seed), and every network starts
    each presentation from the same steady state, computed once on the smallest network."""

    def __init__(self, cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, batch_size: int, dt_ms: float,
                 window_ms: float, max_chunks: int, record: tuple[str, ...] = (), seed: int = 0,
                 reference: bool = False):
        self.cfg, self.conn, self.weights = cfg, conn, np.array(weights, dtype=np.float64)
        self.reference = bool(reference)
        self.batch_size, self.dt_ms, self.window_ms, self.max_chunks = batch_size, dt_ms, window_ms, max_chunks
        self.record, self.seed = tuple(record), int(seed)
        self.mf_grc_w = np.array(conn.mf_grc_w_mv, dtype=np.float64)
        self.nets: dict[int, _Runner] = {}
        self.start: dict | None = None

    def _build(self, copies: int) -> _Runner:
        r = _Runner(self.cfg, self.conn, self.weights, copies, self.dt_ms, self.window_ms,
                    self.max_chunks if copies == self.batch_size else 1, self.record, self.start, self.reference)
        r.set_mf_grc_weights(self.mf_grc_w)
        return r

    def steady_state(self) -> dict:
        """The start state of every presentation (computed on first use, after any weight change)."""
        if self.start is None:
            from models.spiking.network import steady_state

            small = min(MIN_COPIES, self.batch_size)
            if small not in self.nets:
                self.nets[small] = self._build(small)
            self.start = steady_state(self.nets[small].inet, self.seed)
            for runner in self.nets.values():
                runner.set_start(self.start)
        return self.start

    def get(self, copies: int) -> _Runner:
        start = self.steady_state()
        if copies not in self.nets:
            self.nets[copies] = self._build(copies)
        self.nets[copies].set_start(start)
        return self.nets[copies]

    def set_weights(self, weights: np.ndarray) -> None:
        self.weights = np.array(weights, dtype=np.float64)
        for runner in self.nets.values():
            runner.set_weights(self.weights)
        self.start = None

    def set_mf_grc_weights(self, w_mv: np.ndarray) -> None:
        self.mf_grc_w = np.array(w_mv, dtype=np.float64)
        for runner in self.nets.values():
            runner.set_mf_grc_weights(self.mf_grc_w)
        self.start = None

    def set_mli_pc_weights(self, w: np.ndarray) -> None:
        from dataclasses import replace

        self.conn = replace(self.conn, mli_pc_w=np.array(w, dtype=np.float64))
        for runner in self.nets.values():
            runner.set_mli_pc_weights(self.conn.mli_pc_w)
        self.start = None

    def run_all(self, rates, slots, seed):
        """Run ``len(rates)`` queries: one chunk on a small network, or runs of at most
        ``batch_size * max_chunks`` on the largest."""
        runner = self.get(copies_for(len(rates), self.batch_size))
        parts = [runner.run(rates[s:s + runner.capacity], slots[s:s + runner.capacity], seed)
                 for s in range(0, len(rates), runner.capacity)]
        return _merge(parts)


# ----------------------------------------------------------------------------- worker processes
def _worker_main(conn_pipe, init_args):
    """Worker process: build one network, then answer requests until told to stop."""
    import traceback

    try:
        cfg_dict, conn_arrays, weights, copies, dt_ms, window_ms, max_chunks, record, seed, reference = init_args
        runners = _Runners(SpikingConfig(**cfg_dict), Connectivity.from_arrays(conn_arrays), weights, copies, dt_ms,
                           window_ms, max_chunks, record, seed, reference)
        runners.get(copies)  # the largest network now, so that a build failure shows at start
        conn_pipe.send(("ready", None))
    except BaseException:
        conn_pipe.send(("error", traceback.format_exc()))
        return
    while True:
        msg = conn_pipe.recv()
        try:
            if msg[0] == "stop":
                return
            if msg[0] == "weights":
                runners.set_weights(msg[1])
                conn_pipe.send(("ok", None))
            elif msg[0] == "mf_grc":
                runners.set_mf_grc_weights(msg[1])
                conn_pipe.send(("ok", None))
            elif msg[0] == "mli_pc":
                runners.set_mli_pc_weights(msg[1])
                conn_pipe.send(("ok", None))
            elif msg[0] == "state":
                conn_pipe.send(("ok", runners.steady_state()))
            elif msg[0] == "run":
                conn_pipe.send(("ok", runners.run_all(*msg[1:])))
        except BaseException:
            conn_pipe.send(("error", traceback.format_exc()))


def _merge(parts):
    counts = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    spikes = {k: sum((p[1][k] for p in parts), []) for k in parts[0][1]}
    return counts, spikes


class _WorkerPool:
    """``n`` processes, each holding one built network; requests go out and come back in order."""

    def __init__(self, n: int, init_args: tuple):
        ctx = mp.get_context("spawn")
        self.pipes, self.procs = [], []
        for k in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, init_args), daemon=True)
            proc.start()
            child.close()  # only the worker holds this end now: if it dies, recv() raises EOFError instead of hanging
            self.pipes.append(parent)
            self.procs.append(proc)
            if k == 0:  # the first worker compiles any new code; the others then load it from the cache
                self._reply(parent)
        for pipe in self.pipes[1:]:
            self._reply(pipe)

    def _reply(self, pipe):
        try:
            status, payload = pipe.recv()
        except EOFError:
            raise RuntimeError("a spiking-engine worker process died") from None
        if status == "error":
            raise RuntimeError(f"spiking-engine worker failed:\n{payload}")
        return payload

    def broadcast(self, msg):
        for pipe in self.pipes:
            pipe.send(msg)
        return [self._reply(pipe) for pipe in self.pipes]

    def map(self, msgs):
        used = self.pipes[:len(msgs)]
        for pipe, msg in zip(used, msgs):
            pipe.send(msg)
        return [self._reply(pipe) for pipe in used]

    def close(self):
        for pipe, proc in zip(self.pipes, self.procs):
            try:
                pipe.send(("stop",))
            except (OSError, BrokenPipeError):
                pass
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self.pipes, self.procs = [], []


class SpikingEngine:
    """Evaluate a trained spiking cerebellum on many inputs at once.

    Parameters
    ----------
    cfg, conn, weights : the network (``weights`` is ``(n_grc, n_pc)``); the presentation window and
        the simulation step are ``cfg.window_ms`` and ``cfg.dt_ms``.
    engine_cfg : the engine settings (:class:`EngineConfig`); the keyword arguments below override
        single fields of it (``None``: take it from ``engine_cfg``).
    batch_size : copies per simulated network.
    chunks_per_run : chunks of ``batch_size`` queries simulated back to back in one Brian2 run
        (amortises the per-run set-up).
    workers : processes; each builds its own network once (``1``: in this process).
    noise : ``"frozen"`` or ``"fresh"`` (default of :meth:`predict`).
    seed : the frozen-noise seed, and the seed of the fresh-noise seed sequence.
    record : populations whose spike trains are kept (for rasters), e.g. ``("grc", "pc")``.
    reference : simulate the reference build of the network (Brian2's own ``exponential_euler``
        and ``Synapses``; see :func:`~models.spiking.network.build_inference_net`): the fixed
        speed reference of ``cereb bench spiking``.
    backend : ``"kernel"`` (default of :class:`EngineConfig`): the compiled network of
        :mod:`models.spiking.kernel`, in this process with ``workers`` threads; ``"brian2"``: the
        batched Brian2 build in ``workers`` processes. The kernel records spike trains one query
        at a time (identical to the Brian2 build's); the reference build always runs on Brian2.
    """

    def __init__(self, cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, engine_cfg: EngineConfig | None = None,
                 *, seed: int = 0, record: tuple[str, ...] = (), batch_size: int | None = None,
                 chunks_per_run: int | None = None, workers: int | None = None, noise: str | None = None,
                 reference: bool = False, backend: str | None = None):
        e = engine_cfg or EngineConfig()
        batch_size = e.copies(cfg.width) if batch_size is None else batch_size
        chunks_per_run = e.chunks_per_run if chunks_per_run is None else chunks_per_run
        workers = e.workers if workers is None else workers
        noise = e.noise if noise is None else noise
        window_ms, dt_ms = cfg.window_ms, cfg.dt_ms
        if noise not in ("frozen", "fresh"):
            raise ValueError(f"noise must be 'frozen' or 'fresh', got {noise!r}")
        unknown = set(record) - set(POPULATIONS)
        if unknown:
            raise ValueError(f"cannot record {sorted(unknown)}; populations are {POPULATIONS}")
        if batch_size < 1 or chunks_per_run < 1 or workers < 1:
            raise ValueError("batch_size, chunks_per_run and workers must be >= 1")
        self.cfg, self.conn = cfg, conn
        self.window_ms, self.dt_ms = float(window_ms), float(dt_ms)
        self.batch_size, self.chunks_per_run, self.workers = int(batch_size), int(chunks_per_run), int(workers)
        self.noise, self.seed, self.record = noise, int(seed), tuple(record)
        self.reference = bool(reference)
        backend = e.backend if backend is None else backend
        if backend not in ("kernel", "brian2"):
            raise ValueError(f"backend must be 'kernel' or 'brian2', got {backend!r}")
        if backend == "kernel" and self.reference:
            backend = "brian2"  # the reference build is Brian2's
        if backend == "kernel":
            from models.spiking.kernel import available

            if not available():
                backend = "brian2"
        self.backend = backend
        self._kernel = None
        self._fresh_rng = np.random.default_rng([int(seed), 7])
        self.n_queries = 0
        self.n_calls = 0
        self._weights = np.array(weights, dtype=np.float64)
        self._local: _Runners | None = None
        self._pool: _WorkerPool | None = None

    @property
    def n_classes(self) -> int:
        return self.conn.n_classes

    @property
    def n_inputs(self) -> int:
        return self.conn.n_mf

    # -- lifecycle
    def _init_args(self):
        from dataclasses import asdict

        return (asdict(self.cfg), self.conn.to_arrays(), self._weights, self.batch_size, self.dt_ms, self.window_ms,
                self.chunks_per_run, self.record, self.seed, self.reference)

    def _ensure(self):
        if self.backend == "kernel":
            if self._kernel is None:
                from models.spiking.kernel import KernelNetwork

                self._kernel = KernelNetwork(self.cfg, self.conn, self._weights, self.dt_ms, self.window_ms,
                                             threads=self.workers)
                self._kernel.steady_state(self.seed)
            return
        if self.workers == 1 and self._local is None:
            self._local = _Runners(self.cfg, self.conn, self._weights, self.batch_size, self.dt_ms, self.window_ms,
                                   self.chunks_per_run, self.record, self.seed, self.reference)
        elif self.workers > 1 and self._pool is None:
            self._pool = _WorkerPool(self.workers, self._init_args())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
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
        w = np.array(weights, dtype=np.float64)
        if w.shape != (self.conn.n_grc, self.conn.n_pc):
            raise ValueError(f"weights must have shape {(self.conn.n_grc, self.conn.n_pc)}, got {w.shape}")
        self._weights = w
        if self._kernel is not None:
            self._kernel.set_weights(w)
            self._kernel.steady_state(self.seed)
        if self._local is not None:
            self._local.set_weights(w)
        if self._pool is not None:
            self._pool.broadcast(("weights", w))

    def set_mf_grc_weights(self, w_mv: np.ndarray) -> None:
        """Replace the MF-GrC EPSPs (mV, ``Connectivity.mf_grc_i`` order) without rebuilding (calibration)."""
        w = np.array(w_mv, dtype=np.float64)
        if w.shape != self.conn.mf_grc_w_mv.shape:
            raise ValueError(f"MF-GrC weights must have shape {self.conn.mf_grc_w_mv.shape}, got {w.shape}")
        from dataclasses import replace

        self.conn = replace(self.conn, mf_grc_w_mv=w)
        if self._kernel is not None:
            self._kernel.set_mf_grc_weights(w)
            self._kernel.steady_state(self.seed)
        if self._local is not None:
            self._local.set_mf_grc_weights(w)
        if self._pool is not None:
            self._pool.broadcast(("mf_grc", w))

    def set_mli_pc_weights(self, w: np.ndarray) -> None:
        """Replace the MLI-PC weights (``Connectivity.mli_pc_i`` order) without rebuilding."""
        self.conn = self.conn.with_mli_pc_weights(w)
        w = self.conn.mli_pc_w
        if self._kernel is not None:
            self._kernel.conn = self.conn
            self._kernel.set_mli_pc_weights(w)
            self._kernel.steady_state(self.seed)
        if self._local is not None:
            self._local.set_mli_pc_weights(w)
        if self._pool is not None:
            self._pool.broadcast(("mli_pc", w))

    def steady_state(self) -> dict:
        """The state every presentation starts from (one copy; volt): see :func:`models.spiking.network.steady_state`."""
        self._ensure()
        if self._kernel is not None:
            return self._kernel.steady_state(self.seed)
        if self._pool is None:
            return self._local.steady_state()
        return self._pool.map([("state",)])[0]

    # -- queries
    def rates_hz(self, x: np.ndarray) -> np.ndarray:
        """Mossy-fibre rates ``(n, n_mf)`` for inputs ``x`` in [0, 1]."""
        return self.cfg.mf_rates_hz(x)

    @property
    def n_steps(self) -> int:
        """Time steps of one presentation window (``window_ms / dt_ms``)."""
        return int(round(self.window_ms / self.dt_ms))

    def predict(self, x: np.ndarray, *, noise: str | None = None, slots: np.ndarray | None = None,
                seed: int | None = None, mf_edits: np.ndarray | None = None) -> Prediction:
        """Scores and spike counts for inputs ``x`` ``(n, n_inputs)`` in [0, 1].

        ``slots`` (default ``arange(n)``) pins each query's frozen noise: a query's output
        depends only on its input, its slot and the seed. ``seed`` overrides the noise seed of
        this call (``fresh`` mode draws a new one per call).

        ``mf_edits`` (optional, ``(n, n_steps, n_inputs)`` int8, kernel backend only): spikes
        delivered (+1) or fibres silenced (-1) at each step on top of the mossy fibres' Poisson
        draws (0), the spike-domain input of :mod:`attacks.spikes`; the rest of the noise is as
        without it.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"inputs must have shape (n, {self.n_inputs}), got {x.shape}")
        if not np.all(np.isfinite(x)) or x.min(initial=0) < 0 or x.max(initial=0) > 1:
            raise ValueError("inputs must be finite and lie in [0, 1]")
        return self._predict_rates(self.rates_hz(x), noise=noise, slots=slots, seed=seed, mf_edits=mf_edits)

    def predict_trains(self, trains: list, *, noise: str | None = None, slots: np.ndarray | None = None,
                       seed: int | None = None) -> Prediction:
        """Scores and spike counts when the mossy fibres fire exactly ``trains``: one ``(fibre, t_ms)``
        pair of arrays per query, or boolean rasters ``(n, n_steps, n_inputs)`` (a spike at ``t_ms`` in
        ``[0, window_ms)`` falls in the step ``floor(t_ms / dt_ms)``, several
        spikes of one fibre in one step count once). The rest of the network's noise follows ``noise``,
        ``slots`` and ``seed`` as in :meth:`predict`; with the trains :func:`models.spiking.noise.poisson_trains`
        draws for an input, the answer is :meth:`predict`'s for that input (kernel backend only)."""
        n, steps, n_mf = len(trains), self.n_steps, self.n_inputs
        if isinstance(trains, np.ndarray):  # spike rasters (n, n_steps, n_mf): True where a fibre spikes
            if trains.shape != (n, steps, n_mf):
                raise ValueError(f"spike rasters must have shape {(n, steps, n_mf)}, got {trains.shape}")
            return self._predict_rates(np.zeros((n, n_mf)), noise=noise, slots=slots, seed=seed,
                                       mf_edits=trains.astype(bool).astype(np.int8))
        edits = np.zeros((n, steps, n_mf), dtype=np.int8)
        for q, (fibre, t_ms) in enumerate(trains):
            fibre = np.asarray(fibre, dtype=np.int64)
            t = np.asarray(t_ms, dtype=np.float64)
            if fibre.shape != t.shape:
                raise ValueError(f"spike train {q}: fibre and t_ms must have one entry per spike")
            step = np.floor(t / self.dt_ms + 1e-6).astype(np.int64)  # the step that holds t (k * dt_ms lies in step k)
            bad = (fibre < 0) | (fibre >= n_mf) | ~(t >= 0) | ~(t < self.window_ms) | (step >= steps)
            if bad.any():
                k = int(np.argmax(bad))
                raise ValueError(f"spike train {q}: spike ({int(fibre[k])}, {float(np.asarray(t_ms)[k])} ms) lies "
                                 f"outside {n_mf} fibres x [0, {self.window_ms:g}) ms")
            edits[q, step, fibre] = 1
        return self._predict_rates(np.zeros((n, n_mf)), noise=noise, slots=slots, seed=seed, mf_edits=edits)

    def _predict_rates(self, rates: np.ndarray, *, noise, slots, seed, mf_edits) -> Prediction:
        n = len(rates)
        slots = np.arange(n) if slots is None else np.asarray(slots, dtype=np.int64)
        if slots.shape != (n,):
            raise ValueError(f"slots must have shape ({n},), got {slots.shape}")
        mode = noise or self.noise
        if mode not in ("frozen", "fresh"):
            raise ValueError(f"noise must be 'frozen' or 'fresh', got {mode!r}")
        if seed is None:
            seed = self.seed if mode == "frozen" else int(self._fresh_rng.integers(2**31))
        self.n_queries += n
        self.n_calls += 1
        if n == 0:
            return Prediction(np.zeros((0, self.n_classes)), {k: np.zeros((0, 0), int) for k in POPULATIONS[1:]})
        self._ensure()
        if mf_edits is not None and self._kernel is None:
            raise ValueError("spike-domain input (mossy-fibre edits or spike trains) needs the compiled kernel "
                             "(engine.backend=kernel and a C compiler)")
        if self._kernel is not None and self.record:
            counts, spikes = self._kernel.record(rates, slots, seed, self.record, edits=mf_edits)
        elif self._kernel is not None:
            counts, spikes = self._kernel.run(rates, slots, seed, edits=mf_edits)
        elif self._pool is None:
            counts, spikes = self._local.run_all(rates, slots, seed)
        else:
            pieces = [p for p in np.array_split(np.arange(n), self.workers) if len(p)]
            parts = self._pool.map([("run", rates[p], slots[p], seed) for p in pieces])
            counts, spikes = _merge(parts)
        scores = scores_from_counts(counts["pc"], self.n_classes, self.window_ms - self.cfg.readout_start_ms)
        return Prediction(scores=scores, counts=counts, spikes=spikes)
