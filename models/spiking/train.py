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
from models.spiking.network import STATE_VARS, Connectivity, initial_weights, make_connectivity, pc_class
from models.spiking.params import CHECKPOINT_FORMAT, EngineConfig, SpikingConfig, SpikingTrainConfig

log = logging.getLogger(__name__)

OLD_FORMATS = ("cereb-spiking-v1", "cereb-spiking-v2")

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
            _, rates, targets, seed, w, w_inh, lr_scale, start = msg
            run_args = {mf_input: rates * b2.Hz, pc_target: targets * b2.Hz, tnet.pf_pc.w: w.ravel(),
                        tnet.pf_pc.lr_scale: float(lr_scale), tnet.mli_pc.w_inh: np.asarray(w_inh, dtype=np.float64),
                        tnet.mli_pc.lr_scale_inh: float(lr_scale), tnet.mf.noise_seed: int(seed),
                        tnet.io.noise_seed: int(seed)}
            for pop, names in STATE_VARS.items():
                for var in names:
                    view = getattr(tnet.groups[pop], f"{var}_init")
                    run_args[view] = np.asarray(start[pop][var], dtype=np.float64) * (b2.volt if var in ("v", "a") else 1)
            b2.device.run(run_args=run_args)
            if first:  # the synapse order must be GrC-major as created
                i, j = np.asarray(tnet.pf_pc.i[:]), np.asarray(tnet.pf_pc.j[:])
                if not (np.array_equal(i, np.repeat(np.arange(conn.n_grc), conn.n_pc))
                        and np.array_equal(j, np.tile(np.arange(conn.n_pc), conn.n_grc))):
                    raise RuntimeError("unexpected PF-PC synapse order in the standalone build")
                if not (np.array_equal(np.asarray(tnet.mli_pc.i[:]), conn.mli_pc_i)
                        and np.array_equal(np.asarray(tnet.mli_pc.j[:]), conn.mli_pc_j)):
                    raise RuntimeError("unexpected MLI-PC synapse order in the standalone build")
                first = False
            w_new = np.asarray(tnet.pf_pc.w_[:]).reshape(conn.n_grc, conn.n_pc)
            w_inh_new = np.array(tnet.mli_pc.w_inh_[:], dtype=np.float64)
            si = np.asarray(tnet.pc_spikes.i[:])
            st = np.asarray(tnet.pc_spikes.t_[:])
            sample = np.minimum((st / (cfg.window_ms * 1e-3)).astype(np.int64), n_samples - 1)
            late = (st - sample * cfg.window_ms * 1e-3) >= cfg.readout_start_ms * 1e-3  # readout period only
            pc_counts = np.zeros((n_samples, conn.n_pc), dtype=np.int32)
            np.add.at(pc_counts, (sample[late], si[late]), 1)
            grc_total = int(np.asarray(tnet.grc_count.count[:]).sum())
            cf_counts = np.asarray(tnet.io_count.count[:], dtype=np.int64)
            pipe.send(("ok", (w_new, w_inh_new, pc_counts, grc_total, cf_counts)))
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

    def epoch(self, rates, targets, seed, w, w_inh, lr_scale, start):
        self.pipe.send(("epoch", rates, targets, seed, w, w_inh, lr_scale, start))
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


# ----------------------------------------------------------------------------- calibration
def coding_level(grc_counts: np.ndarray) -> float:
    """Fraction of (granule cell, presentation) pairs with at least one spike in the window."""
    return float((np.asarray(grc_counts) > 0).mean()) if np.size(grc_counts) else float("nan")


