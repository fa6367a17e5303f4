"""Training the spiking cerebellum inside the simulation, and its checkpoints.

Samples are presented one after another (``model.window_ms`` each); the inferior olive compares
each Purkinje cell's rate with its target and the climbing fibres drive PF-PC plasticity (see
:mod:`models.spiking.network`). Weight changes happen in Brian2 synaptic events, never in Python.

The training network runs as a compiled ``cpp_standalone`` program in a helper process (Brian2
allows one standalone device per process): it is built once and re-run each epoch with
``device.run(run_args=...)`` carrying the epoch's inputs, targets, noise seed and the current
weights. The learning curve is measured between epochs by the batched inference engine with
plasticity off.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shutil
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np

from core.errors import CheckpointError
from core.paths import cache_dir
from core.runs import load_npz, save_npz
from models.spiking.network import Connectivity, initial_weights, make_connectivity, pc_class
from models.spiking.params import EngineConfig, SpikingConfig, SpikingTrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cereb-spiking-v1"

__all__ = ["model_config", "train_config", "fit", "train_network", "save_checkpoint", "load_checkpoint",
           "SpikingModel", "load", "pc_targets"]


def model_config(kind: str = "spiking"):
    return SpikingConfig


def train_config(kind: str = "spiking"):
    return SpikingTrainConfig


def pc_targets(cfg: SpikingConfig, conn: Connectivity, y: np.ndarray) -> np.ndarray:
    """Target rate of every Purkinje cell for labels ``y``: shape ``(n, n_pc)`` in Hz."""
    on = pc_class(conn)[None, :] == np.asarray(y)[:, None]
    return np.where(on, cfg.target_hz_on, cfg.target_hz_off)


# ----------------------------------------------------------------------------- standalone trainer
class _quiet_fds:
    """Redirect this process's stdout and stderr file descriptors into a log file."""

    def __init__(self, log_path: Path):
        self.log_path = log_path

    def __enter__(self):
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.log_path, "ab")
        self.saved = [os.dup(1), os.dup(2)]
        os.dup2(self.fh.fileno(), 1)
        os.dup2(self.fh.fileno(), 2)
        return self

    def __exit__(self, *exc):
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        self.fh.close()
        if exc[0] is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            print(f"standalone build failed; end of {self.log_path}:\n{tail}", file=sys.stderr)
        return False


def _trainer_main(pipe, cfg_dict, conn_arrays, weights, n_samples, build_dir):
    """Helper process: build the training network as a standalone program, then run epochs."""
    try:
        from models.spiking.brian import get_brian2
        from models.spiking.network import build_training_net

        b2 = get_brian2()
        b2.set_device("cpp_standalone", directory=build_dir, build_on_run=False)
        b2.prefs.devices.cpp_standalone.openmp_threads = 0
        cfg = SpikingConfig(**cfg_dict)
        conn = Connectivity.from_arrays(conn_arrays)
        tnet = build_training_net(cfg, conn, weights, n_samples, cfg.window_ms, cfg.dt_ms)
        window = cfg.window_ms * b2.ms
        mf_input = b2.TimedArray(np.zeros((n_samples, conn.n_mf)) * b2.Hz, dt=window, name="mf_input")
        pc_target = b2.TimedArray(np.zeros((n_samples, conn.n_pc)) * b2.Hz, dt=window, name="pc_target")
        tnet.mf.namespace["mf_input"] = mf_input
        tnet.io.namespace["pc_target"] = pc_target
        tnet.net.run(n_samples * window)
        with _quiet_fds(Path(build_dir) / "build.log"):  # the compiler's output goes to a log, not the terminal
            b2.device.build(directory=build_dir, compile=True, run=False)
        pipe.send(("ready", None))
    except BaseException:
        pipe.send(("error", traceback.format_exc()))
        return
    first = True
    while True:
        msg = pipe.recv()
        if msg[0] == "stop":
            return
        try:
            _, rates, targets, seed, w, lr_scale = msg
            b2.device.run(run_args={mf_input: rates * b2.Hz, pc_target: targets * b2.Hz, tnet.pf_pc.w: w.ravel(),
                                    tnet.pf_pc.lr_scale: float(lr_scale), tnet.mf.noise_seed: int(seed),
                                    tnet.io.noise_seed: int(seed)})
            if first:  # the synapse order must be GrC-major as created
                i, j = np.asarray(tnet.pf_pc.i[:]), np.asarray(tnet.pf_pc.j[:])
                if not (np.array_equal(i, np.repeat(np.arange(conn.n_grc), conn.n_pc))
                        and np.array_equal(j, np.tile(np.arange(conn.n_pc), conn.n_grc))):
                    raise RuntimeError("unexpected PF-PC synapse order in the standalone build")
                first = False
            w_new = np.asarray(tnet.pf_pc.w_[:]).reshape(conn.n_grc, conn.n_pc)
            si = np.asarray(tnet.pc_spikes.i[:])
            st = np.asarray(tnet.pc_spikes.t_[:])
            sample = np.minimum((st / (cfg.window_ms * 1e-3)).astype(np.int64), n_samples - 1)
            late = (st - sample * cfg.window_ms * 1e-3) >= cfg.readout_start_ms * 1e-3  # readout period only
            pc_counts = np.zeros((n_samples, conn.n_pc), dtype=np.int32)
            np.add.at(pc_counts, (sample[late], si[late]), 1)
            grc_total = int(np.asarray(tnet.grc_count.count[:]).sum())
            pipe.send(("ok", (w_new, pc_counts, grc_total)))
        except BaseException:
            pipe.send(("error", traceback.format_exc()))