def calibrate_coding_level(engine, conn: Connectivity, x: np.ndarray, target: float, *, iters: int = 12,
                           tol: float = 0.004) -> tuple[Connectivity, dict]:
    """Scale every MF-GrC EPSP by one factor so that the evoked coding level on inputs ``x`` is
    ``target`` (bisection in log scale; the coding level rises with the scale).

    The whole network is simulated (Golgi feedback included), from its steady state, with frozen
    noise. Returns the calibrated connectivity and ``{grc_scale, w_mf_grc_mean_mv, coding_level,
    coding_level_target, calibration_n}``; the engine is left at the calibrated weights.
    """
    base = np.asarray(conn.mf_grc_w_mv, dtype=np.float64)

    def level(scale: float) -> float:
        engine.set_mf_grc_weights(base * scale)
        return coding_level(engine.predict(x).counts["grc"])

    lo, hi = 0.25, 4.0
    f_lo, f_hi = level(lo), level(hi)
    while f_lo > target and lo > 1e-3:
        lo, hi, f_hi = lo / 4, lo, f_lo
        f_lo = level(lo)
    while f_hi < target and hi < 1e3:
        lo, f_lo, hi = hi, f_hi, hi * 4
        f_hi = level(hi)
    best = min(((lo, f_lo), (hi, f_hi)), key=lambda p: abs(p[1] - target))
    for _ in range(iters):
        if abs(best[1] - target) <= tol:
            break
        mid = float(np.sqrt(lo * hi))
        f = level(mid)
        if abs(f - target) < abs(best[1] - target):
            best = (mid, f)
        lo, hi = (mid, hi) if f < target else (lo, mid)
    scale, achieved = best
    engine.set_mf_grc_weights(base * scale)
    info = {"grc_scale": float(scale), "w_mf_grc_mean_mv": float((base * scale).mean()), "coding_level": float(achieved),
            "coding_level_target": float(target), "calibration_n": int(len(x))}
    log.info("coding level calibrated: scale %.4g, %.4f (target %.3f)", scale, achieved, target)
    return conn.with_mf_grc_scale(scale), info


# ----------------------------------------------------------------------------- training loop
def train_network(x: np.ndarray, y: np.ndarray, cfg: SpikingConfig, tcfg: SpikingTrainConfig, seed: int, *,
                  n_classes: int, x_eval: np.ndarray | None = None, y_eval: np.ndarray | None = None,
                  engine_cfg: EngineConfig | None = None, progress: bool = False):
    """Calibrate the granule layer, then train the PF-PC weights of a new network in the simulation.

    Parameters
    ----------
    x : ``(n, n_inputs)`` inputs in [0, 1]; y : ``(n,)`` labels.
    x_eval, y_eval : held-out data for the learning curve (plasticity off, frozen noise).

    Returns
    -------
    conn, weights, curve, calibration : the (calibrated) connectivity, the trained weights
    ``(n_grc, n_pc)``, one dict per epoch (``epoch``, ``train_accuracy_online``, ``eval_accuracy``,
    weight statistics, ``grc_rate_hz``, ``cf_rate_hz``, ``cf_rate_max_hz``, ``wall_s``) and the
    calibration record (:func:`calibrate_coding_level`; ``{}`` without calibration).
    """
    from models.spiking.engine import SpikingEngine, scores_from_counts

    engine_cfg = engine_cfg or EngineConfig()
    conn = make_connectivity(cfg, x.shape[1], n_classes, seed)
    w = initial_weights(cfg, conn, seed)
    rng = np.random.default_rng([seed, 3])
    n = len(x)
    curve = []
    engine = SpikingEngine(cfg, conn, w, engine_cfg, seed=seed, noise="frozen")
    trainer = None
    bar = None
    try:
        calibration = {}
        if cfg.grc_coding_level is not None:
            n_cal = min(tcfg.n_calibration, n)
            conn, calibration = calibrate_coding_level(engine, conn, x[:n_cal], cfg.grc_coding_level)
        if tcfg.epochs > 0:
            trainer = _Trainer(cfg, conn, w, n)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=tcfg.epochs, desc="training epochs", unit="epoch")
        for epoch in range(1, tcfg.epochs + 1):
            t0 = time.time()
            order = rng.permutation(n) if tcfg.shuffle else np.arange(n)
            rates = cfg.mf_rates_hz(x[order])
            targets = pc_targets(cfg, conn, y[order])
            lr_scale = tcfg.lr_decay ** (epoch - 1)
            engine.set_weights(w)
            engine.set_mli_pc_weights(conn.mli_pc_w)
            start = engine.steady_state()
            w, w_inh, pc_counts, grc_total, cf_counts = trainer.epoch(rates, targets, seed * 100003 + epoch, w,
                                                                      conn.mli_pc_w, lr_scale, start)
            conn = conn.with_mli_pc_weights(w_inh)
            online = scores_from_counts(pc_counts, n_classes, cfg.window_ms - cfg.readout_start_ms).argmax(1) == y[order]
            epoch_s = n * cfg.window_ms * 1e-3
            row = {
                "epoch": epoch,
                "lr_scale": lr_scale,
                "train_accuracy_online": float(online.mean()),
                "eval_accuracy": float("nan"),
                "w_mean": float(w.mean()),
                "w_frac_zero": float((w <= 0).mean()),
                "w_frac_max": float((w >= cfg.w_max).mean()),
                "w_inh_mean": float(w_inh.mean()),
                "grc_rate_hz": grc_total / (conn.n_grc * epoch_s),
                "cf_rate_hz": float(cf_counts.mean() / epoch_s),
                "cf_rate_max_hz": float(cf_counts.max() / epoch_s) if cf_counts.size else 0.0,
                "train_s": time.time() - t0,
            }
            if x_eval is not None and (epoch % tcfg.eval_every == 0 or epoch == tcfg.epochs):
                engine.set_weights(w)
                engine.set_mli_pc_weights(conn.mli_pc_w)
                xe = x_eval if tcfg.n_eval is None else x_eval[:tcfg.n_eval]
                ye = y_eval if tcfg.n_eval is None else y_eval[:tcfg.n_eval]
                row["eval_accuracy"] = float((engine.predict(xe).labels == ye).mean())
            row["wall_s"] = time.time() - t0
            curve.append(row)
            log.info("epoch %d: online train acc %.3f, eval acc %.3f, CF %.2f Hz, %.1f s", epoch,
                     row["train_accuracy_online"], row["eval_accuracy"], row["cf_rate_hz"], row["wall_s"])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train=f"{row['train_accuracy_online']:.3f}", test=f"{row['eval_accuracy']:.3f}")
    finally:
        if bar is not None:
            bar.close()
        if trainer is not None:
            trainer.close()
        engine.close()
    return conn, w, curve, calibration


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, seed: int, extra: dict | None = None,
                    calibration: dict | None = None):
    """Write a ``.npz`` checkpoint (no pickle) from which the identical network is rebuilt: the
    configuration, the wiring with the calibrated MF-GrC EPSPs, the weights and the calibration record."""
    save_npz(path, format=np.array(CHECKPOINT_FORMAT), config=np.array(json.dumps(asdict(cfg), sort_keys=True)),
             seed=np.int64(seed), weights=np.asarray(weights, dtype=np.float64),
             extra=np.array(json.dumps(extra or {}, sort_keys=True)),
             calibration=np.array(json.dumps(calibration or {}, sort_keys=True)), **conn.to_arrays())