class _Trainer:
    """Owns the helper process that runs the standalone training program."""

    def __init__(self, cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, n_samples: int):
        self.tmp = Path(tempfile.mkdtemp(prefix="train-", dir=cache_dir("standalone")))
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_trainer_main, args=(child, asdict(cfg), conn.to_arrays(), weights, n_samples,
                                                              str(self.tmp)), daemon=True)
        self.proc.start()
        child.close()  # only the helper holds this end now: if it dies, recv() raises EOFError instead of hanging
        self._reply()

    def _reply(self):
        try:
            status, payload = self.pipe.recv()
        except EOFError:
            raise RuntimeError("the training process died (see the log above)") from None
        if status == "error":
            raise RuntimeError(f"training process failed:\n{payload}")
        return payload

    def epoch(self, rates, targets, seed, w, lr_scale=1.0):
        self.pipe.send(("epoch", rates, targets, seed, w, lr_scale))
        return self._reply()

    def close(self):
        try:
            self.pipe.send(("stop",))
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- training loop
def train_network(x: np.ndarray, y: np.ndarray, cfg: SpikingConfig, tcfg: SpikingTrainConfig, seed: int, *,
                  n_classes: int, x_eval: np.ndarray | None = None, y_eval: np.ndarray | None = None,
                  engine_cfg: EngineConfig | None = None, progress: bool = False):
    """Train the PF-PC weights of a new network in the simulation.

    Parameters
    ----------
    x : ``(n, n_inputs)`` inputs in [0, 1]; y : ``(n,)`` labels.
    x_eval, y_eval : held-out data for the learning curve (plasticity off, frozen noise).

    Returns
    -------
    conn, weights, curve : the connectivity, the trained weights ``(n_grc, n_pc)`` and one dict
    per epoch (``epoch``, ``train_accuracy_online``, ``eval_accuracy``, weight statistics,
    ``grc_rate_hz``, ``wall_s``).
    """
    from models.spiking.engine import SpikingEngine, scores_from_counts

    engine_cfg = engine_cfg or EngineConfig()
    conn = make_connectivity(cfg, x.shape[1], n_classes, seed)
    w = initial_weights(cfg, conn, seed)
    rng = np.random.default_rng([seed, 3])
    n = len(x)
    curve = []
    trainer = _Trainer(cfg, conn, w, n) if tcfg.epochs > 0 else None
    engine = None
    if x_eval is not None and tcfg.epochs > 0:
        engine = SpikingEngine(cfg, conn, w, window_ms=cfg.window_ms, dt_ms=cfg.dt_ms,
                               batch_size=engine_cfg.copies(cfg.width), chunks_per_run=engine_cfg.chunks_per_run,
                               workers=engine_cfg.workers, seed=seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tcfg.epochs, desc="training epochs", unit="epoch")
    try:
        for epoch in range(1, tcfg.epochs + 1):
            t0 = time.time()
            order = rng.permutation(n) if tcfg.shuffle else np.arange(n)
            rates = cfg.mf_rate_min_hz + x[order].astype(np.float64) * (cfg.mf_rate_max_hz - cfg.mf_rate_min_hz)
            targets = pc_targets(cfg, conn, y[order])
            lr_scale = tcfg.lr_decay ** (epoch - 1)
            w, pc_counts, grc_total = trainer.epoch(rates, targets, seed * 100003 + epoch, w, lr_scale)
            online = scores_from_counts(pc_counts, n_classes, cfg.window_ms - cfg.readout_start_ms).argmax(1) == y[order]
            row = {
                "epoch": epoch,
                "lr_scale": lr_scale,
                "train_accuracy_online": float(online.mean()),
                "eval_accuracy": float("nan"),
                "w_mean": float(w.mean()),
                "w_frac_zero": float((w <= 0).mean()),
                "w_frac_max": float((w >= cfg.w_max).mean()),
                "grc_rate_hz": grc_total / (conn.n_grc * n * cfg.window_ms * 1e-3),
                "train_s": time.time() - t0,
            }
            if engine is not None and (epoch % tcfg.eval_every == 0 or epoch == tcfg.epochs):
                engine.set_weights(w)
                xe = x_eval if tcfg.n_eval is None else x_eval[:tcfg.n_eval]
                ye = y_eval if tcfg.n_eval is None else y_eval[:tcfg.n_eval]
                row["eval_accuracy"] = float((engine.predict(xe).labels == ye).mean())
            row["wall_s"] = time.time() - t0
            curve.append(row)
            log.info("epoch %d: online train acc %.3f, eval acc %.3f, %.1f s", epoch, row["train_accuracy_online"],
                     row["eval_accuracy"], row["wall_s"])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train=f"{row['train_accuracy_online']:.3f}", test=f"{row['eval_accuracy']:.3f}")
    finally:
        if bar is not None:
            bar.close()
        if trainer is not None:
            trainer.close()
        if engine is not None:
            engine.close()
    return conn, w, curve


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, seed: int, extra: dict | None = None):
    """Write a ``.npz`` checkpoint (no pickle) from which the identical network is rebuilt."""
    save_npz(path, format=np.array(CHECKPOINT_FORMAT), config=np.array(json.dumps(asdict(cfg), sort_keys=True)),
             seed=np.int64(seed), weights=np.asarray(weights, dtype=np.float64),
             extra=np.array(json.dumps(extra or {}, sort_keys=True)), **conn.to_arrays())