def load_checkpoint(path, with_calibration: bool = False):
    """Read a checkpoint written by :func:`save_checkpoint`; problems raise :class:`CheckpointError`.

    Returns ``(cfg, conn, weights, seed, extra)`` (and the calibration record when
    ``with_calibration``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = load_npz(path)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable .npz checkpoint ({exc})") from None
    fmt = str(data.get("format", ""))
    if fmt in OLD_FORMATS:
        raise CheckpointError(f"{path} was written by an earlier version of the spiking network (format {fmt}); "
                              f"retrain it with this version (format {CHECKPOINT_FORMAT})")
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a spiking-cerebellum checkpoint (format {data.get('format')!r})")
    try:
        cfg = SpikingConfig(**json.loads(str(data["config"])))
        conn = Connectivity.from_arrays(data)
        weights = np.asarray(data["weights"], dtype=np.float64)
        seed = int(data["seed"])
        extra = json.loads(str(data["extra"]))
        calibration = json.loads(str(data["calibration"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is incomplete or inconsistent: {exc}") from None
    if weights.shape != (conn.n_grc, conn.n_pc):
        raise CheckpointError(f"{path}: weights have shape {weights.shape}, the connectivity needs {(conn.n_grc, conn.n_pc)}")
    if conn.n_grc != cfg.width or conn.n_pc != cfg.pc_per_class * conn.n_classes or conn.n_mli != cfg.n_mli(conn.n_pc):
        raise CheckpointError(f"{path}: connectivity does not match its configuration (width {cfg.width}, k {cfg.k})")
    fan_in = conn.fan_in_grc()
    if not np.all(fan_in == min(cfg.k, conn.n_mf)) or conn.mf_grc_w_mv.shape != conn.mf_grc_i.shape:
        raise CheckpointError(f"{path}: granule fan-in is not k={cfg.k} everywhere (corrupt connectivity)")
    if conn.pc_drive_mv.shape != (conn.n_pc,):
        raise CheckpointError(f"{path}: Purkinje drives do not match the {conn.n_pc} Purkinje cells")
    w_inh = conn.mli_pc_w
    if w_inh.shape != conn.mli_pc_i.shape or not np.all((w_inh >= 0) & (w_inh <= cfg.w_inh_max)):
        raise CheckpointError(f"{path}: MLI-PC weights do not match the MLI-PC synapses or lie outside "
                              f"[0, {cfg.w_inh_max}]")
    for name, n in (("mf_grc_i", conn.n_mf), ("mf_goc_i", conn.n_mf), ("grc_mli_i", conn.n_grc), ("mli_pc_i", conn.n_mli)):
        if getattr(conn, name).size and getattr(conn, name).max() >= n:
            raise CheckpointError(f"{path}: {name} refers to a cell beyond {n}")
    if with_calibration:
        return cfg, conn, weights, seed, extra, calibration
    return cfg, conn, weights, seed, extra


class SpikingModel:
    """A trained spiking network from a run folder, with its batched engine.

    ``predict(x)`` returns class scores ``(n, n_classes)``; ``engine`` is the
    :class:`~models.spiking.engine.SpikingEngine` for counts, noise modes and slots.
    """

    def __init__(self, cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, seed: int,
                 engine_cfg: EngineConfig | None = None, record: tuple[str, ...] = ()):
        from models.spiking.engine import SpikingEngine

        self.cfg, self.conn, self.weights, self.seed = cfg, conn, weights, seed
        self.engine = SpikingEngine(cfg, conn, weights, engine_cfg, seed=seed, record=record)

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
def ridge_ceiling(train_counts: np.ndarray, y_train: np.ndarray, test_counts: np.ndarray, y_test: np.ndarray) -> dict:
    """Test accuracy of an offline ridge readout of granule spike counts: the ceiling of any
    PF-PC learning rule on this granule layer (regularisation by leave-one-out cross-validation
    on the training set, scikit-learn's ``RidgeClassifierCV``)."""
    from sklearn.linear_model import RidgeClassifierCV

    clf = RidgeClassifierCV(alphas=np.logspace(-2, 5, 15)).fit(train_counts, y_train)
    return {"ridge_test_accuracy": float(clf.score(test_counts, y_test)), "ridge_alpha": float(clf.alpha_)}


def weight_stats(w: np.ndarray, cfg: SpikingConfig) -> tuple[dict, list[dict]]:
    """What plasticity did to the PF-PC synapses: summary metrics and a histogram (cf. Brunel et
    al. 2004, Neuron 43:745: learning by LTD leaves many synapses silent)."""
    w = np.asarray(w, dtype=np.float64)
    edges = np.linspace(0.0, cfg.w_max, 21)
    counts, _ = np.histogram(w, bins=edges)
    hist = [{"w_low": float(a), "w_high": float(b), "n": int(c), "fraction": float(c / w.size)}
            for a, b, c in zip(edges[:-1], edges[1:], counts)]
    metrics = {"w_mean": float(w.mean()), "w_median": float(np.median(w)),
               "w_frac_silent": float((w <= 0.01 * cfg.w_max).mean()), "w_frac_max": float((w >= cfg.w_max).mean()),
               "w_sd": float(w.std())}
    return metrics, hist


def fit(kind, ds, cfg: SpikingConfig, tcfg: SpikingTrainConfig, seed: int, run, progress: bool = False) -> dict:
    """Train on ``ds``, evaluate, and write ``checkpoint.npz``, ``learning_curve.csv``,
    ``biology.csv`` (:mod:`models.spiking.biology`) and ``weights.csv`` into ``run``."""
    from models.spiking import biology
    from models.spiking.engine import SpikingEngine

    t0 = time.time()
    conn, w, curve, calibration = train_network(ds.x_train, ds.y_train, cfg, tcfg, seed, n_classes=ds.n_classes,
                                                x_eval=ds.x_test, y_eval=ds.y_test, progress=progress)
    train_s = time.time() - t0
    save_checkpoint(run.path / "checkpoint.npz", cfg, conn, w, seed, {"task": ds.name, "n_inputs": ds.n_inputs},
                    calibration)
    run.write_csv("learning_curve.csv", curve)
    with SpikingEngine(cfg, conn, w, EngineConfig(), seed=seed) as engine:
        te = engine.predict(ds.x_test)
        tr = engine.predict(ds.x_train, slots=np.arange(len(ds.x_train)) + len(ds.x_test))
        bio = biology.measure(cfg, conn, w, engine, ds.x_test, ds.y_test, te.counts, curve, seed)
    run.write_csv("biology.csv", bio)
    w_metrics, hist = weight_stats(w, cfg)
    run.write_csv("weights.csv", hist)
    ridge = ridge_ceiling(tr.counts["grc"], ds.y_train, te.counts["grc"], ds.y_test)
    readout_ms = cfg.window_ms - cfg.readout_start_ms
    by = {(r["population"], r["condition"]): r for r in bio}
    metrics = {
        "train_accuracy": float((tr.labels == ds.y_train).mean()),
        "test_accuracy": float((te.labels == ds.y_test).mean()),
        **ridge,
        "biology_ok": biology.rows_ok(bio),
        "grc_coding_level": coding_level(te.counts["grc"]),
        "grc_coding_level_target": cfg.grc_coding_level,
        "grc_scale": calibration.get("grc_scale", 1.0),
        "w_mf_grc_mean_mv": float(np.mean(conn.mf_grc_w_mv)),
        "grc_rate_hz": float(te.counts["grc"].mean() * 1000 / cfg.window_ms),
        "goc_rate_hz": float(te.counts["goc"].mean() * 1000 / cfg.window_ms),
        "mli_rate_hz": float(te.counts["mli"].mean() * 1000 / cfg.window_ms),
        "pc_rate_hz": float(te.counts["pc"].mean() * 1000 / readout_ms),
        "pc_spontaneous_rate_hz": by[("pc", "spontaneous")]["rate_hz"],
        "pc_synchrony_chi": by[("pc", "evoked")]["synchrony_chi"],
        "cf_rate_hz": by[("cf", "training")]["rate_hz"],
        "cf_rate_max_hz": by[("cf", "training")]["max_rate_hz"],
        **w_metrics,
        "w_inh_mean": float(np.mean(conn.mli_pc_w)),
        "w_inh_frac_max": float(np.mean(conn.mli_pc_w >= cfg.w_inh_max)),
        "epochs": tcfg.epochs,
        "train_s": train_s,
        "epoch_s_mean": float(np.mean([r["train_s"] for r in curve])) if curve else 0.0,
    }
    return metrics