def load_checkpoint(path) -> tuple[SpikingConfig, Connectivity, np.ndarray, int, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`; problems raise :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = load_npz(path)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable .npz checkpoint ({exc})") from None
    if str(data.get("format", "")) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a spiking-cerebellum checkpoint (format {data.get('format')!r})")
    try:
        cfg = SpikingConfig(**json.loads(str(data["config"])))
        conn = Connectivity.from_arrays(data)
        weights = np.asarray(data["weights"], dtype=np.float64)
        seed = int(data["seed"])
        extra = json.loads(str(data["extra"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is incomplete or inconsistent: {exc}") from None
    if weights.shape != (conn.n_grc, conn.n_pc):
        raise CheckpointError(f"{path}: weights have shape {weights.shape}, the connectivity needs {(conn.n_grc, conn.n_pc)}")
    if conn.n_grc != cfg.width or conn.n_pc != cfg.pc_per_class * conn.n_classes:
        raise CheckpointError(f"{path}: connectivity does not match its configuration (width {cfg.width}, k {cfg.k})")
    fan_in = conn.fan_in_grc()
    if not np.all(fan_in == min(cfg.k, conn.n_mf)):
        raise CheckpointError(f"{path}: granule fan-in is not k={cfg.k} everywhere (corrupt connectivity)")
    for name in ("mf_grc_i", "mf_goc_i"):
        if getattr(conn, name).size and getattr(conn, name).max() >= conn.n_mf:
            raise CheckpointError(f"{path}: {name} refers to mossy fibre beyond {conn.n_mf}")
    return cfg, conn, weights, seed, extra


class SpikingModel:
    """A trained spiking network from a run folder, with its batched engine.

    ``predict(x)`` returns class scores ``(n, n_classes)``; ``engine`` is the
    :class:`~models.spiking.engine.SpikingEngine` for counts, noise modes and slots.
    """

    def __init__(self, cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, seed: int,
                 engine_cfg: EngineConfig | None = None, record: tuple[str, ...] = ()):
        from models.spiking.engine import SpikingEngine

        e = engine_cfg or EngineConfig()
        self.cfg, self.conn, self.weights, self.seed = cfg, conn, weights, seed
        self.engine = SpikingEngine(cfg, conn, weights, window_ms=cfg.window_ms, dt_ms=cfg.dt_ms, batch_size=e.copies(cfg.width),
                                    chunks_per_run=e.chunks_per_run, workers=e.workers, noise=e.noise, seed=seed,
                                    record=record)

    @property
    def n_classes(self) -> int:
        return self.conn.n_classes

    def predict(self, x: np.ndarray, **kw) -> np.ndarray:
        return self.engine.predict(x, **kw).scores

    def close(self):
        self.engine.close()


def load(run_path, engine_cfg: EngineConfig | None = None, record: tuple[str, ...] = ()) -> SpikingModel:
    """Rebuild the trained network of a run folder (``checkpoint.npz``)."""
    cfg, conn, weights, seed, _ = load_checkpoint(Path(run_path) / "checkpoint.npz")
    return SpikingModel(cfg, conn, weights, seed, engine_cfg, record)


# ----------------------------------------------------------------------------- registry entry
def fit(kind, ds, cfg: SpikingConfig, tcfg: SpikingTrainConfig, seed: int, run, progress: bool = False) -> dict:
    """Train on ``ds``, evaluate, and write ``checkpoint.npz`` and ``learning_curve.csv`` into ``run``."""
    from models.spiking.engine import SpikingEngine

    t0 = time.time()
    conn, w, curve = train_network(ds.x_train, ds.y_train, cfg, tcfg, seed, n_classes=ds.n_classes,
                                   x_eval=ds.x_test, y_eval=ds.y_test, progress=progress)
    train_s = time.time() - t0
    save_checkpoint(run.path / "checkpoint.npz", cfg, conn, w, seed, {"task": ds.name, "n_inputs": ds.n_inputs})
    run.write_csv("learning_curve.csv", curve)
    e = EngineConfig()
    with SpikingEngine(cfg, conn, w, window_ms=cfg.window_ms, dt_ms=cfg.dt_ms, batch_size=e.copies(cfg.width),
                       chunks_per_run=e.chunks_per_run, workers=e.workers, seed=seed) as engine:
        te = engine.predict(ds.x_test)
        tr = engine.predict(ds.x_train, slots=np.arange(len(ds.x_train)) + len(ds.x_test))
        blank = engine.predict(np.zeros((1, ds.n_inputs)))
        engine.set_weights(np.full_like(w, cfg.w_mli))
        intrinsic = engine.predict(np.zeros((1, ds.n_inputs)))
    readout_ms = cfg.window_ms - cfg.readout_start_ms
    metrics = {
        "train_accuracy": float((tr.labels == ds.y_train).mean()),
        "test_accuracy": float((te.labels == ds.y_test).mean()),
        "grc_coding_level": float((te.counts["grc"] > 0).mean()),
        "grc_rate_hz": float(te.counts["grc"].mean() * 1000 / cfg.window_ms),
        "goc_rate_hz": float(te.counts["goc"].mean() * 1000 / cfg.window_ms),
        "pc_rate_hz": float(te.counts["pc"].mean() * 1000 / readout_ms),
        "pc_rate_blank_input_hz": float(blank.counts["pc"].mean() * 1000 / readout_ms),
        "pc_spontaneous_rate_hz": float(intrinsic.counts["pc"].mean() * 1000 / readout_ms),
        "epochs": tcfg.epochs,
        "train_s": train_s,
        "epoch_s_mean": float(np.mean([r["train_s"] for r in curve])) if curve else 0.0,
    }
    return metrics
